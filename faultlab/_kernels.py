"""Numba kernels of faultlab: plain functions on NumPy integer arrays (no validation, no torch).

Randomness is passed in as a seed: each sampling kernel seeds Numba's own generator (a per-thread
Mersenne Twister, separate from NumPy's global one) at its start, so the same seed gives the same
positions in any process.

Positions are indices into a *virtual concatenation* of all eligible bits (``0 .. total-1``); the
caller maps them back to (parameter, element, bit). Nothing here ever allocates per bit: the cost is
proportional to the number of positions drawn.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "apply_masks",
    "bernoulli_positions",
    "distinct_positions",
    "restore_words",
]


@njit(cache=True)
def bernoulli_positions(total, rate, seed):
    """Sorted positions in ``[0, total)``, each included independently with probability ``rate``.

    Geometric skipping: the gap before the next included position is ``floor(log(u) / log(1-rate))``
    with ``u ~ U(0, 1]`` (the number of failures before the first success of a Bernoulli(rate)
    sequence), so the count is Binomial(total, rate) and positions are distinct and uniform, at a
    cost proportional to the number drawn.
    """
    np.random.seed(seed)
    out = np.empty(16, dtype=np.int64)
    n = 0
    if rate <= 0.0 or total <= 0:
        return out[:0]
    if rate >= 1.0:
        return np.arange(total).astype(np.int64)
    log_q = np.log1p(-rate)  # log(1 - rate), accurate for tiny rates
    pos = -1
    while True:
        u = 1.0 - np.random.random()  # in (0, 1]
        skip = np.floor(np.log(u) / log_q)
        if skip >= total - pos - 1:  # also guards the float -> int conversion below
            break
        pos += 1 + np.int64(skip)
        if n == out.shape[0]:
            grown = np.empty(2 * n, dtype=np.int64)
            grown[:n] = out
            out = grown
        out[n] = pos
        n += 1
    return out[:n].copy()


@njit(cache=True)
def distinct_positions(total, count, seed):
    """``count`` distinct positions in ``[0, total)``, uniform over all subsets, sorted.

    Robert Floyd's algorithm (Bentley, "Programming Pearls", CACM 1987): for ``j`` from
    ``total - count`` to ``total - 1`` draw ``t`` in ``[0, j]`` and take ``t``, or ``j`` if ``t``
    was taken already. O(count) draws with a hash set; ``count <= total`` is the caller's job.
    """
    np.random.seed(seed)
    out = np.empty(count, dtype=np.int64)
    if count == 0:
        return out
    if count == total:
        return np.arange(total).astype(np.int64)
    taken = set()
    taken.add(np.int64(-1))  # gives the set its int64 type; -1 is never a position
    for k in range(count):
        j = total - count + k
        t = np.int64(np.random.randint(0, j + 1))
        if t in taken:
            t = np.int64(j)
        taken.add(t)
        out[k] = t
    out.sort()
    return out


@njit(cache=True)
def apply_masks(words, index, xor_mask, or_mask, clear_mask, saved):
    """Save ``words[index]`` into ``saved``, then set each to ``((w ^ xor) | or) & ~clear``.

    ``words`` is a 1-D unsigned view of a parameter's memory (uint8/16/32); the masks have the same
    dtype, one per distinct word in ``index``. Returns the number of bits that actually changed.
    """
    changed = 0
    for k in range(index.shape[0]):
        i = index[k]
        old = words[i]
        saved[k] = old
        new = ((old ^ xor_mask[k]) | or_mask[k]) & ~clear_mask[k]
        words[i] = new
        diff = np.uint64(old ^ new)
        while diff:  # popcount
            diff &= diff - np.uint64(1)
            changed += 1
    return changed


@njit(cache=True)
def restore_words(words, index, saved):
    """Write ``saved`` back to ``words[index]`` (undo of :func:`apply_masks`)."""
    for k in range(index.shape[0]):
        words[index[k]] = saved[k]
