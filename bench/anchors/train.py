"""PyTorch training steps of the reference models for `flowrl bench train --compare`.

Two models, written here in plain PyTorch from the reference code's math:

- softmax: the Decision Transformer of kzl/decision-transformer (GPT-2 blocks without
  position embeddings: pre-LayerNorm, Conv1D-style `c_attn` (3 x width) and `c_proj`,
  causal softmax attention in GPT-2's eager form (scores, causal fill with -1e4, the
  additive padding mask, softmax, dropout on the probabilities), MLP 4 x width with ReLU,
  dropout 0.1 on the attention probabilities, both residual branches and the embeddings.
- flow: the reference Decision-Flowformer (thuml/Flowformer, Flowformer_RL): the same
  model with each attention replaced by causal Flow-Attention (separate q, k, v and output
  projections, dropout 0.1 on its output), computed as the reference does, with the
  (N, H, L, D, M) cumulative sums materialised (torch_common.causal_flow_attention).

Both: learned timestep embedding added to the return, state and action embeddings, the
interleaved tokens through `embed_ln`, a final LayerNorm, `predict_action` Linear + Tanh
on the state tokens (and the reference's unused `predict_state` and `predict_return`
heads, computed as it does), mean squared error on the actions of the unmasked steps.
The GPT-2 token and position tables the reference never reads are left out.

One training step: forward and loss; zero_grad and backward; clip_grad_norm 0.25 and
AdamW (lr 1e-4, weight decay 1e-4). f32 on the CPU, 2 threads. A random full batch: states
in [-2, 2], actions in [-1, 1], returns-to-go in [0, 5], consecutive timesteps from a
random start.

Each model runs in a fresh Python process. Prints one JSON object per model and line:
{"model", "steps": [{"forward", "backward", "update", "cpu"} seconds per timed step],
"peak_bytes"}, or {"model", "error"} when its process failed. peak_bytes is the
process's peak resident size (ru_maxrss) less its resident size after one step of a tiny
model of the same kind (so that PyTorch's library code and one-time allocations are not
counted): parameters, AdamW moments, the batch, activations, gradients and whatever
PyTorch's allocator kept.
"""

import argparse
import gc
import json
import math
import sys
import time

from torch_common import causal_flow_attention, peak_resident_bytes, resident_bytes, run_isolated


