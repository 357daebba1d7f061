"""faultlab test set-up: one torch thread, tiny seeded models (pytester comes from pyproject addopts)."""

from __future__ import annotations

import pytest
import torch


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


@pytest.fixture(scope="session")
def digits():
    """(train, test) splits of the 1,797 8x8 digits (test: 180 images)."""
    from hwlab.data import load

    return load("digits", "train"), load("digits", "test")


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """A small MLP (64-32-10) trained for 4 epochs on digits, in eval mode (~90 % test accuracy)."""
    from hwlab.models import create_model
    from hwlab.train import TrainConfig, fit

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=(32,))
    fit(model, digits[0], TrainConfig(epochs=4, batch_size=64, lr=3e-3, device="cpu"))
    return model.eval()


@pytest.fixture(scope="session")
def same_rows_as_reference():
    """``check(df, name)``: the study rows equal ``tests/faultlab/data/<name>.csv``, stored by
    the study's own trial loop before it moved onto the one trial engine (faultlab._engine):
    every column of the table, NaN where the old row had no value (a new row may add one)."""
    import json
    import math
    from pathlib import Path

    import pandas as pd

    def check(df, name):
        ref = pd.read_csv(Path(__file__).parent / "data" / f"{name}.csv")
        extra = df.extra.map(lambda e: json.loads(e) if isinstance(e, str) else (e or {}))
        got = df.assign(**{k: extra.map(lambda e, k=k: e.get(k)) for k in ref.columns
                           if k not in df.columns})
        got = got.sort_values("key").reset_index(drop=True)
        got = got[got.key.isin(set(ref.key))].reset_index(drop=True)  # variants added later
        assert got.key.tolist() == ref.key.tolist()
        for col in ref.columns:
            for key, want, have in zip(ref.key, ref[col], got[col]):
                if isinstance(want, float) and math.isnan(want):
                    continue  # not in the old row
                if isinstance(want, float):  # the old mitigation loop averaged in float32
                    assert float(have) == pytest.approx(want, rel=0, abs=1e-6), (key, col)
                else:
                    assert str(have) == str(want), (key, col, have, want)

    return check
