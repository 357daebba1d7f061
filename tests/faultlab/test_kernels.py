"""The Numba kernels against NumPy references on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest

from faultlab import _kernels


@pytest.mark.parametrize("udtype", [np.uint8, np.uint16, np.uint32])
def test_apply_masks_matches_numpy_and_restores(udtype):
    rng = np.random.default_rng(0)
    bits = np.dtype(udtype).itemsize * 8
    words = rng.integers(0, 2**bits, size=50, dtype=np.uint64).astype(udtype)
    before = words.copy()
    index = np.array([0, 7, 19, 49], dtype=np.int64)
    x, o, c = (rng.integers(0, 2**bits, size=4, dtype=np.uint64).astype(udtype) for _ in range(3))
    saved = np.empty(4, dtype=udtype)
    changed = _kernels.apply_masks(words, index, x, o, c, saved)
    expected = before.copy()
    expected[index] = np.bitwise_and(np.bitwise_or(np.bitwise_xor(before[index], x), o), ~c)
    assert np.array_equal(words, expected)
    assert np.array_equal(saved, before[index])
    diff = np.bitwise_xor(before, words)
    assert changed == int(np.unpackbits(diff.view(np.uint8)).sum()) > 0
    _kernels.restore_words(words, index, saved)
    assert np.array_equal(words, before)


def test_xor_twice_is_identity_and_agrees_with_view():
    f = np.array([1.5, -2.25, 3.0e-8, 0.0], dtype=np.float32)
    view = f.view(np.uint32)
    ref = np.bitwise_xor(view, np.uint32(1 << 31))  # sign flips
    zero = np.zeros(4, dtype=np.uint32)
    saved = np.empty(4, dtype=np.uint32)
    idx = np.arange(4, dtype=np.int64)
    _kernels.apply_masks(view, idx, np.full(4, 1 << 31, np.uint32), zero, zero, saved)
    assert np.array_equal(view, ref)
    assert np.array_equal(f, np.array([-1.5, 2.25, -3.0e-8, -0.0], dtype=np.float32))
    _kernels.apply_masks(view, idx, np.full(4, 1 << 31, np.uint32), zero, zero, saved)
    assert np.array_equal(f.view(np.uint32), np.array([1.5, -2.25, 3.0e-8, 0.0],
                                                      dtype=np.float32).view(np.uint32))


def test_distinct_positions_exact_count_sorted_and_seeded():
    a = _kernels.distinct_positions(10**12, 1000, 5)
    assert a.shape == (1000,) and np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 10**12
    assert np.array_equal(a, _kernels.distinct_positions(10**12, 1000, 5))
    assert not np.array_equal(a, _kernels.distinct_positions(10**12, 1000, 6))
    assert np.array_equal(_kernels.distinct_positions(7, 7, 1), np.arange(7))
    assert _kernels.distinct_positions(7, 0, 1).shape == (0,)
    # Every subset of size 2 of 4 items appears equally often (6 subsets).
    seen = {}
    for s in range(3000):
        key = tuple(_kernels.distinct_positions(4, 2, s))
        seen[key] = seen.get(key, 0) + 1
    assert len(seen) == 6 and min(seen.values()) > 400 and max(seen.values()) < 600


def test_bernoulli_positions_edges_and_mean():
    assert _kernels.bernoulli_positions(100, 0.0, 1).shape == (0,)
    assert np.array_equal(_kernels.bernoulli_positions(5, 1.0, 1), np.arange(5))
    counts = np.array([_kernels.bernoulli_positions(1000, 0.02, s).shape[0] for s in range(500)])
    # Binomial(1000, 0.02): mean 20, variance 19.6; the mean of 500 has sd 0.198.
    assert abs(counts.mean() - 20.0) < 0.8
    assert 15.0 < counts.var(ddof=1) < 25.0
    p = _kernels.bernoulli_positions(10**6, 1e-3, 9)
    assert np.all(np.diff(p) > 0) and p.max() < 10**6
