"""In-place injection of a :class:`FaultMap` into a model's parameter memory, with exact restore.

Only the faulty words are touched: per parameter the map's entries are grouped by word into three
masks (XOR for flips, OR for stuck-at-1, AND-NOT for stuck-at-0), the touched words are saved and
rewritten (Numba kernel on the CPU through a NumPy view that shares the parameter's memory; indexed
torch ops on CUDA or for non-contiguous tensors, so nothing is copied whole), and written back on
exit, also after an exception.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from faultlab import _kernels
from faultlab._faults import FAULT_MODELS, KINDS, FaultMap
from faultlab._sample import _DTYPE_NAMES, WORDS, _sample_faults
from hwlab.errors import check, fail

__all__ = ["apply_fault_map", "inject", "restore"]

_FLIP, _STUCK0, _STUCK1 = (KINDS.index(k) for k in ("flip", "stuck0", "stuck1"))


@dataclass
class _Touched:
    """What one parameter needs for restore: its tensor, the word indices and their old values."""

    tensor: torch.Tensor
    index: np.ndarray  # int64 flat word indices, distinct, sorted
    saved: object  # NumPy array (CPU path) or torch tensor (indexed path)
    numpy_path: bool
    changed: int  # bits that actually changed value


def _word_masks(fmap: FaultMap, sel: np.ndarray, udtype):
    """Distinct word indices of entries ``sel`` and their (xor, or, clear) masks in ``udtype``."""
    sel = sel[np.argsort(fmap.index[sel], kind="stable")]  # sampled maps are sorted already
    index = fmap.index[sel]
    words, start = np.unique(index, return_index=True)  # first entry of each word's run
    one = np.left_shift(np.uint64(1), fmap.bit[sel].astype(np.uint64))
    kind = fmap.kind[sel]
    masks = []
    for code in (_FLIP, _STUCK1, _STUCK0):
        part = np.where(kind == code, one, np.uint64(0))
        masks.append(np.bitwise_or.reduceat(part, start).astype(udtype))
    return words.astype(np.int64), masks


def _validate(model: nn.Module, fmap: FaultMap, caller: str):
    """Map each faulty parameter to its tensor; reject a map that does not fit this model."""
    params = dict(model.named_parameters())
    per = np.bincount(fmap.param, minlength=len(fmap.names)) if len(fmap) else \
        np.zeros(len(fmap.names), dtype=np.int64)
    out = []
    for i, (name, dtype) in enumerate(zip(fmap.names, fmap.dtypes)):
        check(name in params, "fault_model_or_map", caller,
              "a FaultMap of this model's parameters", f"a map naming unknown parameter {name!r}")
        t = params[name]
        check(t.dtype in WORDS and _DTYPE_NAMES[t.dtype] == dtype, "fault_model_or_map", caller,
              "a FaultMap drawn for parameters of the same dtype",
              f"{dtype} for parameter {name!r} of dtype {str(t.dtype).replace('torch.', '')}")
        if per[i] == 0:
            continue
        sel = np.flatnonzero(fmap.param == i)
        width = WORDS[t.dtype][0]
        check(int(fmap.index[sel].max()) < t.numel(), "fault_model_or_map", caller,
              f"element indices below {t.numel()} for parameter {name!r}",
              int(fmap.index[sel].max()))
        check(int(fmap.bit[sel].max()) < width, "fault_model_or_map", caller,
              f"bit indices below the word width {width} of parameter {name!r}",
              int(fmap.bit[sel].max()))
        out.append((t, sel))
    return out


def _apply_one(t: torch.Tensor, fmap: FaultMap, sel: np.ndarray) -> _Touched:
    width, udtype, tdtype = WORDS[t.dtype]
    words, (x, o, c) = _word_masks(fmap, sel, udtype)
    data = t.detach()
    if data.device.type == "cpu" and data.is_contiguous():
        flat = data.view(tdtype).view(-1).numpy().view(udtype)  # shares the parameter's memory
        saved = np.empty(words.shape[0], dtype=udtype)
        changed = _kernels.apply_masks(flat, words, x, o, c, saved)
        return _Touched(t, words, saved, True, int(changed))
    # Indexed torch path (CUDA, or a non-contiguous CPU tensor): gather, modify, scatter the
    # touched words only.
    ints = data.view(tdtype)
    where = tuple(torch.from_numpy(a).to(ints.device)
                  for a in np.unravel_index(words, tuple(ints.shape)))
    sdtype = np.dtype(f"int{width}")

    def signed(m):
        return torch.from_numpy(m.view(sdtype)).to(ints.device)

    saved = ints[where].clone()
    ints[where] = ((saved ^ signed(x)) | signed(o)) & ~signed(c)
    diff = (saved ^ ints[where]).cpu().numpy().view(udtype)
    changed = int(np.unpackbits(diff.view(np.uint8)).sum())
    return _Touched(t, words, saved, False, changed)


def _restore_one(rec: _Touched) -> None:
    _width, udtype, tdtype = WORDS[rec.tensor.dtype]
    data = rec.tensor.detach()
    if rec.numpy_path:
        _kernels.restore_words(data.view(tdtype).view(-1).numpy().view(udtype), rec.index,
                               rec.saved)
        return
    ints = data.view(tdtype)
    where = tuple(torch.from_numpy(a).to(ints.device)
                  for a in np.unravel_index(rec.index, tuple(ints.shape)))
    ints[where] = rec.saved


def restore(touched) -> None:
    """Write back every saved word (reverse order of application)."""
    for rec in reversed(touched):
        _restore_one(rec)


def apply_fault_map(model: nn.Module, fmap: FaultMap, caller: str = "apply_fault_map"):
    """Apply ``fmap`` in place and return the records :func:`restore` needs.

    Validates the whole map first, so a bad map leaves the model untouched; if applying fails part
    way, what was applied is restored before the error propagates.
    """
    check(isinstance(fmap, FaultMap), "fault_model_or_map", caller,
          "a BitFlip, StuckAt or FaultMap", fmap)
    plan = _validate(model, fmap, caller)
    touched = []
    try:
        with torch.no_grad():
            for t, sel in plan:
                touched.append(_apply_one(t, fmap, sel))
    except BaseException:
        restore(touched)
        raise
    return touched


@contextmanager
def inject(model: nn.Module, fault_model_or_map, seed: int = 0, layers=None,
           include_bias: bool = False, include_norm: bool = False):
    """Apply faults to ``model`` in place for the ``with`` block and yield the :class:`FaultMap`.

    ``fault_model_or_map`` is a :class:`BitFlip` / :class:`StuckAt` (a map is drawn with
    :func:`sample_faults` from ``seed``, ``layers``, ``include_bias``, ``include_norm``) or a
    :class:`FaultMap` to replay (then ``layers`` must be None). Flips XOR their bit, stuck-at-1 ORs
    it in, stuck-at-0 clears it (AND-NOT); only the faulty words are saved and rewritten, so the cost
    grows with the number of faults, not with the model. On exit, also after an exception, every
    parameter is bit-identical to before. Nested injections restore in reverse order.
    """
    caller = "inject"
    if isinstance(fault_model_or_map, FaultMap):
        check(layers is None, "layers", caller, "None when a FaultMap is given", layers)
        fmap = fault_model_or_map
    elif isinstance(fault_model_or_map, FAULT_MODELS):
        fmap = _sample_faults(model, fault_model_or_map, seed, layers, include_bias, include_norm,
                              caller)
    else:
        raise fail("fault_model_or_map", caller, "a BitFlip, StuckAt or FaultMap",
                   fault_model_or_map)
    touched = apply_fault_map(model, fmap, caller)
    try:
        yield fmap
    finally:
        with torch.no_grad():
            restore(touched)
