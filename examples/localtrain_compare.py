"""Train ResNet-20 on 8x8 digits end-to-end and with MAN (K = 2); compare accuracy and memory.

Uses only the public API: hwlab.data, hwlab.models, hwlab.train and localtrain.
Run: .venv/bin/python examples/localtrain_compare.py   (about a minute on one core)
"""

from __future__ import annotations

import torch

import localtrain as lt
from hwlab.data import load
from hwlab.models import create_model
from hwlab.train import TrainConfig, evaluate, fit


def main() -> None:
    torch.set_num_threads(1)
    train, test = load("digits", "train"), load("digits", "test")
    x, y = train.x[:128], train.y[:128]
    base = None
    for name in ("e2e", "man", "auglocal"):
        torch.manual_seed(0)
        model = create_model("resnet20", train.in_shape, train.num_classes)
        rule = lt.make_rule(name, model, K=2, in_shape=train.in_shape, balance="memory")
        fit(rule, train, TrainConfig(epochs=3, batch_size=64, seed=0))
        acc = evaluate(rule, test)
        mem = lt.measure_step(rule, x, y, repeats=3)
        base = base or mem
        print(f"{name:9s} cuts {rule.partition.unit_bounds}  test accuracy {acc:.3f}  memory "
              f"{mem['memory_bytes'] / 2**20:6.1f} MiB ({mem['memory_bytes'] / base['memory_bytes']:.2f}"
              f" of E2E)  params {mem['params']}")


if __name__ == "__main__":
    main()