def build_model(args, model):
    """The reference model `model` ("softmax" or "flow") at the sizes of `args`."""
    import torch
    from torch import nn

    width, heads, tokens, drop = args.width, args.heads, 3 * args.context, args.dropout

    class Conv1D(nn.Module):
        """GPT-2's dense layer: weight stored (in, out), applied as bias + x @ weight."""

        def __init__(self, n_in, n_out):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
            self.bias = nn.Parameter(torch.zeros(n_out))

        def forward(self, x):
            flat = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
            return flat.view(x.shape[:-1] + (self.weight.shape[1],))

    class SoftmaxAttention(nn.Module):
        """GPT-2's eager causal self-attention."""

        def __init__(self):
            super().__init__()
            self.c_attn = Conv1D(width, 3 * width)
            self.c_proj = Conv1D(width, width)
            self.attn_dropout = nn.Dropout(drop)
            self.resid_dropout = nn.Dropout(drop)
            self.register_buffer("causal", torch.tril(torch.ones(tokens, tokens, dtype=torch.bool)))

        def forward(self, x, padding):
            n, length, _ = x.shape
            q, k, v = self.c_attn(x).split(width, dim=2)
            q = q.view(n, length, heads, -1).permute(0, 2, 1, 3)
            k = k.view(n, length, heads, -1).permute(0, 2, 3, 1)
            v = v.view(n, length, heads, -1).permute(0, 2, 1, 3)
            scores = torch.matmul(q, k) / math.sqrt(v.shape[-1])
            scores = torch.where(self.causal[:length, :length], scores, torch.tensor(-1e4))
            probs = self.attn_dropout(torch.softmax(scores + padding, dim=-1))
            out = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(n, length, width)
            return self.resid_dropout(self.c_proj(out))

    class FlowAttention(nn.Module):
        """The reference's causal Flow-Attention layer (it ignores the padding mask:
        padding sits at the end and causal attention never reads it)."""

        def __init__(self):
            super().__init__()
            self.query = nn.Linear(width, width)
            self.key = nn.Linear(width, width)
            self.value = nn.Linear(width, width)
            self.out = nn.Linear(width, width)
            self.dropout = nn.Dropout(drop)

        def forward(self, x, padding):
            n, length, _ = x.shape

            def heads_of(projection):
                return projection(x).view(n, length, heads, -1).transpose(1, 2)

            core = causal_flow_attention(heads_of(self.query), heads_of(self.key), heads_of(self.value))
            return self.dropout(self.out(core.transpose(1, 2).reshape(n, length, width)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(width, eps=1e-5)
            self.attn = SoftmaxAttention() if model == "softmax" else FlowAttention()
            self.ln_2 = nn.LayerNorm(width, eps=1e-5)
            self.c_fc = Conv1D(width, 4 * width)
            self.c_proj = Conv1D(4 * width, width)
            self.mlp_dropout = nn.Dropout(drop)

        def forward(self, x, padding):
            x = x + self.attn(self.ln_1(x), padding)
            return x + self.mlp_dropout(self.c_proj(torch.relu(self.c_fc(self.ln_2(x)))))

    class Decision(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_timestep = nn.Embedding(args.max_ep_len, width)
            self.embed_return = nn.Linear(1, width)
            self.embed_state = nn.Linear(args.states, width)
            self.embed_action = nn.Linear(args.actions, width)
            self.embed_ln = nn.LayerNorm(width)
            self.drop = nn.Dropout(drop)
            self.blocks = nn.ModuleList(Block() for _ in range(args.layers))
            self.ln_f = nn.LayerNorm(width, eps=1e-5)
            self.predict_state = nn.Linear(width, args.states)
            self.predict_action = nn.Sequential(nn.Linear(width, args.actions), nn.Tanh())
            self.predict_return = nn.Linear(width, 1)

        def forward(self, states, actions, returns, timesteps, mask):
            n, steps = states.shape[:2]
            time = self.embed_timestep(timesteps)
            stacked = torch.stack(
                (self.embed_return(returns) + time, self.embed_state(states) + time,
                 self.embed_action(actions) + time), dim=1)
            x = self.embed_ln(stacked.permute(0, 2, 1, 3).reshape(n, 3 * steps, width))
            token_mask = torch.stack((mask, mask, mask), dim=1).permute(0, 2, 1).reshape(n, 3 * steps)
            padding = (1.0 - token_mask[:, None, None, :]) * -10000.0
            x = self.drop(x)
            for block in self.blocks:
                x = block(x, padding)
            x = self.ln_f(x).reshape(n, steps, 3, width).permute(0, 2, 1, 3)
            self.predict_return(x[:, 2])
            self.predict_state(x[:, 2])
            return self.predict_action(x[:, 1])

    return Decision()


def random_batch(args):
    """A full batch (no padding) of random steps."""
    import torch

    g = torch.Generator().manual_seed(0)
    n, steps = args.batch, args.context
    states = torch.rand(n, steps, args.states, generator=g) * 4 - 2
    actions = torch.rand(n, steps, args.actions, generator=g) * 2 - 1
    returns = torch.rand(n, steps, 1, generator=g) * 5
    start = torch.randint(0, max(args.max_ep_len - steps, 0) + 1, (n, 1), generator=g)
    timesteps = (start + torch.arange(steps)).clamp(max=args.max_ep_len - 1)
    mask = torch.ones(n, steps)
    return states, actions, returns, timesteps, mask


def training_step(args, model):
    """Builds `model` at the sizes of `args`, its optimiser and a batch; returns a function
    that runs one training step and returns its split in seconds."""
    import torch

    net = build_model(args, model).train()
    params = list(net.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    states, actions, returns, timesteps, mask = random_batch(args)

    def step():
        cpu = time.process_time()
        start = time.perf_counter()
        predicted = net(states, actions, returns, timesteps, mask)
        valid = mask.reshape(-1) > 0
        loss = torch.mean(
            (predicted.reshape(-1, args.actions)[valid] - actions.reshape(-1, args.actions)[valid]) ** 2)
        forward = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 0.25)
        optimizer.step()
        update = time.perf_counter()
        return {"forward": forward - start, "backward": backward - forward,
                "update": update - backward, "cpu": time.process_time() - cpu}

    return step


def measure(args, model):
    """Times the warm-up and timed steps of `model`; prints its JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # One step of a tiny model of the same kind first, so that the library code and
    # PyTorch's one-time allocations are resident before the baseline.
    tiny = argparse.Namespace(**dict(vars(args), batch=1, context=2, width=4 * args.heads))
    training_step(tiny, model)()
    gc.collect()
    baseline = resident_bytes()
    step = training_step(args, model)
    for _ in range(args.warmup):
        step()
    steps, spent = [], 0.0
    while len(steps) < args.reps and (not steps or spent < args.budget):
        split = step()
        spent += split["forward"] + split["backward"] + split["update"]
        steps.append(split)
    print(json.dumps({"model": model, "steps": steps,
                      "peak_bytes": peak_resident_bytes() - baseline}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="flow,softmax", help="comma-separated: flow, softmax")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=20, help="K timesteps (3 K tokens)")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--states", type=int, default=17)
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--max-ep-len", type=int, default=1000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--reps", type=int, default=7, help="most timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds of timed steps after which no further step starts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", choices=["flow", "softmax"],
                        help="measure this model in this process (what each fresh process runs)")
    args = parser.parse_args()
    if args.one:
        measure(args, args.one)
        return
    models = [m for m in args.models.split(",") if m]
    for model in models:
        if model not in ("flow", "softmax"):
            parser.error(f"--models: unknown model {model!r} (flow, softmax)")
    for model in models:
        run_isolated([__file__] + sys.argv[1:] + ["--one", model], {"model": model})


if __name__ == "__main__":
    main()
