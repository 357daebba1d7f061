"""Per-worker preparation for campaign workers: load every Numba kernel once, before timing.

A fresh process (a ``process:N`` or Dask worker) pays for each ``@njit(cache=True)`` kernel on
its first call (reading the on-disk cache; compiling if there is none). :func:`warm_kernels`
makes those first calls on tiny arrays, so a worker does it once when it loads a campaign's
payload rather than inside its first trial's ``inject_ms``. Idempotent and cheap after the first
call (a few microseconds per kernel).
"""

from __future__ import annotations

import time

import numpy as np

from faultlab import _kernels

__all__ = ["warm_kernels"]


def warm_kernels() -> float:
    """Call every kernel of :mod:`faultlab._kernels` once on tiny inputs; seconds it took
    (0.0 when this process has loaded them already: a serial campaign's second call)."""
    kernels = [getattr(_kernels, n) for n in _kernels.__all__]
    if all(k.overloads for k in kernels if hasattr(k, "overloads")):
        return 0.0
    t0 = time.perf_counter()
    _kernels.seed_state(np.uint64(1))
    _kernels.bernoulli_positions(64, 0.1, 1)
    _kernels.distinct_positions(64, 3, 1)
    one = np.ones(1, np.int64)
    _kernels.draw_bits(64, 0.1, 0, np.uint64(1), -1, 64 * one, 32 * one, np.arange(32))
    words = np.zeros(4, dtype=np.uint32)
    addr = np.array([words.ctypes.data], dtype=np.int64)
    width, numel = np.array([32], np.int64), np.array([4], np.int64)
    slots, ops = np.zeros(1, np.int64), np.array([0, 2, 1], np.int8)
    param, index = np.zeros(1, np.int32), np.ones(1, np.int64)
    bit, kind = np.zeros(1, np.uint8), np.zeros(1, np.int8)
    wslot, windex, saved = np.empty(1, np.int64), np.empty(1, np.int64), np.empty(1, np.uint64)
    _, _, m, _ = _kernels.inject_map(addr, width, numel, np.ones(1, np.uint8), slots, ops, param,
                                     index, bit, kind, wslot, windex, saved)
    _kernels.restore_words_at(addr, width, wslot, windex, saved, m)
    _kernels.inject_words(addr, width, slots, index, bit, kind, wslot, windex, saved)
    _kernels.restore_words_at(addr, width, wslot, windex, saved, 1)
    masks = [np.empty(1, np.uint64) for _ in range(3)]
    _kernels.group_words(slots, index, bit, kind, wslot, windex, *masks)
    _kernels.apply_masks(words, index, words[:1], words[:1], words[:1], words[:1].copy())
    _kernels.restore_words(words, index, words[:1].copy())
    return time.perf_counter() - t0
