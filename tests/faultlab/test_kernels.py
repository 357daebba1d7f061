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


def test_seed_state_is_numpys_seed_sequence():
    rng = np.random.default_rng(1)
    seeds = [0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**63 - 1, 2**64 - 1,
             *map(int, rng.integers(0, 2**63, 300, dtype=np.int64))]
    for s in seeds:
        want = int(np.random.SeedSequence(s).generate_state(1)[0])
        assert int(_kernels.seed_state(np.uint64(s))) == want, s


def test_draw_bits_matches_positions_mapped_by_numpy():
    sizes = np.array([7 * 32, 3 * 2, 50 * 32], dtype=np.int64)  # bits per parameter
    per_word = np.array([32, 2, 32], dtype=np.int64)  # the middle one: 2 eligible bits a word
    table = np.arange(32, dtype=np.int64)
    ends = np.cumsum(sizes)
    for seed, rate, count in ((3, 0.05, 0), (2**40 + 9, -1.0, 40), (7, 0.0, 0)):
        param, index, bit = _kernels.draw_bits(int(ends[-1]), rate, count, np.uint64(seed), -1,
                                               ends, per_word, table)
        s32 = int(np.random.SeedSequence(seed).generate_state(1)[0])
        pos = _kernels.bernoulli_positions(int(ends[-1]), rate, s32) if rate >= 0 else \
            _kernels.distinct_positions(int(ends[-1]), count, s32)
        _assert_mapped(param, index, bit, pos, sizes, per_word, table)
        if rate < 0:
            assert len(pos) == count
        if rate == 0:
            assert len(pos) == 0
    # an explicit state (seeds of 2**64 and more) seeds the generator as given
    got = _kernels.draw_bits(int(ends[-1]), 0.05, 0, np.uint64(0), 12345, ends, per_word, table)
    direct = _kernels.bernoulli_positions(int(ends[-1]), 0.05, 12345)
    assert len(direct) > 0
    _assert_mapped(*got, direct, sizes, per_word, table)


def _assert_mapped(param, index, bit, pos, sizes, per_word, table):
    """(param, index, bit) are the positions ``pos`` mapped by NumPy."""
    ends = np.cumsum(sizes)
    p = np.searchsorted(ends, pos, side="right")
    local = pos - (ends - sizes)[p]
    assert np.array_equal(param, p) and np.array_equal(index, local // per_word[p])
    assert np.array_equal(bit, table[local % per_word[p]])


def _entries(rng, n_params, sizes, widths, n):
    """Random sorted fault entries over parameters of the given sizes / widths."""
    param = np.sort(rng.integers(0, n_params, n)).astype(np.int32)
    index = np.array([rng.integers(0, sizes[p]) for p in param], dtype=np.int64)
    bit = np.array([rng.integers(0, widths[p]) for p in param], dtype=np.uint8)
    _, keep = np.unique(np.stack([param, index, bit]), axis=1, return_index=True)  # distinct bits
    param, index, bit = param[keep], index[keep], bit[keep]
    order = np.lexsort((index, param))
    kind = rng.integers(0, 3, len(param)).astype(np.int8)
    return param[order], index[order], bit[order], kind


def _numpy_reference(arrays, slots, ops, param, index, bit, kind):
    out = [a.copy() for a in arrays]
    for p, i, b, k in zip(param, index, bit, kind):
        w = out[slots[p]]
        one = w.dtype.type(1 << int(b))
        op = ops[k]
        if op == _kernels.OP_XOR:
            w[i] ^= one
        elif op == _kernels.OP_OR:
            w[i] |= one
        else:
            w[i] &= ~one
    return out


def test_inject_map_matches_numpy_on_mixed_widths_and_restores():
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 2**32, 40, dtype=np.uint64).astype(np.uint32),
              rng.integers(0, 2**16, 30, dtype=np.uint64).astype(np.uint16),
              rng.integers(0, 2**8, 20, dtype=np.uint64).astype(np.uint8)]
    before = [a.copy() for a in arrays]
    addr = np.array([a.ctypes.data for a in arrays], dtype=np.int64)
    width = np.array([32, 16, 8], dtype=np.int64)
    numel = np.array([40, 30, 20], dtype=np.int64)
    fast = np.ones(3, dtype=np.uint8)
    slots = np.array([2, 0, 1], dtype=np.int64)  # map parameter p lives in slot slots[p]
    ops = np.array([_kernels.OP_XOR, _kernels.OP_CLEAR, _kernels.OP_OR], dtype=np.int8)
    sizes, widths = [numel[s] for s in slots], [width[s] for s in slots]
    param, index, bit, kind = _entries(rng, 3, sizes, widths, 90)  # several bits per word
    # entries must be sorted by (slot, index): sort by slot through the slot table
    order = np.lexsort((index, slots[param]))
    param, index, bit, kind = param[order], index[order], bit[order], kind[order]
    expected = _numpy_reference(arrays, slots, ops, param, index, bit, kind)
    n = len(param)
    wslot, windex, saved = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.uint64)
    status, _, m, changed = _kernels.inject_map(addr, width, numel, fast, slots, ops, param, index,
                                                bit, kind, wslot, windex, saved)
    assert status == 0
    assert all(np.array_equal(a, e) for a, e in zip(arrays, expected))
    words = {(int(s), int(i)) for s, i in zip(slots[param], index)}
    assert m == len(words)  # one saved word per distinct (slot, index)
    flipped = sum(int(np.unpackbits((a ^ b).view(np.uint8)).sum()) for a, b in zip(arrays, before))
    assert changed == flipped > 0
    _kernels.restore_words_at(addr, width, wslot, windex, saved, m)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, before))


