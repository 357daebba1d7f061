"""Claim: on low-bit storage formats inject + restore still costs what the faults cost.

A ~10M-weight MLP (3072-2560-768-10, the model of faultlab_inject_speed.py) stored as mxfp4 with
``faultlab.quantize`` (4.9 MB of packed E2M1 codes + 0.3 MB of E8M0 scales): inject + restore at
BER 1e-6 per stored bit (``with fl.inject(model, BitFlip(rate=1e-6), seed=...)``: draw, apply,
restore) vs one plain copy of all the quantised model's parameters (#25 target: <= 0.05), plus
the replay of a drawn map alone and the same ratio against a copy of the float32 parameters.
Median of ``--repeats`` timings after a warm-up, one torch thread. Writes
benchmarks/results/faultlab_formats_inject.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from faultlab_inject_speed import big_mlp, timed  # the same model and timer (benchmarks/ is on
from torch import nn

import faultlab as fl

# sys.path when a benchmark runs as a script)

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_formats_inject.json"
TARGET = 0.05  # #25: inject + restore at BER 1e-6 on a 10M-weight mxfp4 model / one copy


def copy_time(model: nn.Module, repeats: int) -> float:
    params = list(model.parameters())
    buffers = [torch.empty_like(p) for p in params]

    def plain_copy():
        with torch.no_grad():
            for b, p in zip(buffers, params):
                b.copy_(p)
    return timed(plain_copy, repeats)


def main(fmt: str = "mxfp4", repeats: int = 200) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = big_mlp()
        model = fl.quantize(base, fmt)
        info = fl.storage(model)
        out = {"fmt": fmt, "threads": 1, "repeats": repeats,
               "weights": sum(s.numel for s in info.values() if s.role == "element"),
               "stored_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
               "eligible_bits": sum(8 * model.get_parameter(n).numel() for n in info)}
        out["copy_s"] = copy_time(model, repeats)
        out["copy_fp32_s"] = copy_time(base, max(20, repeats // 10))

        inject, fault_model = fl.inject, fl.BitFlip(rate=1e-6)  # looked up once, as a loop would

        def inject_restore():
            with inject(model, fault_model, seed=1):
                pass
        fmap = fl.sample_faults(model, fault_model, seed=1)

        def replay():
            with inject(model, fmap):
                pass
        out["faults"] = len(fmap)
        out["scale_faults"] = int((fl.fault_roles(model, fmap) == "scale").sum())
        out["inject_s"] = timed(inject_restore, repeats)
        out["replay_s"] = timed(replay, repeats)
        out["ratio_vs_copy"] = out["inject_s"] / out["copy_s"]
        out["replay_ratio_vs_copy"] = out["replay_s"] / out["copy_s"]
        out["ratio_vs_fp32_copy"] = out["inject_s"] / out["copy_fp32_s"]
        out["target"] = TARGET
        return out
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fmt", default="mxfp4")
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    res = main(a.fmt, a.repeats)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    print(f"model: {res['weights'] / 1e6:.2f}M weights as {res['fmt']} "
          f"({res['stored_bytes'] / 1e6:.2f} MB stored), 1 torch thread")
    print(f"plain copy of the stored parameters: {1e3 * res['copy_s']:8.3f} ms "
          f"(float32 model: {1e3 * res['copy_fp32_s']:.3f} ms)")
    print(f"inject+restore BER 1e-6 ({res['faults']} faults, {res['scale_faults']} in scales): "
          f"{1e3 * res['inject_s']:.3f} ms = {res['ratio_vs_copy']:.4f} x copy "
          f"(target <= {TARGET}); replay of a drawn map {1e3 * res['replay_s']:.3f} ms = "
          f"{res['replay_ratio_vs_copy']:.4f} x copy; vs the float32 copy "
          f"{res['ratio_vs_fp32_copy']:.4f}")
    print(f"wrote {RESULTS}")
