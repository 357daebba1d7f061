"""From memory events to an ordinary FaultMap: read stored words, decode, translate to weights.

An *event* is one faulty stored bit ``(word, bit, kind)`` (``kind`` indexes ``KINDS``: flip,
stuck0, stuck1) in a :class:`~faultlab.memory.ModelMemory`. :func:`build_map` merges events on
the same bit (flips XOR; a stuck-at overrides, the last one wins), and then

* without a code: translates the data-bit events to (parameter, element, bit) entries with their
  kind (padding bits are dropped);
* with a code: reads the stored data word of each touched word (only those), encodes its check
  bits, turns the events into the word's *effective* error pattern (a flip is an error, a
  stuck-at is one where the stored bit differs), decodes it (``_kernels.decode_errors``) and
  writes entries that leave exactly the word the decoder delivers: flips of the delivered-vs-
  stored difference, or, for a detected word under policy ``"zero"``, stuck-at-0 on its set data
  bits (the word reads 0). Word counts go to ``FaultMap.extra``.
"""

from __future__ import annotations

import numpy as np
import torch

from faultlab._faults import KINDS, FaultMap
from faultlab._words import WORDS
from faultlab.memory import _kernels
from faultlab.memory._codes import get_code
from faultlab.memory._ecc import POLICIES
from faultlab.memory._layout import MemoryLayout
from hwlab.errors import check, check_int_array

__all__ = ["build_map", "memory_map", "read_words", "stored_bits"]

FLIP, STUCK0, STUCK1 = (KINDS.index(k) for k in ("flip", "stuck0", "stuck1"))


def read_words(mem, words: np.ndarray) -> np.ndarray:
    """uint64 stored data words of ``words`` (distinct word indices); padding reads 0."""
    words = np.asarray(words, dtype=np.int64)
    out = np.zeros(words.shape[0], dtype=np.uint64)
    if not words.size:
        return out
    param = np.searchsorted(mem.start + mem.param_words, words, side="right")
    for p in np.unique(param):
        sel = np.flatnonzero(param == p)
        t, w, pw = mem.tensors[p], int(mem.widths[p]), int(mem.per_word[p])
        elem = ((words[sel] - mem.start[p])[:, None] * pw + np.arange(pw)[None, :])  # s x pw
        ok = elem < mem.numel[p]
        _, udtype, tdtype = WORDS[t.dtype]
        ints = t.detach().view(tdtype)
        flat = elem[ok]
        vals = np.zeros(elem.shape, dtype=np.uint64)
        if ints.device.type == "cpu" and ints.is_contiguous():  # a view: reads only `flat`
            vals[ok] = ints.view(-1).numpy().view(udtype)[flat]
        else:  # CUDA or strided: gather just these elements
            where = tuple(torch.from_numpy(a).to(ints.device)
                          for a in np.unravel_index(flat, tuple(ints.shape)))
            vals[ok] = ints[where].cpu().numpy().view(udtype).astype(np.uint64)
        shifts = (np.arange(pw, dtype=np.uint64) * np.uint64(w))[None, :]
        out[sel] = np.bitwise_or.reduce(vals << shifts, axis=1)
    return out


def stored_bits(mem, code, word, bit) -> np.ndarray:
    """The stored value (0/1, int8) of codeword bits (data read from the weights, check bits
    encoded from them); cost proportional to the number of distinct words asked."""
    word, bit = np.asarray(word, dtype=np.int64), np.asarray(bit, dtype=np.int64)
    uw, inv = np.unique(word, return_inverse=True)
    data = read_words(mem, uw)[inv]
    chk = code.encode(data) if code is not None and code.r else np.zeros_like(data)
    is_data = bit < mem.k
    shift = np.where(is_data, bit, bit - mem.k).astype(np.uint64)
    val = np.where(is_data, data, chk) >> shift
    return (val & np.uint64(1)).astype(np.int8)


def _merge(mem, word, bit, kind):
    """Distinct (word, bit) with the net kind of their events; net-zero flips dropped."""
    key = np.asarray(word, dtype=np.int64) * mem.n + np.asarray(bit, dtype=np.int64)
    kind = np.asarray(kind, dtype=np.int8)
    if key.size < 2 or (key[1:] > key[:-1]).all():  # distinct and sorted already
        return key // mem.n, key % mem.n, kind
    uk, inv = np.unique(key, return_inverse=True)
    flips = np.bincount(inv, weights=(kind == FLIP), minlength=uk.size).astype(np.int64) % 2
    stuck = kind != FLIP
    last = np.full(uk.size, -1, dtype=np.int64)  # index of the last stuck event per bit
    np.maximum.at(last, inv[stuck], np.flatnonzero(stuck))
    net = np.where(last >= 0, kind[np.maximum(last, 0)], FLIP).astype(np.int8)
    keep = (last >= 0) | (flips == 1)
    uk, net = uk[keep], net[keep]
    return uk // mem.n, uk % mem.n, net


def _entries(mem, word, bit, kind, seed, eligible, extra):
    if not word.size:
        return FaultMap(mem.names, mem.dtypes, np.zeros(0, np.int32), np.zeros(0, np.int64),
                        np.zeros(0, np.uint8), np.zeros(0, np.int8), int(eligible), int(seed),
                        extra)
    p, e, b = mem.to_weights(word, bit)
    ok = p >= 0
    p, e, b, kind = p[ok], e[ok], b[ok], np.asarray(kind, dtype=np.int8)[ok]
    order = np.lexsort((b, e, p))
    return FaultMap(names=mem.names, dtypes=mem.dtypes, param=p[order].astype(np.int32),
                    index=e[order].astype(np.int64), bit=b[order].astype(np.uint8),
                    kind=kind[order], eligible_bits=int(eligible), seed=int(seed), extra=extra)


