"""Small seeded SNNs on sklearn digits, trained once per test session."""

from __future__ import annotations

import pytest
import torch

import spiking as sp
from hwlab.data import load
from hwlab.train import TrainConfig, fit


@pytest.fixture(scope="session")
def digits():
    return {s: load("digits", s, seed=0) for s in ("train", "val", "test")}


@pytest.fixture(scope="session")
def converted(digits):
    """A QCFS MLP (4 levels) trained 5 epochs on digits, then converted (~3 s)."""
    with torch.random.fork_rng(devices=[]):  # seeded init, whatever ran before
        torch.manual_seed(0)
        ann = sp.qcfs_net("mlp", digits["train"].in_shape, 10, levels=4)
    fit(ann, digits["train"], TrainConfig(epochs=5, batch_size=64, seed=0))
    return ann.eval(), sp.convert(ann)


@pytest.fixture(scope="session")
def direct(digits):
    """A rate-coded snntorch MLP trained 3 epochs with surrogate gradients over 4 steps (~1 s)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = sp.direct_net("mlp", digits["train"].in_shape, 10, encoding="rate")
    fit(sp.DirectTask(net, steps=4), digits["train"], TrainConfig(epochs=3, batch_size=64, seed=0))
    return net.eval()
