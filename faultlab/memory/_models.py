"""Memory-level fault models: multi-bit bursts and row / column / bank faults over a layout.

Each is a :class:`~faultlab.FaultModel` drawn over *units* of the model's memory
(:class:`~faultlab.memory.ModelMemory`): cells where a burst starts, rows, (bank, column) bit
lines, banks. A unit is faulty with probability ``rate`` independently (geometric skipping, cost
proportional to the faulty units) or exactly ``count`` distinct units are; every stored bit a
faulty unit covers gets the fault ``kind`` (``"flip"``, ``"stuck0"`` or ``"stuck1"``). Wrapped in
``ECC(code, ...)`` the bits include the check bits and the decoder sees them.

``count`` draws among the units that hold some of the model's stored words (:meth:`_live`):
banks, bit lines and burst starts beyond the model's last word (a small model fills one row of
one bank) are never drawn, so ``count=1`` always hits the model. Rates are per unit of the whole
memory; a unit that holds nothing simply adds nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from faultlab._faults import KINDS, FaultModel, _check_rate_count
from faultlab.memory._layout import MemoryLayout
from hwlab.errors import check, check_int

__all__ = ["BankFault", "Burst", "ColumnFault", "MemoryFault", "RowFault"]


def _check_common(model, caller):
    _check_rate_count(model.rate, model.count, caller)
    if model.rate is not None:
        object.__setattr__(model, "rate", float(model.rate))
    check(model.kind in KINDS, "kind", caller, f"one of {', '.join(KINDS)}", model.kind)
    check(model.layout is None or isinstance(model.layout, MemoryLayout), "layout", caller,
          "None or a faultlab.memory.MemoryLayout", model.layout)


def _span(first, count):
    """Concatenated ``arange(first[i], first[i] + count[i])`` (vectorised), and the owner i."""
    count = np.asarray(count, dtype=np.int64)
    owner = np.repeat(np.arange(count.size), count)
    offs = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    return np.asarray(first, dtype=np.int64)[owner] + offs, owner


def _row_bits(mem, rows):
    """(word, bit) of every stored bit of ``rows``."""
    per = mem.layout.words_per_row
    first = rows * per
    words, _ = _span(first, np.clip(mem.words - first, 0, per))
    return np.repeat(words, mem.n), np.tile(np.arange(mem.n, dtype=np.int64), words.size)


class MemoryFault(FaultModel):
    """Base of the unit-based memory fault models (``rate`` / ``count`` per unit, ``kind``)."""

    bits = None  # every stored bit of a unit is hit; no restriction by bit position

    def _rates(self):
        return np.array([self.rate if self.rate is not None else 1.0])

    def _classes(self, mem, code, units):
        return np.zeros(np.asarray(units).shape[0], dtype=np.int64)

    def with_rate(self, rate):
        check(self.rate is not None, "fault_model", "with_rate",
              "a fault model with a rate (not a count)", self)
        return dataclasses.replace(self, rate=rate)

    def to_dict(self) -> dict:
        d = {"fault": self.label, "rate": self.rate, "count": self.count, "kind": self.kind}
        if getattr(self, "length", None) is not None:
            d["length"] = self.length
        if self.layout is not None:
            d["layout"] = self.layout.label()
        return d

    def _kinds(self, size):
        return np.full(size, KINDS.index(self.kind), dtype=np.int8)

    def _live(self, mem) -> tuple[int, np.ndarray | None]:
        """The units that hold stored words: all of ``[0, prefix)`` and the sorted ``extra``
        units after it (None: none). Every row holds a word, so rows are all live."""
        return self._total(mem), None


def _live_columns(mem, row: int) -> np.ndarray:
    """Mask of the physical columns of ``row`` that hold a stored bit of the model."""
    word, _ = mem.from_physical(np.full(mem.row_width, row), np.arange(mem.row_width))
    return word >= 0


@dataclass(frozen=True)
class RowFault(MemoryFault):
    """A whole memory row reads flipped / stuck: each row is faulty with ``rate`` (per row)."""

    rate: float | None = None  # probability that a row is faulty
    count: int | None = None  # exact number of faulty rows instead of a rate
    kind: str = "flip"  # what every cell of a faulty row does: flip, stuck0, stuck1
    layout: MemoryLayout | None = None  # None: MemoryLayout() (or the ECC's)

    def __post_init__(self):
        _check_common(self, "RowFault")

    label = property(lambda self: f"row-{self.kind}")

    def _total(self, mem):
        return mem.rows

    def _expand(self, mem, code, units, cls):
        word, bit = _row_bits(mem, np.asarray(units, dtype=np.int64))
        return word, bit, self._kinds(word.size)


@dataclass(frozen=True)
class BankFault(MemoryFault):
    """A whole bank reads flipped / stuck: each bank is faulty with ``rate`` (per bank)."""

    rate: float | None = None  # probability that a bank is faulty
    count: int | None = None  # exact number of faulty banks (e.g. 1)
    kind: str = "flip"  # what every cell of a faulty bank does
    layout: MemoryLayout | None = None

    def __post_init__(self):
        _check_common(self, "BankFault")

    label = property(lambda self: f"bank-{self.kind}")

    def _total(self, mem):
        return mem.layout.banks

    def _live(self, mem):
        return min(mem.layout.banks, mem.rows), None  # bank b holds rows b, b + banks, ...

    def _expand(self, mem, code, units, cls):
        banks = mem.layout.banks
        units = np.asarray(units, dtype=np.int64)
        n_rows = np.clip(-(-(mem.rows - units) // banks), 0, None)  # rows b, b+B, ... < rows
        idx, owner = _span(np.zeros(units.size, dtype=np.int64), n_rows)
        word, bit = _row_bits(mem, units[owner] + idx * banks)
        return word, bit, self._kinds(word.size)


@dataclass(frozen=True)
class ColumnFault(MemoryFault):
    """A bit line fails: each (bank, column) is faulty with ``rate``; the cell at that column of
    every row of the bank is hit (columns are physical, check bits and interleaving included)."""

    rate: float | None = None  # probability that a (bank, column) bit line is faulty
    count: int | None = None  # exact number of faulty bit lines
    kind: str = "flip"
    layout: MemoryLayout | None = None

    def __post_init__(self):
        _check_common(self, "ColumnFault")

    label = property(lambda self: f"column-{self.kind}")

    def _total(self, mem):
        return mem.layout.banks * mem.row_width

    def _live(self, mem):
        if mem.rows > mem.layout.banks:  # every bank holds a full row: every bit line is live
            return self._total(mem), None
        last = mem.rows - 1  # banks 0..last hold one row each; only the last may be partial
        return last * mem.row_width, last * mem.row_width + np.flatnonzero(
            _live_columns(mem, last))

    def _expand(self, mem, code, units, cls):
        banks = mem.layout.banks
        units = np.asarray(units, dtype=np.int64)
        bank, col = units // mem.row_width, units % mem.row_width
        n_rows = np.clip(-(-(mem.rows - bank) // banks), 0, None)
        idx, owner = _span(np.zeros(units.size, dtype=np.int64), n_rows)
        word, bit = mem.from_physical(bank[owner] + idx * banks, col[owner])
        ok = word >= 0
        return word[ok], bit[ok], self._kinds(int(ok.sum()))


@dataclass(frozen=True)
class Burst(MemoryFault):
    """Multi-bit upsets: an event at a cell hits ``length`` adjacent cells of its row.

    ``rate`` is the probability that an event starts at a given cell (so about ``rate * length``
    faulty bits per bit); the burst runs along the physical row, across word boundaries (and
    across interleaved words), and stops at the row's end (it never wraps to the next row). A
    cell that several overlapping bursts cover is upset once (a cell is faulty or not; two
    flips never cancel), so the map at a lower rate is a subset of a nested higher one's.
    """

    rate: float | None = None  # probability that a burst starts at a cell
    length: int = 2  # adjacent cells per event
    count: int | None = None  # exact number of events instead of a rate
    kind: str = "flip"
    layout: MemoryLayout | None = None

    def __post_init__(self):
        _check_common(self, "Burst")
        check_int(self.length, "length", "Burst", 1)

    label = property(lambda self: f"burst{self.length}" +
                     ("" if self.kind == "flip" else f"-{self.kind}"))

    def _total(self, mem):
        return mem.rows * mem.row_width

    def _live(self, mem):
        """Starts whose burst covers a stored bit: every cell but those of the last row whose
        ``length`` cells all lie beyond the model's last word."""
        rw, last = mem.row_width, mem.rows - 1
        seen = np.concatenate([[0], np.cumsum(_live_columns(mem, last))])  # live cells < c
        start = np.arange(rw)
        covered = seen[np.minimum(start + self.length, rw)] - seen[start]
        return last * rw, last * rw + np.flatnonzero(covered > 0)

    def _expand(self, mem, code, units, cls):
        units = np.asarray(units, dtype=np.int64)
        row, col = units // mem.row_width, units % mem.row_width
        cols, owner = _span(col, np.minimum(self.length, mem.row_width - col))
        word, bit = mem.from_physical(row[owner], cols)
        ok = word >= 0
        word, bit = word[ok], bit[ok]
        if self.length > 1 and word.size > 1:  # overlapping bursts upset a shared cell ONCE
            key = np.unique(word * mem.n + bit)  # (they never cancel: nested maps stay nested)
            word, bit = key // mem.n, key % mem.n
        return word, bit, self._kinds(word.size)
