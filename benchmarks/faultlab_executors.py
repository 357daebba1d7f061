"""Claim (#14.2, #23.6): process:2 and dask-local:2 beat serial on a campaign of about a minute,
with the default options (delayed start on) and with delayed start off.

One campaign on a LeNet-5-size CNN (28x28 inputs, seeded weights, synthetic data) in two modes:

* ``off``: BER 1e-4, ``delayed_start=False``: every trial changes bits and runs full inference;
* ``on``: BER 1e-5 with the default options (delayed start and fault dropping, a clean row):
  trials start at the cut before their first faulty layer, many are cheap.

Each mode is sized so that the serial run takes ``--seconds`` (60 by default, the target
setting), then runs on ``process:2`` and ``dask-local:2``; every total includes starting the
workers, shipping the model once and their first (Numba-loading, cache-filling) trials. Rows are
compared with serial (key, seed, accuracy, n_faults, n_changed). The fixed cost of an executor is
``total - serial / workers``; the campaign length above which it beats serial (crossover) is
``workers * cost / (workers - 1)``.

Target: >= 1.8x and fixed cost <= 3 s on 2 idle cores. ``--device cuda`` runs the model on the
GPU (the workers then share one device: for the record only). ``--modes on,off`` picks the modes.
Writes benchmarks/results/faultlab_executors.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import faultlab as fl
from hwlab.models import create_model

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_executors.json"
TARGET = 1.8  # #23: process:2 and dask-local:2 over serial, 60-s campaign, 2 idle cores
MODES = {"off": {"rate": 1e-4, "delayed_start": False, "clean": False},
         "on": {"rate": 1e-5, "delayed_start": True, "clean": True}}  # the defaults
COMPARED = ["key", "seed", "accuracy", "n_faults", "n_changed"]


def setup(device: str, n: int):
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("lenet5", in_shape=(1, 28, 28), num_classes=10).eval().to(device)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return model, (x, y)


def rows(df):
    extra = df["extra"].map(json.loads)
    out = df.assign(n_faults=extra.map(lambda e: e.get("n_faults")),
                    n_changed=extra.map(lambda e: e.get("n_changed")))
    return out[COMPARED].sort_values("key").reset_index(drop=True)


def run(model, data, trials: int, executor: str | None, mode: str) -> tuple[float, object]:
    m = MODES[mode]
    t0 = time.perf_counter()
    df = fl.campaign(model, data, [fl.BitFlip(rate=m["rate"])], trials=trials, seed=0,
                     clean=m["clean"], executor=executor, batch_size=500,
                     delayed_start=m["delayed_start"])
    return time.perf_counter() - t0, df


def main(seconds: float, device: str, n: int, modes, workers: int = 2) -> dict:
    torch.set_num_threads(1)
    model, data = setup(device, n)
    out = {"device": device, "inputs": n, "workers": workers, "seconds_target": seconds}
    for mode in modes:
        run(model, data, 2, None, mode)  # warm-up: Numba kernels, allocator
        probe, _ = run(model, data, 64, None, mode)  # the campaign's set-up is then small
        trials = max(4, math.ceil(seconds / (probe / 64)))
        serial_s, serial_df = run(model, data, trials, None, mode)
        res = out[mode] = {**MODES[mode], "trials": trials, "serial_s": serial_s}
        for spec in (f"process:{workers}", f"dask-local:{workers}"):
            total, df = run(model, data, trials, spec, mode)
            same = rows(df).equals(rows(serial_df))
            cost = total - serial_s / workers
            res[spec] = {"total_s": total, "speedup": serial_s / total, "rows_identical": same,
                         "fixed_cost_s": cost,
                         "crossover_serial_s": workers * max(cost, 0.0) / (workers - 1)}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="serial campaign length")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--inputs", type=int, default=500)
    ap.add_argument("--modes", default="on,off", help="delayed start on (defaults) / off")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    res = main(args.seconds, args.device, args.inputs, modes)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    for mode in modes:
        r0 = res[mode]
        print(f"lenet5-size CNN, {res['inputs']} inputs, {r0['trials']} trials at BER "
              f"{r0['rate']:g}, delayed start {mode}, device {res['device']}, 1 torch thread "
              "per process")
        print(f"serial:        {r0['serial_s']:7.2f} s")
        for spec in (f"process:{res['workers']}", f"dask-local:{res['workers']}"):
            r = r0[spec]
            print(f"{spec:14s} {r['total_s']:7.2f} s  -> {r['speedup']:.2f}x serial (target >= "
                  f"{TARGET}x on 2 idle cores)  rows identical: {r['rows_identical']}  fixed "
                  f"cost {r['fixed_cost_s']:.2f} s -> pays off above "
                  f"{r['crossover_serial_s']:.1f} s of serial work")
    print(f"wrote {RESULTS}")
