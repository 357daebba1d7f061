"""Claim (#26): the training-time SDC detectors cost <= 5 % of a training step (lenet5 and
vit-tiny), and what each recovery policy's checkpoints cost without faults.

Per model (mnist5k, the zoo recipe's optimizer, batch 128, one torch thread), ``STEPS`` training
steps are timed, in turn, ``REPEATS`` times each: plain ``hwlab.train.fit`` (the baseline),
``faultlab.training`` with the default detectors (NaN/Inf, loss spike, gradient-norm spike,
moment bound) and policy ``none`` (the detectors' cost), with ``rollback`` (checkpoint every 10
steps) and with ``recompute`` (a checkpoint every step). No faults: every variant ends with the
same weights (checked). Printed: median seconds per step and the ratio to plain fit (median and
range of the per-repeat ratios). Writes benchmarks/results/faultlab_training_detectors.json.

    .venv/bin/python benchmarks/faultlab_training_detectors.py
    MODELS=lenet5 REPEATS=3 STEPS=20 .venv/bin/python benchmarks/faultlab_training_detectors.py
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

import faultlab as fl
from hwlab import data
from hwlab.models import resolve
from hwlab.train import fit
from hwlab.zoo import recipe_for

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_training_detectors.json"
VARIANTS = {"plain": None, "detectors": ("none", 10), "rollback": ("rollback", 10),
            "recompute": ("recompute", 1)}


def _time(base, train, cfg, variant):
    model = copy.deepcopy(base)
    spec = VARIANTS[variant]
    task = model if spec is None else fl.training(model, (), policy=spec[0],
                                                  checkpoint_every=spec[1])
    t0 = time.perf_counter()
    fit(task, train, cfg)
    return time.perf_counter() - t0, model


def main(models, repeats: int, steps: int) -> dict:
    torch.set_num_threads(1)
    train = data.load("mnist5k", "train")
    out = {}
    for name in models:
        torch.manual_seed(0)
        base = resolve(name, in_shape=train.in_shape, num_classes=train.num_classes)
        cfg = replace(recipe_for(name, "mnist5k").train_config(), epochs=1, batch_size=128,
                      device="cpu")
        sub = train.subset(steps * cfg.batch_size)
        _time(base, sub, cfg, "plain")  # warm-up
        secs = {v: [] for v in VARIANTS}
        finals = {}
        for _ in range(repeats):
            for v in VARIANTS:
                s, finals[v] = _time(base, sub, cfg, v)
                secs[v].append(s / steps)
        same = all(torch.equal(a, b) for v in VARIANTS for a, b in zip(
            finals[v].state_dict().values(), finals["plain"].state_dict().values()))
        res = {"steps": steps, "repeats": repeats, "identical_weights": same,
               "plain_ms_per_step": 1000 * statistics.median(secs["plain"])}
        for v in list(VARIANTS)[1:]:
            ratios = [a / b for a, b in zip(secs[v], secs["plain"])]
            res[v] = {"ms_per_step": 1000 * statistics.median(secs[v]),
                      "ratio_median": statistics.median(ratios),
                      "ratio_range": [min(ratios), max(ratios)]}
        out[name] = res
        print(f"{name}: plain {res['plain_ms_per_step']:.2f} ms/step, weights identical: {same}")
        for v in list(VARIANTS)[1:]:
            r = res[v]
            print(f"  {v:10s} {r['ms_per_step']:8.2f} ms/step  x{r['ratio_median']:.3f} "
                  f"(range {r['ratio_range'][0]:.3f}-{r['ratio_range'][1]:.3f})")
    return out


if __name__ == "__main__":
    models = os.environ.get("MODELS", "lenet5,vit-tiny").split(",")
    result = main(models, int(os.environ.get("REPEATS", "5")), int(os.environ.get("STEPS", "30")))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
