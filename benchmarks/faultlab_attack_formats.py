"""Claim (#27): the progressive bit search takes lenet5 to chance whichever integer format stores
its weights: int8, int4 and mxint8 element codes of ``faultlab.quantize`` (the block scales of
mxint8 are not attacked).

For lenet5 on mnist5k (zoo weights), per format: the clean accuracy, the PBS flips to <= 11 %
over ``SEEDS`` attack batches (budget ``BUDGET`` flips; median and range) and the accuracy after
the same number of random flips of the same words (layer-uniform, median over the seeds).
Writes benchmarks/results/faultlab_attack_formats.json.

    SEEDS=5 .venv/bin/python benchmarks/faultlab_attack_formats.py
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import torch

import faultlab as fl
from hwlab import data, zoo
from hwlab.train import evaluate

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_attack_formats.json"


def main(formats, seeds: int, budget: int) -> dict:
    torch.set_num_threads(1)
    train, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    float_model = zoo.pretrained("lenet5", "mnist5k").eval()
    out = {}
    for fmt in formats:
        q = fl.quantize(float_model, fmt)
        clean = evaluate(q, test)
        runs = []
        for seed in range(seeds):
            res = fl.bit_flip_attack(q, train, eval_data=test, flips=budget, seed=seed)
            with fl.inject(q, fl.random_flips(q, max(res.flips, 1), seed=seed)):
                random_acc = evaluate(q, test)
            runs.append({"seed": seed, "flips": res.flips, "to_target": res.flips_to_target,
                         "reached": res.reached, "hamming": len(res.fmap),
                         "final_accuracy": float(res.history.accuracy.iloc[-1]),
                         "random_same_flips_accuracy": random_acc})
            print(fmt, runs[-1], flush=True)
        hit = [r["to_target"] for r in runs if r["reached"]]
        out[fmt] = {"clean_accuracy": clean, "runs": runs,
                    "flips_to_chance_median": statistics.median(hit) if hit else None,
                    "flips_to_chance_range": [min(hit), max(hit)] if hit else None,
                    "reached": len(hit),
                    "random_accuracy_median": statistics.median(
                        r["random_same_flips_accuracy"] for r in runs)}
    return out


if __name__ == "__main__":
    formats = os.environ.get("FORMATS", "int8,int4,mxint8").split(",")
    res = main(formats, int(os.environ.get("SEEDS", "5")), int(os.environ.get("BUDGET", "80")))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    for fmt, r in res.items():
        print(f"{fmt}: clean {r['clean_accuracy']:.3f}; PBS flips to <= 11 %: median "
              f"{r['flips_to_chance_median']} range {r['flips_to_chance_range']} "
              f"({r['reached']}/{len(r['runs'])}); the same random flips: accuracy "
              f"{r['random_accuracy_median']:.3f}")
    print(f"wrote {RESULTS}")
