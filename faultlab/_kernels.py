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
from numba import njit, types
from numba.extending import intrinsic

__all__ = [
    "OP_CLEAR",
    "OP_OR",
    "OP_XOR",
    "apply_masks",
    "bernoulli_positions",
    "distinct_positions",
    "draw_bits",
    "draw_inject",
    "group_words",
    "inject_map",
    "inject_words",
    "restore_rec",
    "restore_words",
    "restore_words_at",
    "seed_state",
]

# Operations of a fault entry on its bit: XOR (flip), OR (stuck-at-1), AND-NOT (stuck-at-0).
OP_XOR, OP_OR, OP_CLEAR = 0, 1, 2


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


# NumPy's SeedSequence constants (numpy/random/bit_generator.pyx; O'Neill's seed_seq design).
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _M32 = 0xCA01F9DD, 0x4973F715, 0xFFFFFFFF


@njit(cache=True, inline="always")
def _hashmix(value, h):
    """(hashed value, next hash constant), in 32-bit arithmetic held in uint64."""
    m32 = np.uint64(_M32)
    value = (value ^ h) & m32
    h = (h * np.uint64(_MULT_A)) & m32
    value = (value * h) & m32
    return value ^ (value >> np.uint64(16)), h


@njit(cache=True)
def seed_state(seed):
    """``np.random.SeedSequence(seed).generate_state(1)[0]`` for a seed in ``[0, 2**64)``.

    The seed's two 32-bit words (low first; a seed below 2**32 is one word, which SeedSequence
    pads with zeros to the same pool) are hashed into the 4-word pool and the first state word
    is drawn from it, as NumPy does; checked against NumPy in the tests.
    """
    seed = np.uint64(seed)
    words = (seed & np.uint64(_M32), seed >> np.uint64(32), np.uint64(0), np.uint64(0))
    pool = np.empty(4, np.uint64)
    h = np.uint64(_INIT_A)
    for i in range(4):
        pool[i], h = _hashmix(words[i], h)
    for src in range(4):
        for dst in range(4):
            if src != dst:
                v, h = _hashmix(pool[src], h)
                r = (np.uint64(_MIX_L) * pool[dst] - np.uint64(_MIX_R) * v) & np.uint64(_M32)
                pool[dst] = r ^ (r >> np.uint64(16))
    v = (pool[0] ^ np.uint64(_INIT_B)) & np.uint64(_M32)
    v = (v * np.uint64(_INIT_B * _MULT_B & _M32)) & np.uint64(_M32)
    return np.uint32(v ^ (v >> np.uint64(16)))


@njit(cache=True)
def draw_bits(total, rate, count, seed, state, ends, per_word, table):
    """One fault map's entries from a 64-bit seed, in one call: ``(param, index, bit)``.

    ``rate`` >= 0 draws :func:`bernoulli_positions`, else ``count`` :func:`distinct_positions`,
    both seeded with :func:`seed_state` of ``seed`` (uint64), or with ``state`` when it is
    >= 0 (the caller's own 32-bit state, for seeds of 2**64 and more); each position of the virtual concatenation
    is mapped to its parameter (``ends``: cumulative bit counts), element and bit
    (``per_word[p]`` eligible bits per word, their indices in ``table``). Sorted by position.
    """
    s = seed_state(seed) if state < 0 else np.uint32(state)
    pos = bernoulli_positions(total, rate, s) if rate >= 0.0 else \
        distinct_positions(total, count, s)
    n = pos.shape[0]
    param = np.empty(n, np.int32)
    index = np.empty(n, np.int64)
    bit = np.empty(n, np.uint8)
    p = 0
    for k in range(n):
        while pos[k] >= ends[p]:  # sorted positions: one pass over the parameters
            p += 1
        local = pos[k] - (ends[p - 1] if p > 0 else 0)
        nb = per_word[p]
        param[k] = p
        index[k] = local // nb
        bit[k] = table[local % nb]
    return param, index, bit


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