def test_inject_map_flags_bad_entries_without_writing():
    a = np.arange(8, dtype=np.uint32)
    addr, width = np.array([a.ctypes.data], np.int64), np.array([32], np.int64)
    numel, fast = np.array([8], np.int64), np.ones(1, np.uint8)
    slots, ops = np.zeros(1, np.int64), np.array([0, 2, 1], np.int8)
    out = (np.empty(4, np.int64), np.empty(4, np.int64), np.empty(4, np.uint64))

    def run(param, index, bit, kind, fast=fast):
        return _kernels.inject_map(addr, width, numel, fast, slots, ops,
                                   np.array(param, np.int32), np.array(index, np.int64),
                                   np.array(bit, np.uint8), np.array(kind, np.int8), *out)[:2]

    assert run([0, 0], [1, 8], [0, 0], [0, 0]) == (1, 1)  # element index out of range
    assert run([0, 0], [1, -1], [0, 0], [0, 0]) == (1, 1)
    assert run([0, 0], [1, 2], [3, 32], [0, 0]) == (2, 1)  # bit beyond the word
    assert run([0], [1], [0], [3]) == (3, 0)  # unknown kind
    assert run([1], [1], [0], [0]) == (6, 0)  # unknown parameter code
    assert run([0, 0], [5, 2], [0, 0], [0, 0]) == (4, 0)  # unsorted
    assert run([0], [5], [0], [0], fast=np.zeros(1, np.uint8)) == (5, 0)  # indexed path
    assert np.array_equal(a, np.arange(8, dtype=np.uint32))  # nothing written


def test_group_words_ors_masks_per_word():
    slot = np.array([0, 0, 0, 1, 1], np.int64)
    index = np.array([2, 2, 5, 2, 2], np.int64)
    bit = np.array([0, 3, 1, 7, 7], np.uint8)
    op = np.array([_kernels.OP_XOR, _kernels.OP_OR, _kernels.OP_CLEAR, _kernels.OP_XOR,
                   _kernels.OP_XOR], np.int8)
    out = [np.empty(5, np.int64), np.empty(5, np.int64)] + [np.empty(5, np.uint64)
                                                              for _ in range(3)]
    m = _kernels.group_words(slot, index, bit, op, *out)
    assert m == 3
    assert out[0][:3].tolist() == [0, 0, 1] and out[1][:3].tolist() == [2, 5, 2]
    assert out[2][:3].tolist() == [1, 0, 128]  # xor masks (a duplicate entry ORs, as reduceat)
    assert out[3][:3].tolist() == [8, 0, 0] and out[4][:3].tolist() == [0, 2, 0]
