"""What train.py and attention.py share: the reference Flowformer's causal Flow-Attention
core in plain PyTorch, the resident-memory probes, and the one-case-per-process runner.

The Flow-Attention core follows the algorithm of the reference Decision-Flowformer
(thuml/Flowformer, Flowformer_RL): every prefix sum is a `cumsum` over the sequence, and
the causal aggregation `sum_{j<=i} K_j (C_j v_j)^T` is materialised as an (N, H, L, D, M)
tensor of outer products and its cumulative sum, so its time and memory are those of the
reference, not of a chunked or fused rewrite.
"""

import json
import os
import resource
import subprocess
import sys


def causal_flow_attention(q, k, v, clamp=10.0, eps=1e-6):
    """Causal Flow-Attention of projected heads: q, k (N, H, L, D), v (N, H, L, M) ->
    (N, H, L, M). Sigmoid feature map inside; the conserved source is clamped to
    [-clamp, clamp] (10 in the reinforcement-learning variant)."""
    import torch

    q = torch.sigmoid(q)
    k = torch.sigmoid(k)
    length = q.shape[2]
    # Position i (from 1) of each token: the causal stand-in for the row and column
    # counts of the normal version.
    count = torch.arange(1, length + 1, dtype=q.dtype, device=q.device).view(1, 1, length)
    incoming = count / torch.einsum("nhld,nhld->nhl", q + eps, k.cumsum(dim=2) + eps)
    outgoing = count / torch.einsum("nhld,nhld->nhl", k + eps, q.cumsum(dim=2) + eps)
    sink = torch.einsum(
        "nhld,nhld->nhl", q + eps, (k * outgoing.unsqueeze(-1)).cumsum(dim=2) + eps) / count
    source = torch.einsum(
        "nhld,nhld->nhl", k + eps, (q * incoming.unsqueeze(-1)).cumsum(dim=2) + eps) / count
    source = source.clamp(min=-clamp, max=clamp)
    allocation = torch.sigmoid(sink)
    weight = source.exp()
    competition = weight / weight.cumsum(dim=-1) * count
    # Causal aggregation, materialised: prefix sums of the outer products K_j (C_j v_j)^T.
    states = torch.einsum("nhld,nhlm->nhldm", k, v * competition.unsqueeze(-1)).cumsum(dim=2)
    queries = q * (incoming / count).unsqueeze(-1)
    out = torch.einsum("nhld,nhldm->nhlm", queries, states)
    return out * allocation.unsqueeze(-1)


def resident_bytes():
    """This process's resident set size now (Linux /proc), in bytes."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes():
    """The most this process has held resident since it started (ru_maxrss), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_isolated(argv, label):
    """Runs this script again as `argv` (a fresh process, so that its peak resident size
    is that case's alone) and prints its JSON lines; when it fails, prints one JSON line
    with `label` and an "error" instead. Its stderr passes through."""
    child = subprocess.run([sys.executable] + argv, stdout=subprocess.PIPE, text=True)
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode == 0 and lines:
        for line in lines:
            print(line, flush=True)
        return
    if child.returncode < 0:
        reason = f"killed by signal {-child.returncode} (out of memory?)"
    else:
        reason = f"exit status {child.returncode}"
    print(json.dumps(dict(label, error=reason)), flush=True)
