"""Claim: the exact-kernel QuantumConv2d is >= 100x faster than evaluating one circuit per patch,
with equal outputs (max abs difference <= 1e-6 in float64).

Side by side in one run on the same layer and input: ``QuantumConv2d.forward`` (one broadcast
circuit for all C_out x C_in states, then ``F.conv2d`` with kernel Re(rho)[:3, :3] / C_in) vs
``QuantumConv2d.reference_forward`` (one PennyLane circuit per (sample, patch, input channel),
measuring the symmetrised zero-padded patch as a ``qml.Hermitian``, broadcast over C_out).
Also times the exact layer on the study's real size (batch 64, 16 -> 8 channels, 12x12).

    .venv/bin/python benchmarks/quantum_exact_conv.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hwlab.meters import latency
from quantum import QuantumConv2d

RESULTS = Path(__file__).resolve().parent / "results" / "quantum_exact_conv.json"


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call (hwlab.meters.latency)."""
    return latency(fn, warmup=1, repeats=repeats).median_ms / 1e3


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--side", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    layer = QuantumConv2d(2, 4, 3).double()
    x = torch.rand(a.batch, 2, a.side, a.side, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        diff = (layer(x) - layer.reference_forward(x)).abs().max().item()
        t_exact = timed(lambda: layer(x), 10)
        t_ref = timed(lambda: layer.reference_forward(x), 1)
    n_circuits = a.batch * (a.side - 2) ** 2 * 2
    big = QuantumConv2d(16, 8, 3)
    xb = torch.rand(64, 16, 12, 12)

    def fwd_bwd():
        big.zero_grad()
        big(xb).sum().backward()

    t_big = timed(fwd_bwd, 5)
    res = {
        "input": list(x.shape), "per_patch_circuits": n_circuits, "max_abs_diff": diff,
        "exact_ms": 1e3 * t_exact, "per_patch_ms": 1e3 * t_ref, "speedup": t_ref / t_exact,
        "study_size_fwd_bwd_ms_b64_16to8_12x12": 1e3 * t_big,
        "target_speedup": 100.0, "meets_target": t_ref / t_exact >= 100 and diff <= 1e-6,
    }
    for k, v in res.items():
        print(f"{k:40s} {v:.4g}" if isinstance(v, float) else f"{k:40s} {v}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
