"""Data of any shape -> validated ``(x, y)`` batches: ``iter_batches`` (streams) and ``as_xy``.

Every evaluator in hwlab and its method packages accepts the same four kinds of data:

* a :class:`~hwlab.data.Split`;
* an ``(x, y)`` pair of tensors (or NumPy arrays) of the same length;
* a ``torch.utils.data.DataLoader``;
* any other iterable of ``(x, y)`` batches (a generator, a list of pairs).

``iter_batches`` yields ``(x, y)`` with ``x`` floating point and finite (N x ...), ``y`` int64
1-d of the same length; in-memory data is cut into ``batch_size`` views, a DataLoader or iterable
is passed through batch by batch (its own batch size is kept), so memory stays bounded by one
batch. Bad data is an error in the hwlab template naming the caller, raised when the bad batch is
reached; no data at all is an error at the end of the iteration. ``as_xy`` materialises small data
(at most ``limit`` samples) as one pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from hwlab.errors import check, check_positive_int, fail, is_int

__all__ = ["as_xy", "iter_batches"]

_KINDS = "a hwlab.data.Split, an (x, y) pair, a DataLoader or an iterable of (x, y) batches"


def _tensor(a, what: str, caller: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    raise fail("data", caller, f"batches whose {what} is a tensor or NumPy array",
               type(a).__name__)


def _check_batch(x, y, caller: str, num_classes: int | None,
                 in_shape: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one batch; returns (x, y) with y as int64 (integer labels are widened)."""
    x, y = _tensor(x, "x", caller), _tensor(y, "y", caller)
    check(x.dim() >= 2, "data", caller, "inputs x of shape N x ...", tuple(x.shape))
    seq = y.dim() == 2  # token sequences: x and y are N x T ids (y = next token)
    check((y.dim() == 1 and len(y) == len(x)) or (seq and y.shape == x.shape), "data", caller,
          "labels y: a 1-d tensor as long as x (or, for token sequences, N x T like x)",
          (tuple(x.shape), tuple(y.shape)))
    if in_shape is not None:
        check(tuple(x.shape[1:]) == in_shape, "data", caller,
              f"batches of one sample shape {in_shape}", tuple(x.shape[1:]))
    check(x.is_floating_point() or (seq and not x.is_complex() and x.dtype != torch.bool),
          "data", caller, "floating-point inputs x (convert images to float in [0, 1]; "
          "integer token ids only with N x T targets)", str(x.dtype))
    check(not y.is_floating_point() and not y.is_complex() and y.dtype != torch.bool, "data",
          caller, "integer class labels y (int64)", str(y.dtype))
    if y.dtype != torch.int64:
        y = y.to(torch.int64)
    if len(y):
        if x.is_floating_point():
            check(bool(torch.isfinite(x).all()), "data", caller,
                  "finite inputs x (no NaN or inf)",
                  f"{int((~torch.isfinite(x)).sum())} non-finite values in a batch of {len(x)}")
        lo, hi = int(y.min()), int(y.max())
        top = "" if num_classes is None else f", {num_classes})"
        ok = lo >= 0 and (num_classes is None or hi < num_classes)
        check(ok, "data", caller, f"labels in [0{top or ', inf)'}",
              f"labels from {lo} to {hi}")
    return x, y


def _check_num_classes(num_classes, caller: str) -> None:
    check(num_classes is None or is_int(num_classes, 1), "num_classes", caller,
          "None or an integer >= 1", num_classes)


def _is_split(data) -> bool:
    from hwlab.data._split import Split
    from hwlab.data._text import TextSplit

    return isinstance(data, (Split, TextSplit))


def _is_pair(data) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in data))


def iter_batches(data, batch_size: int = 512, caller: str = "iter_batches",
                 num_classes: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Validated ``(x, y)`` batches from a Split, a pair, a DataLoader or an iterable of batches.

    ``batch_size`` cuts in-memory data (Split or pair; the batches are views, no copy); a
    DataLoader or iterable keeps its own batches. ``num_classes`` (default: ``len(classes)`` of a
    Split, else unchecked above) bounds the labels: ``0 <= y < num_classes``. ``caller`` names
    the public function in error messages. Validation happens as the batches are produced:
    the inputs must be floating point and finite, the labels integers, every batch the same
    sample shape; an iteration that yields no sample at all raises at its end.
    """
    batch_size = check_positive_int(batch_size, "batch_size", caller)
    _check_num_classes(num_classes, caller)
    if _is_split(data):
        return _iter_memory(data.x, data.y, batch_size, caller,
                            num_classes if num_classes is not None else data.num_classes)
    if _is_pair(data):
        x, y = _tensor(data[0], "x", caller), _tensor(data[1], "y", caller)
        return _iter_memory(x, y, batch_size, caller, num_classes)
    check(isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)), "data",
          caller, _KINDS, type(data).__name__)
    return _iter_stream(data, caller, num_classes)


def _iter_memory(x, y, batch_size, caller, num_classes):
    x, y = _check_batch(x, y, caller, num_classes, None)  # whole set checked once, up front
    check(len(y) > 0, "data", caller, "a non-empty dataset", "0 samples")

    def gen():
        for i in range(0, len(y), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]  # views, no copy

    return gen()


def _iter_stream(data, caller, num_classes):
    seen, in_shape = 0, None
    for i, batch in enumerate(data):
        ok = isinstance(batch, (tuple, list)) and len(batch) >= 2
        check(ok, "data", caller, f"{_KINDS}; batch {i} is not an (x, y) pair",
              type(batch).__name__)
        x, y = _check_batch(batch[0], batch[1], caller, num_classes, in_shape)
        in_shape = tuple(x.shape[1:])
        seen += len(y)
        if len(y):
            yield x, y
    check(seen > 0, "data", caller, "a non-empty dataset", "0 samples")


def as_xy(data, caller: str = "as_xy", limit: int | None = None,
          num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors of the data (validated as in :func:`iter_batches`), at most ``limit``.

    ``limit`` keeps at most that many samples: a stratified seeded subset for a Split
    (``Split.subset(limit)``), the first ``limit`` for a pair, a DataLoader or an iterable
    (which is read only as far as needed).
    """
    check(limit is None or is_int(limit, 1), "limit", caller, "None or an integer >= 1", limit)
    _check_num_classes(num_classes, caller)
    if _is_split(data):
        if limit is not None and limit < len(data):
            data = data.subset(limit)
        return _iter_memory(data.x, data.y, max(len(data), 1), caller,
                            num_classes if num_classes is not None else data.num_classes
                            ).__next__()
    if _is_pair(data):
        x, y = _tensor(data[0], "x", caller), _tensor(data[1], "y", caller)
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return next(_iter_memory(x, y, max(len(y), 1), caller, num_classes))
    xs, ys, n = [], [], 0
    for x, y in iter_batches(data, 1, caller, num_classes):
        if limit is not None and n + len(y) > limit:
            x, y = x[:limit - n], y[:limit - n]
        xs.append(x)
        ys.append(y)
        n += len(y)
        if limit is not None and n >= limit:
            break
    return torch.cat(xs), torch.cat(ys)
