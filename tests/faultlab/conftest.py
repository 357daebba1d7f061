"""faultlab test set-up: pytester for the plugin tests, one torch thread, tiny seeded models."""

from __future__ import annotations

import pytest
import torch

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny():
    """Linear(8, 16) -> BatchNorm -> ReLU -> Linear(16, 4): 128 + 64 weights, seeded."""
    g = torch.Generator().manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                            torch.nn.Linear(16, 4))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m.eval()
