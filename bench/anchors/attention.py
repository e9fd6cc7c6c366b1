"""PyTorch causal attention cores for `flowrl bench attention --compare`.

Two cores, each forward and backward of sum(out * W) with q, k, v, W of shape (B, H, L, D),
f32 on the CPU, 2 threads:

- flow: the reference Flowformer's causal Flow-Attention (torch_common, the same code as
  train.py's flow model), clamp 10: its (B, H, L, D, D) cumulative sums are materialised.
- sdpa: PyTorch's fused scaled_dot_product_attention with is_causal=True.

Timing as flowrl's side: one warm-up run, then the fastest of at least --reps runs, adding
runs (30 at most) while they total under a second; the warm-up alone when it takes more
than 10 seconds. Each case (core, L) runs in a fresh Python process. Prints one JSON object
per case and line: {"impl", "l", "seconds", "runs", "cpu", "peak_bytes"} ("cpu": mean
processor seconds of a timed run, all threads), or {"impl", "l", "error"} when its process
failed. peak_bytes is the process's peak resident size (ru_maxrss) less its resident size
after one run of the same core at L = 16 (so that PyTorch's library code and one-time
allocations are not counted): inputs, outputs, gradients, intermediates and whatever
PyTorch's allocator kept.
"""

import argparse
import gc
import json
import sys
import time

from torch_common import causal_flow_attention, peak_resident_bytes, resident_bytes, run_isolated

# Most timed runs of one case.
MAX_RUNS = 30


def case(args, impl, length):
    """Inputs of one case and a function that runs its core forward and backward, returning
    wall-clock and processor seconds."""
    import torch

    shape = (args.batch, args.heads, length, args.head_dim)
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    w = torch.randn(shape)
    if impl == "flow":
        def core():
            return causal_flow_attention(q, k, v)
    else:
        def core():
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    def run():
        for x in (q, k, v):
            x.grad = None
        cpu = time.process_time()
        start = time.perf_counter()
        (core() * w).sum().backward()
        return time.perf_counter() - start, time.process_time() - cpu

    return run


def measure(args, impl, length):
    """Times one core at one length; prints its JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # One run at a tiny length first, so that the library code and PyTorch's one-time
    # allocations are resident before the baseline.
    case(args, impl, 16)()
    gc.collect()
    baseline = resident_bytes()
    run = case(args, impl, length)
    warm_up, cpu = run()
    best, total, runs = warm_up, 0.0, 1
    if warm_up <= 10.0:
        best, cpu_total, runs = float("inf"), 0.0, 0
        while runs < args.reps or (total < 1.0 and runs < MAX_RUNS):
            seconds, used = run()
            runs += 1
            best, total, cpu_total = min(best, seconds), total + seconds, cpu_total + used
        cpu = cpu_total / runs
    print(json.dumps({"impl": impl, "l": length, "seconds": best, "runs": runs, "cpu": cpu,
                      "peak_bytes": peak_resident_bytes() - baseline}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="256,1024,4096", help="comma-separated sequence lengths L")
    parser.add_argument("--impls", default="flow,sdpa", help="comma-separated: flow, sdpa")
    parser.add_argument("--sdpa-max", type=int, default=4096, help="longest L at which sdpa runs")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32, help="D = M")
    parser.add_argument("--reps", type=int, default=3, help="least timed runs after the warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("IMPL", "L"),
                        help="measure this case in this process (what each fresh process runs)")
    args = parser.parse_args()
    if args.one:
        measure(args, args.one[0], int(args.one[1]))
        return
    impls = [i for i in args.impls.split(",") if i]
    for impl in impls:
        if impl not in ("flow", "sdpa"):
            parser.error(f"--impls: unknown core {impl!r} (flow, sdpa)")
    for length in (int(l) for l in args.lengths.split(",") if l):
        for impl in impls:
            if impl == "sdpa" and length > args.sdpa_max:
                continue
            run_isolated([__file__] + sys.argv[1:] + ["--one", impl, str(length)],
                         {"impl": impl, "l": length})


if __name__ == "__main__":
    main()
