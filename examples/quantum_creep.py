"""Let the quantum creep in, on digits: the same network at levels 0, 1 and 2, one budget.

Builds the Conv-Conv-Linear model, swaps its layer groups for PennyLane quantum layers with
``quantum.swap``, trains each level with ``hwlab.train.fit`` on the same seed and reports test
accuracy, parameter count and the fraction of parameters that are quantum gate coordinates.
Also checks the exact-kernel identity of the quantum convolution on a few patches.

    .venv/bin/python examples/quantum_creep.py [--epochs 10]
"""

from __future__ import annotations

import argparse

import torch

import quantum as q
from hwlab.data import load
from hwlab.meters import param_count
from hwlab.train import TrainConfig, evaluate, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    train, test = load("digits", "train"), load("digits", "test")
    with torch.random.fork_rng():
        torch.manual_seed(a.seed)
        base = q.creep_model(train.in_shape, train.num_classes)
    x = test.x[:2]
    conv = q.swap(base, 1)[1]
    exact = conv(base[0](x)).detach()
    slow = conv.reference_forward(base[0](x)[:, :, :5, :5])  # one circuit per patch
    print(f"exact kernel vs per-patch circuits: max |diff| = "
          f"{(exact[:, :, :3, :3] - slow).abs().max().item():.2e}")
    cfg = TrainConfig(epochs=a.epochs, batch_size=50, lr=a.lr, schedule="none", seed=a.seed)
    for level in range(q.max_level(base) + 1):
        with torch.random.fork_rng():
            torch.manual_seed(a.seed)
            model = q.swap(base, level)
        hist = fit(model, train, cfg)
        n_q = sum(dict(model.named_parameters())[n].numel() for n in q.quantum_parameters(model))
        print(f"level {level}: test accuracy {evaluate(model, test):.3f}, "
              f"params {param_count(model)} ({n_q} quantum), {hist.seconds:.1f} s")


if __name__ == "__main__":
    main()
