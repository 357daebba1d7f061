"""FT-ClipAct on LeNet-5 / mnist5k: which bits matter, then clip the activations and compare.

    .venv/bin/python examples/faultlab_clipact.py          # about 2-4 minutes on one core

1. Layer x bit vulnerability of the unprotected model (one flip per trial): bit 30 dominates.
2. FT-ClipAct thresholds searched on training images (cheap settings here; the study uses the
   paper's), Ranger bounds for comparison.
3. Accuracy under whole-network bit flips on fresh fault maps, side by side.
"""

from __future__ import annotations

import numpy as np
import torch

import faultlab as fl
from faultlab import clipact
from hwlab.data import load
from hwlab.train import evaluate
from hwlab.zoo import pretrained


def accuracy_under_faults(model, test, rate: float, maps: int) -> float:
    accs = []
    for k in range(maps):
        with fl.inject(model, fl.BitFlip(rate=rate), seed=90_000 + k):  # fresh seeds
            accs.append(evaluate(model, test))
    return float(np.mean(accs))


def main() -> None:
    torch.set_num_threads(1)
    model = pretrained("lenet5", "mnist5k")
    train, test = load("mnist5k", "train").subset(1000), load("mnist5k", "test")

    heat = fl.vulnerability(model, test, fault=1, bits=range(20, 32), trials=3, eval_size=200)
    print(heat.pivot(index="bit", columns="layer", values="accuracy").round(2))

    search = clipact.search_thresholds(model, train, mode="zero", maps=8, rounds=3,
                                       eval_size=300)
    print("searched thresholds:", {k: round(v, 3) for k, v in search.thresholds.items()})
    print("profiled maxima:   ", {k: round(v, 3) for k, v in search.profiled.items()})
    variants = {
        "unprotected": model,
        "clipact-zero": clipact.clip(model, search.thresholds, mode="zero"),
        "ranger": clipact.clip(model, search.profiled, mode="cap"),
    }
    for name, m in variants.items():
        row = [f"clean {evaluate(m, test):.3f}"]
        row += [f"{r:g}: {accuracy_under_faults(m, test, r, maps=10):.3f}" for r in (3e-5, 1e-4)]
        print(f"{name:13s}", "  ".join(row))


if __name__ == "__main__":
    main()
