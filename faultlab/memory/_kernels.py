"""Numba kernels of faultlab.memory: decoding sparse error patterns (no validation, no torch).

Errors arrive grouped by word in CSR form: the erroneous codeword bits of word ``w`` are
``bits[ptr[w]:ptr[w+1]]`` (distinct). Nothing is ever encoded or decoded for a word without
errors: the syndrome of a linear code is the XOR of the H columns of the erroneous bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["CLEAN", "CORRECTED", "DETECTED", "MISCORRECTED", "OUTCOMES", "SILENT",
           "decode_errors", "decode_sorted"]

# Outcome codes of one word.
CLEAN, CORRECTED, DETECTED, MISCORRECTED, SILENT = 0, 1, 2, 3, 4
OUTCOMES = ("clean", "corrected", "detected", "miscorrected", "silent")


@njit(cache=True)
def decode_errors(ptr, bits, columns, lookup, k, detects):
    """Decode each word's error pattern; return (outcome int8, data-bit diff uint64) per word.

    Syndrome ``s`` = XOR of ``columns[b]`` over the erroneous bits. ``s == 0``: no error seen
    (SILENT if there were errors). ``lookup[s] = j >= 0`` (a single-error syndrome): the decoder
    flips bit ``j``: CORRECTED when the error was exactly bit ``j``, else MISCORRECTED (the flip
    lands on a wrong bit or adds to the errors). Otherwise DETECTED (uncorrectable). ``diff`` is
    the XOR between the data the decoder delivers and the stored data (detected words: the
    corrupt data as received; the caller applies the "zero" policy). With ``detects`` False
    there is no decoder: every erroneous word is SILENT with its raw data errors.
    """
    n_words = ptr.shape[0] - 1
    outcome = np.zeros(n_words, dtype=np.int8)
    diff = np.zeros(n_words, dtype=np.uint64)
    one = np.uint64(1)
    for w in range(n_words):
        a, b = ptr[w], ptr[w + 1]
        if a == b:
            continue
        s = 0
        emask = np.uint64(0)
        for t in range(a, b):
            j = bits[t]
            s ^= columns[j]
            if j < k:
                emask |= one << np.uint64(j)
        diff[w] = emask
        if not detects or s == 0:
            outcome[w] = SILENT
        elif lookup[s] >= 0:
            j = lookup[s]
            if b - a == 1 and bits[a] == j:
                outcome[w] = CORRECTED
                diff[w] = np.uint64(0)
            else:
                outcome[w] = MISCORRECTED
                if j < k:
                    diff[w] = emask ^ (one << np.uint64(j))
        else:
            outcome[w] = DETECTED
    return outcome, diff


@njit(cache=True)
def decode_sorted(word, bits, columns, lookup, k, detects):
    """:func:`decode_errors` on errors sorted by word (``word[i]``, ``bits[i]``): returns the
    distinct words, their outcome and diff, and the count of each outcome (CLEAN unused)."""
    m = word.shape[0]
    n_words = 0
    for i in range(m):
        if i == 0 or word[i] != word[i - 1]:
            n_words += 1
    words = np.empty(n_words, dtype=np.int64)
    ptr = np.empty(n_words + 1, dtype=np.int64)
    w = 0
    for i in range(m):
        if i == 0 or word[i] != word[i - 1]:
            words[w] = word[i]
            ptr[w] = i
            w += 1
    ptr[n_words] = m
    outcome, diff = decode_errors(ptr, bits, columns, lookup, k, detects)
    counts = np.zeros(5, dtype=np.int64)
    for w in range(n_words):
        counts[outcome[w]] += 1
    return words, outcome, diff, counts
