"""Claim (#27): the progressive bit search identifies a flip in seconds on a CPU, and takes int8
models to chance with tens of flips where the same number of random flips costs little.

For int8 (``faultlab.quantize_int8``) lenet5 on mnist5k (zoo weights) and the zoo's CIFAR-style
resnet18 trained on mnist5k, ``bit_flip_attack`` runs from ``SEEDS`` attack batches (128 training
images each; the budget 60 flips, stop at 11 %); printed per model: its size, the flips to chance
(median and range over the seeds), seconds per identified flip (median), and the accuracy after
the same number of random flips (layer-uniform baseline, median over the seeds). Writes
benchmarks/results/faultlab_attack.json.

    HWLAB_HOME=hwlab-runs .venv/bin/python benchmarks/faultlab_attack.py
    MODELS=lenet5 SEEDS=3 .venv/bin/python benchmarks/faultlab_attack.py
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

import faultlab as fl
from hwlab import data, zoo
from hwlab.train import evaluate

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_attack.json"


def main(models, seeds: int) -> dict:
    torch.set_num_threads(1)
    train, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    out = {}
    for name in models:
        q = fl.quantize_int8(zoo.pretrained(name, "mnist5k").eval())
        bits = 8 * sum(p.numel() for n, p in q.named_parameters() if p.dtype == torch.int8)
        clean = evaluate(q, test)
        runs = []
        for seed in range(seeds):
            t0 = time.perf_counter()
            res = fl.bit_flip_attack(q, train, eval_data=test, flips=60, seed=seed)
            seconds = time.perf_counter() - t0
            with fl.inject(q, fl.random_flips(q, max(res.flips, 1), seed=seed)):
                random_acc = evaluate(q, test)
            runs.append({"seed": seed, "flips": res.flips, "reached": res.reached,
                         "final_accuracy": float(res.history.accuracy.iloc[-1]),
                         "seconds_per_flip": seconds / max(res.flips, 1),
                         "random_same_flips_accuracy": random_acc})
        to_chance = [r["flips"] for r in runs if r["reached"]]
        out[name] = {"int8_bits": bits, "clean_accuracy": clean, "runs": runs,
                     "flips_to_chance_median": statistics.median(to_chance) if to_chance else None,
                     "flips_to_chance_range": [min(to_chance), max(to_chance)] if to_chance else None,
                     "seconds_per_flip_median": statistics.median(r["seconds_per_flip"]
                                                                  for r in runs),
                     "random_accuracy_median": statistics.median(
                         r["random_same_flips_accuracy"] for r in runs)}
    return out


if __name__ == "__main__":
    models = os.environ.get("MODELS", "lenet5,resnet18").split(",")
    res = main(models, int(os.environ.get("SEEDS", "5")))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    for name, r in res.items():
        print(f"{name}: {r['int8_bits'] / 8e6:.2f} M int8 weights, clean {r['clean_accuracy']:.3f}; "
              f"PBS flips to <= 11 %: median {r['flips_to_chance_median']} range "
              f"{r['flips_to_chance_range']} ({sum(x['reached'] for x in r['runs'])}/"
              f"{len(r['runs'])} reached within 60); {r['seconds_per_flip_median']:.3f} s per "
              f"identified flip; the same number of random flips: accuracy "
              f"{r['random_accuracy_median']:.3f}")
    print(f"wrote {RESULTS}")
