"""Shared test set-up: one zoo cache per test run, so a zoo entry trains at most once."""

from __future__ import annotations

import os
from pathlib import Path

# Set before any hwlab import reads it. A fixed folder (not tmp_path) lets xdist workers share the
# zoo cache; the zoo's file lock keeps two workers from training the same entry at once.
os.environ.setdefault("HWLAB_HOME", str(Path(__file__).resolve().parent.parent / ".hwlab-test-home"))

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread per test process: CI has 2 cores shared by two xdist workers, and small
    torch work is faster single-threaded. Session scope so that module-scoped fixtures (trained
    models, study runs) get it too; the previous count is restored at the end."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
