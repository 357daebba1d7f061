"""faultlab.memory._kernels.decode_errors against a NumPy reference on random error patterns."""

from __future__ import annotations

import numpy as np
import pytest

from faultlab.memory import CODES
from faultlab.memory import _kernels as K
from faultlab.memory._codes import BARE_72_64


def reference(bits_of_word, code):
    cols = np.asarray(code.columns, dtype=np.int64)
    s = int(np.bitwise_xor.reduce(cols[bits_of_word])) if len(bits_of_word) else 0
    data = sum(1 << int(b) for b in bits_of_word if b < code.k)
    if not len(bits_of_word):
        return K.CLEAN, 0
    if not code.detects or s == 0:
        return K.SILENT, data
    hit = np.flatnonzero(cols == s) if code.corrects else []
    if len(hit):
        j = int(hit[0])
        if list(bits_of_word) == [j]:
            return K.CORRECTED, 0
        return K.MISCORRECTED, data ^ ((1 << j) if j < code.k else 0)
    return K.DETECTED, data


@pytest.mark.parametrize("name", ["secded72_64", "secded39_32", "parity", "bare"])
def test_decode_errors_matches_reference(name):
    code = BARE_72_64 if name == "bare" else CODES[name]
    rng = np.random.default_rng(7)
    groups = [np.sort(rng.choice(code.n, size=int(rng.integers(0, 6)), replace=False))
              for _ in range(500)]
    ptr = np.concatenate([[0], np.cumsum([g.size for g in groups])]).astype(np.int64)
    bits = np.concatenate(groups).astype(np.int64)
    outcome, diff = K.decode_errors(ptr, bits, code.column_array(), code.lookup(), code.k,
                                    code.detects)
    want = [reference(g, code) for g in groups]
    assert outcome.tolist() == [w[0] for w in want]
    assert [int(d) for d in diff] == [w[1] for w in want]
    if code.corrects:
        assert {K.CORRECTED, K.DETECTED, K.MISCORRECTED} <= set(outcome.tolist())


def test_decode_sorted_groups_words_like_decode_errors():
    code = CODES["secded72_64"]
    rng = np.random.default_rng(3)
    word = np.sort(rng.integers(0, 50, size=120)).astype(np.int64)
    bits = rng.integers(0, 72, size=120).astype(np.int64)
    key = np.unique(word * 72 + bits)  # distinct (word, bit), sorted
    word, bits = key // 72, key % 72
    words, outcome, diff, counts = K.decode_sorted(word, bits, code.column_array(),
                                                   code.lookup(), 64, True)
    assert np.array_equal(words, np.unique(word))
    ptr = np.searchsorted(word, np.append(words, words[-1] + 1)).astype(np.int64)
    o2, d2 = K.decode_errors(ptr, bits, code.column_array(), code.lookup(), 64, True)
    assert np.array_equal(outcome, o2) and np.array_equal(diff, d2)
    assert counts.tolist() == np.bincount(o2, minlength=5).tolist()
