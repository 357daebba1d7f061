"""The memory view of a model: eligible parameters laid out word by word in rows and banks.

Order (documented contract): the eligible parameters (``faultlab.eligible_parameters``, i.e.
``named_parameters()`` order without biases / norm parameters by default), each flattened in
storage order (row-major, as ``param.reshape(-1)``), packed into data words of ``word_bits``
little-endian: element ``e`` of a parameter with ``w``-bit elements is in that parameter's word
``e // (word_bits / w)`` at data bits ``(e % (word_bits / w)) * w .. + w - 1``. Every parameter
starts a new word (tensors are allocated separately); the tail of its last word is padding
(stored zeros, which a code protects like any data). Word ``c`` of the model is codeword ``c``:
``n = word_bits + r`` stored bits (``r`` check bits of the code, 0 without one), data bits first.

Geometry: ``row_bits // word_bits`` words per row (row ``c // R``, slot ``c % R``); a row holds
``R * n`` physical columns. Without interleaving word slot ``s`` occupies columns
``s*n .. s*n + n - 1``; with ``interleave = m`` each group of ``m`` adjacent slots is interleaved
bit by bit: bit ``b`` of slot ``s`` is column ``(s // m) * m * n + b * m + s % m`` (so a burst of
``m`` adjacent cells hits ``m`` different words). Rows are spread over ``banks`` round-robin:
bank ``row % banks``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from faultlab._words import _DTYPE_NAMES, WORDS, eligible_parameters
from hwlab.errors import check, check_int

__all__ = ["MemoryLayout", "ModelMemory"]


@dataclass(frozen=True)
class MemoryLayout:
    """Geometry of the weight memory (see the module docstring for the exact mapping)."""

    word_bits: int = 64  # data bits per word/codeword: a DIMM's 64-bit bus word (39,32: 32)
    row_bits: int = 8192  # data bits per row: one 1 KiB DRAM page of a x8 DDR4 chip
    banks: int = 16  # DDR4 has 16 banks (4 bank groups x 4)
    interleave: int = 1  # words interleaved bit by bit within a row (1 = none)

    def __post_init__(self):
        c = "MemoryLayout"
        check(self.word_bits in (8, 16, 32, 64), "word_bits", c, "one of 8, 16, 32, 64",
              self.word_bits)
        check_int(self.row_bits, "row_bits", c, self.word_bits)
        check(self.row_bits % self.word_bits == 0, "row_bits", c,
              f"a multiple of word_bits ({self.word_bits})", self.row_bits)
        check_int(self.banks, "banks", c, 1)
        check_int(self.interleave, "interleave", c, 1)
        check((self.row_bits // self.word_bits) % self.interleave == 0, "interleave", c,
              f"a divisor of the {self.row_bits // self.word_bits} words per row",
              self.interleave)

    @property
    def words_per_row(self) -> int:
        return self.row_bits // self.word_bits

    def label(self) -> str:
        return f"w{self.word_bits}r{self.row_bits}b{self.banks}i{self.interleave}"

    def bind(self, model, check_bits: int = 0, layers=None, include_bias: bool = False,
             include_norm: bool = False, caller: str = "MemoryLayout.bind") -> ModelMemory:
        """The :class:`ModelMemory` of ``model``'s eligible parameters with ``check_bits``."""
        check_int(check_bits, "check_bits", caller, 0)
        chosen = eligible_parameters(model, layers, include_bias, include_norm, caller)
        widths = [WORDS[t.dtype][0] for _, t in chosen]
        for (name, t), w in zip(chosen, widths):
            check(self.word_bits % w == 0, "word_bits", caller,
                  f"a multiple of the {w}-bit elements of parameter {name!r}", self.word_bits)
        per_word = [self.word_bits // w for w in widths]
        numel = [t.numel() for _, t in chosen]
        words = [-(-n // p) for n, p in zip(numel, per_word)]  # ceil
        start = [0, *itertools.accumulate(words)][:-1]
        widths, per_word, numel, start, words = np.array(  # 5 x params, one conversion
            [widths, per_word, numel, start, words], dtype=np.int64)
        return ModelMemory(self, int(check_bits), tuple(n for n, _ in chosen),
                           tuple(_DTYPE_NAMES[t.dtype] for _, t in chosen),
                           tuple(t for _, t in chosen), widths, per_word, numel, start, words)


class ModelMemory:
    """A model's eligible parameters in memory: translation between memory and weights.

    Coordinates: *word / bit* (``bit`` in ``0 .. n-1``, check bits ``>= word_bits``), *row /
    column* (physical, ``column < row_width``), and *weights* (parameter index into ``names``,
    flat element index, bit of the element's word). Built by :meth:`MemoryLayout.bind`.
    """

    def __init__(self, layout, check_bits, names, dtypes, tensors, widths, per_word, numel,
                 start, words):
        self.layout, self.r = layout, check_bits
        self.names, self.dtypes, self.tensors = names, dtypes, tensors
        self.widths, self.per_word, self.numel = widths, per_word, numel
        self.start, self.param_words = start, words

    k = property(lambda self: self.layout.word_bits, doc="Data bits per word.")
    n = property(lambda self: self.layout.word_bits + self.r, doc="Stored bits per word.")
    words = property(lambda self: int(self.start[-1] + self.param_words[-1]),
                     doc="Words of the model.")
    rows = property(lambda self: -(-self.words // self.layout.words_per_row),
                    doc="Memory rows the model occupies.")
    row_width = property(lambda self: self.layout.words_per_row * self.n,
                         doc="Physical columns (cells) per row.")
    stored_bits = property(lambda self: self.words * self.n, doc="Every stored bit (n per word).")

    def to_weights(self, word, bit):
        """(param, element, bit of the element) of stored bits; param -1 for check / padding."""
        word, bit = np.asarray(word, dtype=np.int64), np.asarray(bit, dtype=np.int64)
        param = np.searchsorted(self.start + self.param_words, word, side="right")
        param = np.minimum(param, len(self.names) - 1)
        w = self.widths[param]
        elem = (word - self.start[param]) * self.per_word[param] + bit // w
        ok = (bit < self.k) & (elem < self.numel[param]) & (word < self.words) & (word >= 0)
        return np.where(ok, param, -1), np.where(ok, elem, -1), np.where(ok, bit % w, -1)

    def to_memory(self, param, element, bit):
        """(word, bit in the word) of weight bits (param indexes ``names``)."""
        param = np.asarray(param, dtype=np.int64)
        element = np.asarray(element, dtype=np.int64)
        pw = self.per_word[param]
        return (self.start[param] + element // pw,
                (element % pw) * self.widths[param] + np.asarray(bit, dtype=np.int64))

    def to_physical(self, word, bit):
        """(bank, row, column) of stored bits."""
        word, bit = np.asarray(word, dtype=np.int64), np.asarray(bit, dtype=np.int64)
        per_row, m, n = self.layout.words_per_row, self.layout.interleave, self.n
        row, slot = word // per_row, word % per_row
        col = (slot // m) * (m * n) + bit * m + slot % m
        return row % self.layout.banks, row, col

    def from_physical(self, row, col):
        """(word, bit) of physical cells; word -1 beyond the model's last word."""
        row, col = np.asarray(row, dtype=np.int64), np.asarray(col, dtype=np.int64)
        m, n = self.layout.interleave, self.n
        group, rem = col // (m * n), col % (m * n)
        slot = group * m + rem % m
        word = row * self.layout.words_per_row + slot
        return np.where(word < self.words, word, -1), rem // m

    def locate(self, row, col):
        """Weights behind physical cells: ``row, col, word, bit, param, index, weight_bit`` (a
        pandas DataFrame)."""
        import pandas as pd  # lazy: sample_faults / inject reach this module, pandas costs ~0.2 s

        word, bit = self.from_physical(row, col)
        p, e, b = self.to_weights(word, bit)
        names = np.asarray(self.names + ("",), dtype=object)
        return pd.DataFrame({"row": np.asarray(row), "col": np.asarray(col), "word": word,
                             "bit": bit, "param": names[p], "index": e, "weight_bit": b})

    def __repr__(self) -> str:
        return (f"ModelMemory({len(self.names)} parameters, {self.words} words of {self.n} "
                f"bits, {self.rows} rows x {self.row_width} cells, {self.layout.label()})")