def _bits_of(masks: np.ndarray, k: int):
    """(row index, bit) of every set bit of uint64 ``masks`` (k low bits)."""
    some = np.flatnonzero(masks)  # most decoded words deliver their stored data
    bits = np.arange(k, dtype=np.uint64)
    hit = ((masks[some, None] >> bits[None, :]) & np.uint64(1)).astype(bool)  # words x k
    rows, cols = np.nonzero(hit)
    return some[rows], cols.astype(np.int64)


def build_map(mem, code, policy, word, bit, kind, seed, eligible, extra=None) -> FaultMap:
    """A FaultMap that leaves exactly what memory (and its decoder, if any) delivers."""
    extra = dict(extra or {})
    word, bit, kind = _merge(mem, word, bit, kind)
    if code is None:
        extra["faulty_bits"] = int(word.size)
        return _entries(mem, word, bit, kind, seed, eligible, extra)
    if not (kind == FLIP).all():  # a stuck-at is an error only where it differs
        stored = stored_bits(mem, code, word, bit)
        effective = (kind == FLIP) | ((kind == STUCK0) & (stored == 1)) | \
            ((kind == STUCK1) & (stored == 0))
        word, bit = word[effective], bit[effective]  # sorted by (word, bit) from _merge
    words, outcome, diff, counts = _kernels.decode_sorted(
        word, bit, code.column_array(), code.lookup(), mem.k, code.detects)  # word is sorted
    extra.update(corrected_words=int(counts[1]), detected_words=int(counts[2]),
                 miscorrected_words=int(counts[3]), silent_words=int(counts[4]))
    extra.update(code=code.name, policy=policy, code_overhead=code.overhead,
                 faulty_bits=int(word.size), faulty_words=int(words.size))
    zero = (outcome == _kernels.DETECTED) & (policy == "zero")
    flips = np.where(zero, np.uint64(0), diff)
    extra["corrupted_words"] = int(np.count_nonzero(flips)) + int(np.count_nonzero(zero))
    if not extra["corrupted_words"]:  # every word delivered intact: an empty map
        return _entries(mem, word[:0], bit[:0], np.zeros(0, np.int8), seed, eligible, extra)
    rows, b_flip = _bits_of(flips, mem.k)
    w_out, b_out = [words[rows]], [b_flip]
    k_out = [np.full(rows.size, FLIP, dtype=np.int8)]
    if zero.any():  # the word reads 0: clear every set stored data bit
        zw = words[zero]
        rows, b_zero = _bits_of(read_words(mem, zw), mem.k)
        w_out.append(zw[rows])
        b_out.append(b_zero)
        k_out.append(np.full(rows.size, STUCK0, dtype=np.int8))
    return _entries(mem, np.concatenate(w_out), np.concatenate(b_out), np.concatenate(k_out),
                    seed, eligible, extra)


def memory_map(model, word, bit, kind="flip", code=None, policy="zero", layout=None,
               layers=None, include_bias: bool = False, include_norm: bool = False) -> FaultMap:
    """A FaultMap from faults given in memory coordinates (``word``, ``bit`` of the word; check
    bits are ``bit >= word_bits``), read through ``code`` (None, or a name of
    ``faultlab.memory.CODES``) with ``policy`` for detected words, over ``layout`` (default
    ``MemoryLayout(word_bits=k)``). ``kind``: one of ``flip``, ``stuck0``, ``stuck1`` or an
    array of them per fault. Use ``ModelMemory.from_physical`` for (row, column) cells."""
    c = "memory_map"
    spec = None if code is None else get_code(code, c)
    check(policy in POLICIES, "policy", c, f"one of {', '.join(POLICIES)}", policy)
    if layout is None:
        layout = MemoryLayout(word_bits=spec.k if spec else 64)
    check(isinstance(layout, MemoryLayout), "layout", c, "None or a MemoryLayout", layout)
    check(spec is None or layout.word_bits == spec.k, "layout", c,
          f"a MemoryLayout with word_bits={spec.k if spec else ''}", layout)
    mem = layout.bind(model, spec.r if spec else 0, layers, include_bias, include_norm, c)
    word = check_int_array(word, "word", c)  # 1.5 or NaN refused, never truncated
    bit = check_int_array(bit, "bit", c)
    check(word.shape == bit.shape and word.ndim == 1, "word and bit", c,
          "1-D arrays of one length", (word.shape, bit.shape))
    check(word.size == 0 or (word.min() >= 0 and word.max() < mem.words), "word", c,
          f"word indices in [0, {mem.words})", word.max() if word.size else word)
    check(bit.size == 0 or (bit.min() >= 0 and bit.max() < mem.n), "bit", c,
          f"bit indices in [0, {mem.n}) (check bits from {mem.k})", bit.max() if bit.size else bit)
    names = np.asarray(kind if not isinstance(kind, str) else [kind] * word.size)
    check(names.shape == word.shape and bool(np.isin(names, KINDS).all()), "kind", c,
          f"one of {', '.join(KINDS)} (or one per fault)", kind)
    codes = np.select([names == k for k in KINDS], range(len(KINDS))).astype(np.int8)
    return build_map(mem, spec, policy, word, bit, codes, 0, mem.stored_bits)
