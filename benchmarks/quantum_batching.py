"""Claim: batched (broadcast) forward+backward of the level-2 hybrid model is >= 10x faster than
evaluating the QNode sample by sample, with the same outputs; and how far it is from the floor.

Side by side in one run, on ``quantum.creep_model((1, 28, 28), level=2)`` (14x14 inputs, 5-qubit
re-uploading layer with 10 repetitions):
1. batched: one forward+backward of a batch (each quantum layer = one broadcast circuit);
2. per sample: the same model, the re-uploading QNode (and its data gate) called once per sample
   in a Python loop, then backward.
Physical floor of the 5-qubit circuit: every one of its 2 x reps gates reads and writes all 2**n
amplitudes of every batch element, so time >= gates x 2 x batch x 2**n x 16 B (complex128) /
memory bandwidth, with the bandwidth measured here by a large torch copy. The measured time of the
re-uploading QNode (forward+backward) is reported against that floor.

    .venv/bin/python benchmarks/quantum_batching.py [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import quantum as q
from hwlab.meters import latency

RESULTS = Path(__file__).resolve().parent / "results" / "quantum_batching.json"


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call (hwlab.meters.latency)."""
    return latency(fn, warmup=1, repeats=repeats).median_ms / 1e3


def bandwidth(nbytes: int = 256 * 2**20) -> float:
    """Bytes per second of a large copy (read + write counted)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    sec = timed(lambda: dst.copy_(src), 5)
    return 2 * nbytes / sec


def per_sample_forward(model, x):
    """The model with its QuantumLinear evaluated one sample (one QNode call) at a time."""
    h = x
    for child in model:
        h = child.forward_per_sample(h) if isinstance(child, q.QuantumLinear) else child(h)
    return h


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = q.creep_model((1, 28, 28), level=2)
    x = torch.rand(a.batch, 1, 28, 28)
    y = torch.randint(0, 10, (a.batch,))
    loss = torch.nn.functional.cross_entropy

    def batched():
        model.zero_grad()
        loss(model(x), y).backward()

    def sample_by_sample():
        model.zero_grad()
        loss(per_sample_forward(model, x), y).backward()

    with torch.no_grad():
        diff = (model(x) - per_sample_forward(model, x)).abs().max().item()
    t_batched = timed(batched, a.repeats)
    t_single = timed(sample_by_sample, max(1, a.repeats // 2))

    lin = model[4]
    feats = torch.randn(a.batch, lin.in_features)

    def linear_only():
        lin.zero_grad()
        lin(feats).sum().backward()

    t_linear = timed(linear_only, a.repeats)
    bw = bandwidth()
    gates = 2 * lin.reps  # data gate + trainable gate per repetition
    floor_fwd = gates * 2 * a.batch * 2 ** lin.n_qubits * 16 / bw  # seconds, complex128
    res = {
        "batch": a.batch, "threads": a.threads, "qubits": lin.n_qubits, "reps": lin.reps,
        "max_abs_diff_batched_vs_per_sample": diff,
        "batched_fwd_bwd_ms": 1e3 * t_batched, "per_sample_fwd_bwd_ms": 1e3 * t_single,
        "speedup": t_single / t_batched,
        "reuploading_layer_fwd_bwd_ms": 1e3 * t_linear,
        "bandwidth_GBps": bw / 1e9,
        "floor_forward_ms": 1e3 * floor_fwd,
        "floor_fwd_bwd_ms": 3e3 * floor_fwd,  # backward reads/writes ~2x the forward's states
        "layer_over_floor": t_linear / (3 * floor_fwd),
        "target_speedup": 10.0, "meets_target": t_single / t_batched >= 10.0,
    }
    for k, v in res.items():
        print(f"{k:38s} {v:.4g}" if isinstance(v, float) else f"{k:38s} {v}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