# -- many parameters in one call ------------------------------------------------------------------
# The word memory of several parameters is reached through their base addresses (int64, e.g.
# ``ndarray.ctypes.data`` or ``torch.Tensor.data_ptr()``) and word widths (8 / 16 / 32 bits), so one
# call serves every parameter of a map whatever its dtype. The caller keeps the memory alive and
# guarantees ``0 <= index < number of words`` (these kernels do not check).


def _pointer_cast(nbtype):
    ptr = types.CPointer(nbtype)

    @intrinsic
    def cast(typingctx, addr):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(ptr))
        return ptr(types.int64), codegen
    return cast


_u32_at, _u16_at, _u8_at = (_pointer_cast(t) for t in (types.uint32, types.uint16, types.uint8))


@njit(cache=True, inline="always")
def _load(addr, width, i):
    if width == 32:
        return np.uint64(_u32_at(addr)[i])
    if width == 16:
        return np.uint64(_u16_at(addr)[i])
    return np.uint64(_u8_at(addr)[i])


@njit(cache=True, inline="always")
def _store(addr, width, i, value):
    if width == 32:
        _u32_at(addr)[i] = np.uint32(value & np.uint64(0xFFFFFFFF))
    elif width == 16:
        _u16_at(addr)[i] = np.uint16(value & np.uint64(0xFFFF))
    else:
        _u8_at(addr)[i] = np.uint8(value & np.uint64(0xFF))


@njit(cache=True, inline="always")
def _next_word(slot, index, bit, op, k, n):
    """XOR / OR / clear masks of the run of entries that starts at ``k`` (one word); its end."""
    s = slot[k]
    i = index[k]
    x = np.uint64(0)
    o = np.uint64(0)
    c = np.uint64(0)
    while k < n and slot[k] == s and index[k] == i:
        b = np.uint64(1) << np.uint64(bit[k])
        if op[k] == OP_XOR:
            x |= b
        elif op[k] == OP_OR:
            o |= b
        else:
            c |= b
        k += 1
    return x, o, c, k


@njit(cache=True)
def group_words(slot, index, bit, op, wslot, windex, xor_mask, or_mask, clear_mask):
    """Group fault entries by word: one (slot, index, xor, or, clear) per run of equal words.

    Entries are sorted by (slot, index); ``op`` holds ``OP_XOR`` / ``OP_OR`` / ``OP_CLEAR``; masks
    of entries in the same word are OR-ed (as ``np.bitwise_or.reduceat``). Outputs have room for
    one word per entry (uint64 masks); returns the number ``m`` of distinct words written.
    """
    n = slot.shape[0]
    m = 0
    k = 0
    while k < n:
        s = slot[k]
        i = index[k]
        x, o, c, k = _next_word(slot, index, bit, op, k, n)
        wslot[m] = s
        windex[m] = i
        xor_mask[m] = x
        or_mask[m] = o
        clear_mask[m] = c
        m += 1
    return m


@njit(cache=True)
def inject_words(addr, width, slot, index, bit, op, wslot, windex, saved):
    """Apply sorted fault entries to the words of several parameters; save each word first.

    ``addr[s]`` / ``width[s]``: base address and word width of parameter slot ``s``; entries as in
    :func:`group_words`. Each distinct word is saved (``wslot``, ``windex``, ``saved`` as uint64)
    and set to ``((w ^ xor) | or) & ~clear``. Returns ``(m, changed)``: the number of words saved
    and the number of bits whose value changed.
    """
    n = slot.shape[0]
    m = 0
    changed = 0
    k = 0
    while k < n:
        s = slot[k]
        i = index[k]
        x, o, c, k = _next_word(slot, index, bit, op, k, n)
        a = addr[s]
        w = width[s]
        old = _load(a, w, i)
        new = ((old ^ x) | o) & ~c
        _store(a, w, i, new)
        wslot[m] = s
        windex[m] = i
        saved[m] = old
        m += 1
        diff = old ^ (new & ((np.uint64(1) << np.uint64(w)) - np.uint64(1)))
        while diff:  # popcount
            diff &= diff - np.uint64(1)
            changed += 1
    return m, changed


