"""Claim: ECC-decoded injection costs follow the faults, not the model size.

On a ~10M-weight float32 MLP (the same network as faultlab_inject_speed.py), in one run:
drawing an ``ECC("secded72_64", BitFlip(rate=1e-6))`` map (faults on data and check bits of
~4.9M 72-bit words, decoded per touched word), injecting and restoring it, against one plain
copy of all parameters. Target: <= 0.05 of the copy. Also shown: the replay of the decoded map,
an unprotected row fault and a parity map. Prints ratios, writes
benchmarks/results/faultlab_memory_ecc.json. ``--small`` uses a 1M-weight model (smoke run).
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import faultlab as fl
from faultlab.memory import ECC, RowFault

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_memory_ecc.json"
TARGET = 0.05  # the bound: ECC inject <= 5 % of one full parameter copy


def big_mlp(small: bool = False) -> nn.Module:
    """3072-2560-768-10 (9.84M float32 weights), or 1024-960-64-10 with ``small``."""
    sizes = (1024, 960, 64, 10) if small else (3072, 2560, 768, 10)
    g = torch.Generator().manual_seed(0)
    layers = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    m = nn.Sequential(*layers[:-1])  # a benchmark network, not a user model
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return m.eval()


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(small: bool = False) -> dict:
    torch.set_num_threads(1)
    model = big_mlp(small)
    params = list(model.parameters())
    buffers = [torch.empty_like(p) for p in params]
    n_weights = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("bias"))

    def plain_copy():
        with torch.no_grad():
            for b, p in zip(buffers, params):
                b.copy_(p)

    out = {"weights": n_weights, "threads": 1, "target_ratio": TARGET}
    out["copy_s"] = timed(plain_copy, 20)
    models = {"secded72_64": ECC("secded72_64", fl.BitFlip(rate=1e-6)),
              "parity": ECC("parity", fl.BitFlip(rate=1e-6)),
              "row_unprotected": RowFault(count=1)}
    for name, fm in models.items():
        def draw_inject_restore(fm=fm):
            with fl.inject(model, fm, seed=1):
                pass
        fmap = fl.sample_faults(model, fm, seed=1)

        def replay(fmap=fmap):
            with fl.inject(model, fmap):
                pass
        out[f"{name}_s"] = timed(draw_inject_restore, 20)
        out[f"{name}_replay_s"] = timed(replay, 20)
        out[f"{name}_entries"] = len(fmap)
        out[f"{name}_extra"] = dict(fmap.extra or {})
        out[f"{name}_ratio_vs_copy"] = out[f"{name}_s"] / out["copy_s"]
    return out


if __name__ == "__main__":
    res = main(small="--small" in sys.argv)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2, default=str))
    ex = res["secded72_64_extra"]
    print(f"weights: {res['weights']:,}  one parameter copy: {1e3 * res['copy_s']:.2f} ms")
    print(f"ECC secded72_64 BitFlip(1e-6): draw+decode+inject+restore "
          f"{1e3 * res['secded72_64_s']:.3f} ms = {res['secded72_64_ratio_vs_copy']:.4f} x copy "
          f"(target <= {TARGET})  [{ex.get('faulty_bits')} raw faulty bits, "
          f"{ex.get('corrected_words')} corrected, {ex.get('detected_words')} detected words]")
    print(f"ECC parity BitFlip(1e-6): {res['parity_ratio_vs_copy']:.4f} x copy; "
          f"one unprotected row fault: {res['row_unprotected_ratio_vs_copy']:.4f} x copy")
    print(f"wrote {RESULTS}")
