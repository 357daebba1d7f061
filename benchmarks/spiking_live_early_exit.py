"""Claim: live early exit (Dynamic Confidence, threshold chosen on val) runs the test set at
least 1.5x faster in wall-clock time than running every sample to T*, with the same predictions
as the offline evaluation of the recording.

T* is the smallest fixed T whose test accuracy is within 0.5 points of the best fixed-T accuracy.
Baseline and early exit are timed in the same run with hwlab.meters.latency (median of repeats).

    .venv/bin/python benchmarks/spiking_live_early_exit.py [--dataset mnist5k] [--model lenet|vgg-s --epochs 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import spiking as sp
from hwlab.data import load
from hwlab.meters import latency
from hwlab.models import create_model
from hwlab.train import TrainConfig, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--model", default="lenet", help="lenet, mlp or a hwlab.models name")
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--steps", type=int, default=32, help="T_max")
    ap.add_argument("--tolerance", type=float, default=0.002)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="default benchmarks/results/<name>.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train, val, test = (load(a.dataset, s, seed=a.seed) for s in ("train", "val", "test"))
    if a.model in sp.ARCHITECTURES:
        ann = sp.qcfs_net(a.model, train.in_shape, train.num_classes, levels=a.levels)
    else:  # a zoo architecture with its ReLUs swapped for QCFS (max pools -> average pools)
        ann = sp.with_qcfs(create_model(a.model, train.in_shape, train.num_classes), a.levels)
    fit(ann, train, TrainConfig(epochs=a.epochs, batch_size=64, seed=a.seed))
    net = sp.convert(ann.eval())
    rv = sp.record(net, val, a.steps, batch_size=a.batch, seed=a.seed)
    rt = sp.record(net, test, a.steps, batch_size=a.batch, seed=a.seed)
    curve = rt.accuracy_curve()
    a_star = float(curve.max())
    t_star = int((curve >= a_star - 0.005 - 1e-12).nonzero()[0, 0]) + 1
    cal = sp.calibrate(rv, "dynamic-confidence", tolerance=a.tolerance)
    offline = sp.apply_rule(rt, "dynamic-confidence", cal.threshold)
    live = sp.run_live(net, test.x, "dynamic-confidence", cal.threshold, a.steps, a.batch, a.seed)
    same = bool(torch.equal(live.predictions, offline.predictions))

    runs = {"dc": ("dynamic-confidence", cal.threshold, a.steps), "t_star": (None, None, t_star),
            "t_max": (None, None, a.steps)}
    times = {k: [] for k in runs}
    with torch.no_grad():
        for i in range(a.repeats + 1):  # interleaved, so load drift hits all three alike
            for k, (rule, thr, steps) in runs.items():
                ms = latency(sp.run_live, net, test.x, rule, thr, steps=steps, batch_size=a.batch,
                             seed=a.seed, warmup=0, repeats=1).median_ms
                if i > 0:  # round 0 is the warm-up
                    times[k].append(ms)
    ms_dc, ms_tstar, ms_tmax = (statistics.median(times[k]) for k in ("dc", "t_star", "t_max"))
    res = {
        "dataset": a.dataset, "model": a.model, "levels": a.levels, "t_max": a.steps,
        "a_star": a_star, "t_star": t_star, "threshold": cal.threshold,
        "dc_accuracy": offline.accuracy, "dc_mean_steps": offline.mean_steps,
        "fixed_t_star_accuracy": float(curve[t_star - 1]),
        "live_matches_offline": same,
        "ms_per_test_set": {"dynamic_confidence": ms_dc, "fixed_t_star": ms_tstar,
                            "fixed_t_max": ms_tmax},
        "speedup_vs_t_star": ms_tstar / ms_dc, "speedup_vs_t_max": ms_tmax / ms_dc,
        "step_ratio_vs_t_star": offline.mean_steps / t_star,
        "claim_1p5x_vs_t_star": ms_tstar / ms_dc >= 1.5, "threads": a.threads,
    }
    print(f"A*={a_star:.4f} T*={t_star}  DC: acc={offline.accuracy:.4f} mean steps="
          f"{offline.mean_steps:.2f} (threshold {cal.threshold:.4g}), live==offline: {same}")
    print(f"ms per test set: DC live {ms_dc:.1f}, fixed T* {ms_tstar:.1f}, fixed T_max "
          f"{ms_tmax:.1f}")
    print(f"speedup vs T*: {res['speedup_vs_t_star']:.2f}x (claim >= 1.5x: "
          f"{res['claim_1p5x_vs_t_star']}), vs T_max: {res['speedup_vs_t_max']:.2f}x")
    res["ms_samples"] = times
    out = Path(a.out or f"benchmarks/results/spiking_live_early_exit_{a.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