@njit(cache=True)
def restore_words_at(addr, width, wslot, windex, saved, m):
    """Write ``saved[:m]`` back (last saved first): the undo of :func:`inject_words`."""
    for k in range(m - 1, -1, -1):
        _store(addr[wslot[k]], width[wslot[k]], windex[k], saved[k])


@njit(cache=True)
def inject_map(addr, width, numel, fast, slots, ops, param, index, bit, kind, wslot, windex,
               saved):
    """Check a whole fault map, then apply it with :func:`inject_words` semantics: one call a map.

    ``param`` / ``index`` / ``bit`` / ``kind`` are the map's entries; ``slots[param]`` gives each
    entry's parameter slot and ``ops[kind]`` its operation (-1: unsupported kind). A first pass
    writes nothing and returns ``(status, k, 0, 0)`` at the first entry ``k`` that is out of range
    (status 1: element index, 2: bit, 3: kind, 6: parameter), or status 4 if the entries are not sorted by
    (slot, index), or 5 if an entry's slot is not ``fast``. Otherwise every distinct word is saved
    and rewritten and ``(0, 0, m, changed)`` is returned.
    """
    n = param.shape[0]
    prev_s = np.int64(-1)
    prev_i = np.int64(-1)
    unsorted = False
    slow = False
    for k in range(n):
        if param[k] < 0 or param[k] >= slots.shape[0]:
            return 6, k, 0, 0
        s = slots[param[k]]
        i = index[k]
        if i < 0 or i >= numel[s]:
            return 1, k, 0, 0
        if np.int64(bit[k]) >= width[s]:
            return 2, k, 0, 0
        if kind[k] < 0 or kind[k] >= ops.shape[0] or ops[kind[k]] < 0:
            return 3, k, 0, 0
        if s < prev_s or (s == prev_s and i < prev_i):
            unsorted = True
        if not fast[s]:
            slow = True
        prev_s = s
        prev_i = i
    if unsorted:
        return 4, 0, 0, 0
    if slow:
        return 5, 0, 0, 0
    slot = np.empty(n, np.int64)  # each entry's parameter slot and operation, then apply
    op = np.empty(n, np.int64)
    for k in range(n):
        slot[k] = slots[param[k]]
        op[k] = ops[kind[k]]
    m, changed = inject_words(addr, width, slot, index, bit, op, wslot, windex, saved)
    return 0, 0, m, changed


# -- draw and inject in one call ------------------------------------------------------------------
# ``tab`` packs a model's per-slot facts as rows of one int64 array (fewer arguments to unbox per
# call): 0 base address, 1 word width, 2 number of elements, 3 fast (1: reached by address).


@njit(cache=True)
def draw_inject(total, rate, count, seed, state, ends, per_word, table, kind, tab, slots, ops):
    """:func:`draw_bits`, then :func:`inject_map` of the drawn entries, in one call.

    The map's entries are ``(param, index, bit, kinds)`` (``kinds``: ``kind`` everywhere, int8).
    ``rec`` (uint64, 3 rows: slot, word index, saved word) is the restore record of
    :func:`restore_rec`. Returns ``(param, index, bit, kinds, rec, status, k, m, changed)`` with
    ``status``, ``k``, ``m``, ``changed`` of :func:`inject_map` (nothing is written unless
    ``status`` is 0).
    """
    param, index, bit = draw_bits(total, rate, count, seed, state, ends, per_word, table)
    n = param.shape[0]
    kinds = np.empty(n, np.int8)
    kinds[:] = kind
    rec = np.empty((3, n), np.uint64)
    status, k, m, changed = inject_map(tab[0], tab[1], tab[2], tab[3], slots, ops, param, index,
                                       bit, kinds, rec[0], rec[1], rec[2])
    return param, index, bit, kinds, rec, status, k, m, changed


@njit(cache=True)
def restore_rec(tab, rec, m):
    """Write the ``m`` saved words of ``rec`` back (last saved first): the undo of
    :func:`draw_inject` (as :func:`restore_words_at`)."""
    for k in range(m - 1, -1, -1):
        s = np.int64(rec[0, k])
        _store(tab[0, s], tab[1, s], np.int64(rec[1, k]), rec[2, k])
