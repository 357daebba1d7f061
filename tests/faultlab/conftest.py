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


def float_platform() -> str:
    """A short hash of what one fixed float32 conv / linear / cross-entropy forward and backward
    computes on this CPU (one thread). The kernels torch, oneDNN and MKL pick differ between
    CPUs (AVX2 / AVX-512, Intel / AMD) and round differently, and a study's accuracies move by a
    few test images with them (measured: clipact-cap 0.94 -> 0.97 on an AMD EPYC with AVX-512),
    so exact stored rows are read on the platform that made them."""
    import hashlib

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 3, 16, 16, generator=g)
        w = torch.randn(8, 3, 3, 3, generator=g, requires_grad=True)
        lin = torch.randn(10, 8 * 14 * 14, generator=g, requires_grad=True)
        y = torch.nn.functional.conv2d(x, w).relu().flatten(1) @ lin.t()
        torch.nn.functional.cross_entropy(y, torch.arange(64) % 10).backward()
        h = hashlib.sha256()
        for t in (y.detach(), w.grad, lin.grad):
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:8]
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def same_rows_as_reference():
    """``check(df, name)``: the study rows equal ``tests/faultlab/data/<name>.csv``, stored by
    the study's own trial loop before it moved onto the one trial engine (faultlab._engine):
    every column of the table, NaN where the old row had no value (a new row may add one).

    On another float platform (:func:`float_platform`) the rows are read against
    ``<name>@<platform>.csv`` where one was stored (the same keys; written by running the test
    with ``HWLAB_WRITE_PLATFORM_REFERENCE=1`` on that platform)."""
    import json
    import math
    import os
    from pathlib import Path

    import pandas as pd

    platform = float_platform()

    def check(df, name):
        data = Path(__file__).parent / "data"
        ref = pd.read_csv(data / f"{name}.csv")
        own = data / f"{name}@{platform}.csv"
        if os.environ.get("HWLAB_WRITE_PLATFORM_REFERENCE") == "1":
            _write_platform_reference(df, ref, own)
        if own.exists():
            ref = pd.read_csv(own)
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


def _write_platform_reference(df, ref, path) -> None:
    """Store ``df``'s rows in ``ref``'s columns as this platform's reference (same keys). Not
    only accuracies move: the zoo weights trained here differ in their low bits, so every
    column that depends on the stored values (asymmetric maps, decoded ECC words, a hardening
    plan read from a vulnerability table) may differ too."""
    import json

    extra = df.extra.map(lambda e: json.loads(e) if isinstance(e, str) else (e or {}))
    got = df.assign(**{k: extra.map(lambda e, k=k: e.get(k)) for k in ref.columns
                       if k not in df.columns})
    got = got[got.key.isin(set(ref.key))].sort_values("key").reset_index(drop=True)
    assert got.key.tolist() == ref.key.tolist()
    got[list(ref.columns)].to_csv(path, index=False)
