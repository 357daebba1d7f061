"""In-place injection of a :class:`FaultMap` into a model's parameter memory, with exact restore.

Only the faulty words are touched. The fast path (every CPU parameter whose memory is contiguous)
applies a whole map in ONE Numba call (:func:`faultlab._kernels.inject_words`): the entries, sorted
by (parameter, element), are grouped per word into XOR (flip) / OR (stuck-at-1) / AND-NOT
(stuck-at-0) masks inside the kernel, and each touched word is saved before it is rewritten, for
every parameter and dtype at once. What the kernel needs of a model (parameter order, base
addresses, word widths, sizes) is prepared once per model (:class:`faultlab._words.ModelViews`)
and reused for every map; a cheap signature (parameter identities and data pointers) is compared
on each use, so a model whose parameters were replaced or moved gets fresh views. A map's
validation (names, dtypes) is done once per (names, dtypes) and its bounds are checked vectorised
over all entries.

CUDA and non-contiguous tensors take the indexed torch path (gather, modify, scatter of the touched
words only; masks grouped by :func:`faultlab._kernels.group_words`). On exit, also after an
exception, the saved words are written back: every parameter is bit-identical to before; nested
injections restore in reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from faultlab import _kernels
from faultlab._faults import FAULT_MODELS, KINDS, BitFlip, FaultMap, StuckAt
from faultlab._plain import sampler
from faultlab._sample import _sample_faults
from faultlab._words import ModelViews, model_views
from hwlab.errors import check, check_int, fail

__all__ = ["apply_fault_map", "inject", "restore"]

# Kind code (index into KINDS) -> kernel operation; a kind without an entry is refused.
_OP_OF_KIND = {"flip": _kernels.OP_XOR, "stuck1": _kernels.OP_OR, "stuck0": _kernels.OP_CLEAR}
_OPS = np.array([_OP_OF_KIND.get(k, -1) for k in KINDS], dtype=np.int8)
_TORCH_WORD = {32: torch.int32, 16: torch.int16, 8: torch.int8}
_restore_rec = _kernels.restore_rec


@dataclass
class _Words:
    """Restore record of the one-call path: the saved words of every fast parameter of a map."""

    views: ModelViews  # keeps the memory alive
    wslot: np.ndarray
    windex: np.ndarray
    saved: np.ndarray  # uint64 old words
    m: int
    changed: int  # bits that actually changed value

    def restore(self) -> None:
        _kernels.restore_words_at(self.views.addr, self.views.width, self.wslot, self.windex,
                                  self.saved, self.m)


@dataclass
class _Indexed:
    """Restore record of the indexed torch path (one parameter): word indices and old words."""

    tensor: torch.Tensor
    where: tuple
    saved: torch.Tensor
    changed: int

    def restore(self) -> None:
        with torch.no_grad():
            self.tensor.detach().view(self.saved.dtype)[self.where] = self.saved


def _bad_entry(views, fmap, slots, status, k, caller):
    """The error for entry ``k`` that :func:`faultlab._kernels.inject_map` flagged."""
    if status == 6:
        return fail("fault_model_or_map", caller, f"parameter codes below {len(fmap.names)}",
                    int(fmap.param[k]))
    s = slots[fmap.param[k]]
    if status == 1:
        return fail("fault_model_or_map", caller,
                    f"element indices in [0, {views.numel[s]}) for parameter {views.names[s]!r}",
                    int(fmap.index[k]))
    if status == 2:
        return fail("fault_model_or_map", caller,
                    f"bit indices below the word width {views.width[s]} of parameter "
                    f"{views.names[s]!r}", int(fmap.bit[k]))
    return fail("fault_model_or_map", caller, f"a FaultMap of kinds {', '.join(_OP_OF_KIND)}",
                int(fmap.kind[k]))


def _sorted_entries(views, fmap, slots):
    """(slot, index)-sorted entries of a validated map: slot, index, bit, op."""
    slot = slots[fmap.param]
    order = np.lexsort((fmap.index, slot))
    return slot[order], fmap.index[order], fmap.bit[order], _OPS[fmap.kind[order]]


def _apply_fast(views, slot, index, bit, op) -> _Words:
    n = slot.shape[0]
    wslot, windex = np.empty(n, np.int64), np.empty(n, np.int64)
    saved = np.empty(n, np.uint64)
    m, changed = _kernels.inject_words(views.addr, views.width, slot, index, bit, op, wslot,
                                       windex, saved)
    return _Words(views, wslot, windex, saved, int(m), int(changed))


def _apply_indexed(views, slot, index, bit, op) -> list[_Indexed]:
    """Indexed torch path for the entries of non-fast parameters (CUDA, non-contiguous)."""
    n = slot.shape[0]
    wslot, windex = np.empty(n, np.int64), np.empty(n, np.int64)
    masks = [np.empty(n, np.uint64) for _ in range(3)]
    m = _kernels.group_words(slot, index, bit, op, wslot, windex, *masks)
    wslot, windex, masks = wslot[:m], windex[:m], [a[:m] for a in masks]
    bounds = np.flatnonzero(np.diff(wslot)) + 1
    out = []
    for part in np.split(np.arange(m), bounds):
        s = int(wslot[part[0]])
        t = views.params[s]
        width = int(views.width[s])
        ints = t.detach().view(_TORCH_WORD[width])
        where = tuple(torch.from_numpy(a).to(ints.device)
                      for a in np.unravel_index(windex[part], tuple(ints.shape)))
        sdtype = np.dtype(f"int{width}")
        x, o, c = (torch.from_numpy(a[part].astype(f"uint{width}").view(sdtype)).to(ints.device)
                   for a in masks)
        saved = ints[where].clone()
        ints[where] = ((saved ^ x) | o) & ~c
        diff = (saved ^ ints[where]).cpu().numpy().view(f"uint{width}")
        out.append(_Indexed(t, where, saved, int(np.unpackbits(diff.view(np.uint8)).sum())))
    return out


def restore(touched) -> None:
    """Write back every saved word (reverse order of application)."""
    for rec in reversed(touched):
        rec.restore()


def apply_fault_map(model: nn.Module, fmap: FaultMap, caller: str = "apply_fault_map",
                    views: ModelViews | None = None):
    """Apply ``fmap`` in place and return the records :func:`restore` needs.

    Each record has ``changed`` (bits that changed value). Validates the whole map first, so a bad
    map leaves the model untouched; if applying fails part way, what was applied is restored
    before the error propagates. ``views``: ``model_views(model)`` when the caller holds them.
    """
    check(isinstance(fmap, FaultMap), "fault_model_or_map", caller,
          "a BitFlip, StuckAt or FaultMap", fmap)
    views = views or model_views(model)
    slots = views.slots(fmap, caller)  # also for an empty map: a foreign map is refused
    n = len(fmap)
    if n == 0:
        return []
    wslot, windex, saved = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.uint64)
    # One call checks the whole map, then applies it (status 0) or writes nothing.
    status, k, m, changed = _kernels.inject_map(
        views.addr, views.width, views.numel, views.fast8, slots, _OPS, fmap.param, fmap.index,
        fmap.bit, fmap.kind, wslot, windex, saved)
    if status == 0:
        return [_Words(views, wslot, windex, saved, int(m), int(changed))]
    if status not in (4, 5):
        raise _bad_entry(views, fmap, slots, status, k, caller)
    slot, index, bit, op = _sorted_entries(views, fmap, slots)  # unsorted map or indexed path
    touched = []
    try:
        with torch.no_grad():
            fast = views.fast[slot]
            if fast.any():
                touched.append(_apply_fast(views, slot[fast], index[fast], bit[fast], op[fast]))
            if not fast.all():
                slow = ~fast
                touched.extend(_apply_indexed(views, slot[slow], index[slow], bit[slow],
                                              op[slow]))
    except BaseException:
        restore(touched)
        raise
    return touched


def inject(model: nn.Module, fault_model_or_map, seed: int = 0, layers=None,
           include_bias: bool = False, include_norm: bool = False):
    """Apply faults to ``model`` in place for the ``with`` block and yield the :class:`FaultMap`.

    ``fault_model_or_map`` is a :class:`BitFlip` / :class:`StuckAt` (a map is drawn with
    :func:`sample_faults` from ``seed``, ``layers``, ``include_bias``, ``include_norm``) or a
    :class:`FaultMap` to replay (then ``layers`` must be None). Flips XOR their bit, stuck-at-1 ORs
    it in, stuck-at-0 clears it (AND-NOT); only the faulty words are saved and rewritten, so the cost
    grows with the number of faults, not with the model. On exit, also after an exception, every
    parameter is bit-identical to before. Nested injections restore in reverse order.

    Nothing happens before the ``with`` block is entered (then the arguments are checked, the map
    drawn and applied). A symmetric BitFlip / StuckAt on a CPU model is drawn and applied in one
    kernel call (the same map as :func:`sample_faults`).
    """
    return _Injection(model, fault_model_or_map, seed, layers, include_bias, include_norm)


class _Injection:
    """The context manager of :func:`inject` (one use). ``drawn``: (views, rec, m) of a map drawn
    and applied in one kernel call (undone by :func:`faultlab._kernels.restore_rec`); ``touched``:
    the records of :func:`apply_fault_map` otherwise."""

    __slots__ = ("args", "drawn", "touched")

    def __init__(self, *args):
        self.args = args
        self.drawn = self.touched = None

    def __enter__(self) -> FaultMap:
        check(self.args is not None, "inject", "inject", "a context entered once",
              "a second with-block")
        model, fault_model_or_map, seed, layers, include_bias, include_norm = self.args
        self.args = None
        caller = "inject"
        check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
              type(model).__name__)
        views = model_views(model)  # checked once, for the draw and the injection
        if isinstance(fault_model_or_map, FaultMap):
            check(layers is None, "layers", caller, "None when a FaultMap is given", layers)
            fmap = fault_model_or_map
        elif isinstance(fault_model_or_map, (BitFlip, StuckAt)) \
                and not fault_model_or_map.asymmetric:  # the plain draw, applied in the same call
            if type(seed) is not int or seed < 0:  # the common case needs no conversion
                seed = check_int(seed, "seed", caller, 0)
            fmap, status, rec, m, _ = sampler(
                model, fault_model_or_map, layers, include_bias, include_norm, caller,
                views).draw_inject(fault_model_or_map, seed, caller, views, _OPS)
            if status == 0:
                self.drawn = (views, rec, m)  # the views keep the memory alive
                return fmap
        elif isinstance(fault_model_or_map, FAULT_MODELS):
            fmap = _sample_faults(model, fault_model_or_map, seed, layers, include_bias,
                                  include_norm, caller, views)
        else:
            raise fail("fault_model_or_map", caller, "a BitFlip, StuckAt or FaultMap",
                       fault_model_or_map)
        self.touched = apply_fault_map(model, fmap, caller, views)
        return fmap

    def __exit__(self, *exc) -> bool:
        drawn = self.drawn
        if drawn is not None:
            self.drawn = None
            _restore_rec(drawn[0].tab, drawn[1], drawn[2])
            return False
        touched, self.touched = self.touched, None
        if touched:
            for rec in reversed(touched):  # restore(touched)
                rec.restore()
        return False
