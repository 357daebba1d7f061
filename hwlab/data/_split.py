"""The ``Split`` container, deterministic stratified splitting and the ``batches`` iterator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from hwlab.errors import check, check_int, check_positive_int

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: images ``x`` (float32, N x C x H x W, in [0, 1]) and labels ``y``.

    Equality is identity (comparing tensors element-wise has no single truth value).
    """

    x: torch.Tensor  # float32, N x C x H x W, values in [0, 1]
    y: torch.Tensor  # int64, N
    classes: tuple[str, ...]  # class names, len = num_classes
    name: str = ""  # e.g. "mnist5k/train"

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        check(isinstance(x, torch.Tensor) and x.dim() == 4, "x", "Split",
              "a 4-d tensor N x C x H x W", getattr(x, "shape", type(x).__name__))
        check(isinstance(y, torch.Tensor) and y.dim() == 1 and len(y) == len(x), "y", "Split",
              f"a 1-d tensor of length {len(x)}", getattr(y, "shape", type(y).__name__))
        check(len(self.classes) >= 1, "classes", "Split", "a non-empty tuple", self.classes)
        check(x.is_floating_point(), "x", "Split", "a floating-point tensor", str(x.dtype))
        check(y.dtype == torch.int64, "y", "Split", "an int64 tensor of labels", str(y.dtype))
        if len(y):
            check(bool(torch.isfinite(x).all()), "x", "Split", "finite (no NaN or inf)",
                  f"{int((~torch.isfinite(x)).sum())} non-finite values")
            lo, hi = int(y.min()), int(y.max())
            check(lo >= 0 and hi < len(self.classes), "y", "Split",
                  f"labels in [0, {len(self.classes)}) (one per class name)",
                  f"labels from {lo} to {hi}")

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # (C, H, W)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int, seed: int = 0) -> Split:
        """The first ``n`` samples after a seeded shuffle, interleaved by class (stratified)."""
        n = check_positive_int(n, "n", "Split.subset")
        order = _stratified_order(self.y.cpu().numpy(), seed)[: min(n, len(self))]
        idx = torch.from_numpy(np.sort(order))
        return Split(self.x[idx], self.y[idx], self.classes, self.name)


def _stratified_order(y: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation in which the k-th sample of every class precedes the (k+1)-th of any."""
    perm = np.random.default_rng(seed).permutation(len(y))
    yp = y[perm]
    by_class = np.argsort(yp, kind="stable")  # positions grouped by class, shuffled within
    counts = np.bincount(yp, minlength=int(y.max(initial=0)) + 1)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.empty(len(y), dtype=np.int64)
    rank[by_class] = np.arange(len(y)) - starts  # rank of each sample within its class
    return perm[np.lexsort((np.arange(len(y)), rank))]


def _split_indices(y: np.ndarray, seed: int, fractions: tuple[float, ...]) -> list[np.ndarray]:
    """Disjoint stratified index sets, one per fraction (they sum to 1), each sorted.

    Per class, a seeded shuffle is cut at round(cumulative fraction * class size), so the splits
    keep the class proportions and the same seed always gives the same sets.
    """
    perm = np.random.default_rng(seed).permutation(len(y))
    yp = y[perm]
    by_class = perm[np.argsort(yp, kind="stable")]  # shuffled within class, classes in order
    counts = np.bincount(y)
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(y)) - np.repeat(starts, counts)  # rank of by_class[i] within its class
    size = np.repeat(counts, counts)
    cuts = np.cumsum(fractions)[:-1]
    bounds = np.round(np.outer(size, cuts))  # N x (k-1) cut points per sample's class
    part = (rank[:, None] >= bounds).sum(axis=1)
    return [np.sort(by_class[part == k]) for k in range(len(fractions))]


def _xy(data, caller: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Split):
        return data.x, data.y
    ok = isinstance(data, (tuple, list)) and len(data) == 2
    ok = ok and all(isinstance(t, torch.Tensor) for t in data) and len(data[0]) == len(data[1])
    check(ok, "data", caller, "a Split or an (x, y) pair of tensors of equal length",
          type(data).__name__)
    return data[0], data[1]


def batches(split_or_xy, batch_size: int, shuffle: bool = False, seed: int = 0,
            drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate ``(x, y)`` mini-batches of a Split or an ``(x, y)`` pair; no DataLoader needed.

    ``shuffle`` draws one permutation from a ``torch.Generator`` seeded with ``seed`` (the global
    RNG is untouched). ``drop_last`` drops a final batch smaller than ``batch_size``.
    """
    x, y = _xy(split_or_xy, "batches")
    batch_size = check_positive_int(batch_size, "batch_size", "batches")
    seed = check_int(seed, "seed", "batches")
    return _batches(x, y, batch_size, shuffle, seed, drop_last)


def _batches(x, y, batch_size, shuffle, seed, drop_last):
    n = len(y)
    perm = None
    if shuffle:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(y.device)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        if perm is None:
            yield x[i:i + batch_size], y[i:i + batch_size]  # views, no copy
        else:
            idx = perm[i:i + batch_size]
            yield x.index_select(0, idx), y.index_select(0, idx)
