"""Claim (#14.3): evaluating B fault maps per forward pass is never slower with the automatic B.

For a LeNet-5-size CNN and the 9.84M-weight MLP of faultlab_inject_speed.py (seeded weights,
synthetic inputs, one batch of ``--inputs``), at BER 1e-5: time per map of one map at a time
(inject, forward, restore: the campaign's path) against ``faultlab._batched.BatchedMaps`` with B
maps per pass (stacking the faulty parameters, applying the B maps, one vmap pass), for B in
1..32; the automatic choice ``choose_maps_per_pass`` (1 on a CPU, measured on a GPU) and its
ratio. Accuracies of every map are compared between the two paths.

Target: auto B never slower than one map per pass (ratio >= 1.0 within noise). On a CPU batching
is expected not to pay (auto B = 1); on a GPU the per-B figures are the measurement the default
rests on. Same script on CUDA (``--device cuda``, default when a GPU is present).
Writes benchmarks/results/faultlab_batched_maps.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import faultlab as fl
from faultlab._batched import BatchedMaps, choose_maps_per_pass
from faultlab._inject import apply_fault_map, restore
from hwlab.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultlab_inject_speed import big_mlp

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_batched_maps.json"
SIZES = (1, 2, 4, 8, 16, 32)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def one_at_a_time(model, fmaps, x, y, device) -> tuple[float, list[float]]:
    accs = []
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for fmap in fmaps:
            recs = apply_fault_map(model, fmap)
            try:
                accs.append(float((model(x).argmax(1) == y).sum()))
            finally:
                restore(recs)
    _sync(device)
    return (time.perf_counter() - t0) / len(fmaps), accs


def batched(model, fmaps, x, y, b, device) -> tuple[float, list[float]]:
    accs = []
    _sync(device)
    t0 = time.perf_counter()
    for lo in range(0, len(fmaps), b):
        logits = BatchedMaps(model, fmaps[lo:lo + b]).logits(x)  # B x n x C
        accs.extend((logits.argmax(2) == y).sum(1).float().tolist())
    _sync(device)
    return (time.perf_counter() - t0) / len(fmaps), accs


def measure(name, model, x, y, device, n_maps, repeats=3) -> dict:
    fmaps = [fl.sample_faults(model, fl.BitFlip(rate=1e-5), seed=s) for s in range(n_maps)]
    one_at_a_time(model, fmaps[:2], x, y, device)  # warm-up
    base = [one_at_a_time(model, fmaps, x, y, device) for _ in range(repeats)]
    t1, ref = statistics.median(t for t, _ in base), base[0][1]
    out = {"model": name, "maps": n_maps, "faults_mean": sum(map(len, fmaps)) / n_maps,
           "one_at_a_time_ms_per_map": 1e3 * t1, "B": {}}
    for b in SIZES:
        if b > n_maps:
            continue
        batched(model, fmaps[:b], x, y, b, device)  # warm-up
        runs = [batched(model, fmaps, x, y, b, device) for _ in range(repeats)]
        tb = statistics.median(t for t, _ in runs)
        out["B"][b] = {"ms_per_map": 1e3 * tb, "speedup": t1 / tb,
                       "accuracies_equal": runs[0][1] == ref}
    auto = choose_maps_per_pass(model, x)
    out["auto_B"] = auto
    out["auto_speedup"] = 1.0 if auto == 1 else out["B"][auto]["speedup"]
    return out


def main(device: str, inputs: int, n_maps: int) -> dict:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lenet = create_model("lenet5", in_shape=(1, 28, 28), num_classes=10).eval()
    cases = [("lenet5", lenet, torch.rand(inputs, 1, 28, 28, generator=g)),
             ("mlp-9.84M", big_mlp(), torch.rand(inputs, 3072, generator=g))]
    res = {"device": device, "inputs": inputs, "rate": 1e-5, "cases": []}
    for name, model, x in cases:
        model = model.to(device)
        x = x.to(device)
        with torch.no_grad():
            y = model(x).argmax(1)  # the fault-free predictions as labels
        res["cases"].append(measure(name, model, x, y, device, n_maps))
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--inputs", type=int, default=500)
    ap.add_argument("--maps", type=int, default=32)
    args = ap.parse_args()
    res = main(args.device, args.inputs, args.maps)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    print(f"batched fault maps, BER 1e-5, {res['inputs']} inputs per pass, device "
          f"{res['device']}, 1 torch thread")
    for c in res["cases"]:
        print(f"{c['model']}: one map at a time {c['one_at_a_time_ms_per_map']:.2f} ms per map "
              f"({c['faults_mean']:.1f} faults per map)")
        for b, r in c["B"].items():
            print(f"  B={b:<3d} {r['ms_per_map']:8.2f} ms per map  -> {r['speedup']:.2f}x  "
                  f"accuracies equal: {r['accuracies_equal']}")
        print(f"  auto B = {c['auto_B']}: {c['auto_speedup']:.2f}x one map per pass "
              f"(target: never slower, >= 1.0)")
    print(f"wrote {RESULTS}")
