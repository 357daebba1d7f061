"""Measured chip maps: a bitmap of faulty cells replayed onto a model through the layout."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faultlab._faults import KINDS, FaultModel
from faultlab.memory._layout import MemoryLayout
from faultlab.memory._models import _span
from hwlab.errors import check, check_int_array, fail

__all__ = ["ChipMap"]


@dataclass(frozen=True, eq=False)
class ChipMap(FaultModel):
    """Faulty cells of a profiled chip: ``(row, col, value)`` stuck-at cells of a
    ``shape = (rows, cols)`` map, replayed onto the model's memory (physical cells of the
    :class:`~faultlab.memory.MemoryLayout`, check bits included under ``ECC``).

    Memory cell ``(R, C)`` reads map cell ``((R + dr) % rows, (C + dc) % cols)``: the map is
    tiled over a model larger than it, and ``offset = (dr, dc)`` places it; ``offset=None`` draws
    the offset from the seed (uniform over the map's rows and columns), so trials see different
    windows of the chip. ``value`` is the level the cell is stuck at (0 or 1).
    """

    rows: np.ndarray  # int64, map row of each faulty cell
    cols: np.ndarray  # int64, map column
    values: np.ndarray  # int8, stuck-at level (0 or 1)
    shape: tuple[int, int]  # (rows, cols) of the map
    offset: tuple[int, int] | None = None  # None: seeded
    layout: MemoryLayout | None = None

    rate = None  # a map, not a rate
    count = None
    bits = None

    def __post_init__(self):
        c = "ChipMap"
        ok = isinstance(self.shape, (tuple, list)) and len(self.shape) == 2
        check(ok, "shape", c, "(rows, cols) with both >= 1", self.shape)
        shp = tuple(int(s) for s in check_int_array(self.shape, "shape", c, minimum=1))
        r, k, v = (check_int_array(a, name, c).reshape(-1) for a, name in (
            (self.rows, "rows"), (self.cols, "cols"), (self.values, "values")))
        check(r.shape == k.shape == v.shape, "cells", c, "rows, cols and values of one length",
              (r.shape, k.shape, v.shape))
        out = (r < 0) | (r >= shp[0]) | (k < 0) | (k >= shp[1])
        if out.any():
            i = int(np.argmax(out))
            raise fail("cells", c, f"positions inside the {shp[0]} x {shp[1]} map",
                       f"cell (row {r[i]}, col {k[i]})")
        check(bool(np.isin(v, (0, 1)).all()), "values", c, "stuck-at levels 0 or 1",
              np.unique(v)[:5].tolist())
        _check_consistent(r, k, v, shp)
        if self.offset is not None:
            ok = isinstance(self.offset, (tuple, list)) and len(self.offset) == 2
            check(ok, "offset", c, "None or (row offset, column offset) >= 0", self.offset)
            off = check_int_array(self.offset, "offset", c, minimum=0)
            object.__setattr__(self, "offset", tuple(int(o) for o in off))
        object.__setattr__(self, "shape", shp)
        for name, a, dt in (("rows", r, np.int64), ("cols", k, np.int64), ("values", v, np.int8)):
            a = a.astype(dt)
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    label = property(lambda self: "chipmap")

    @classmethod
    def load(cls, path, offset=None, layout=None, shape=None) -> ChipMap:
        """Read a map: ``.npy`` (rows x cols ints: -1 healthy, 0 / 1 stuck-at level; loaded with
        ``allow_pickle=False``) or ``.csv`` (``row,col,value`` per faulty cell, a header line is
        skipped; the map's ``shape`` is given, or taken as the largest row / column + 1)."""
        p = Path(path)
        check(p.is_file(), "path", "ChipMap.load", "an existing .npy or .csv file", str(path))
        if p.suffix == ".npy":
            a = np.load(p, allow_pickle=False)
            ok = a.ndim == 2 and a.dtype.kind in "iub"
            check(ok, "path", "ChipMap.load", "a 2-D integer .npy map (-1 healthy, 0/1 stuck)",
                  f"{a.ndim}-D {a.dtype}")
            a = a.astype(np.int64)
            check(bool(np.isin(a, (-1, 0, 1)).all()), "path", "ChipMap.load",
                  "a map of -1 (healthy), 0 and 1 (stuck-at level)", np.unique(a)[:5].tolist())
            r, k = np.nonzero(a >= 0)  # an all-healthy map has no cells: empty maps
            return cls(r, k, a[r, k], a.shape, offset, layout)
        check(p.suffix == ".csv", "path", "ChipMap.load", "a .npy or .csv file", str(path))
        cells = []
        with open(p, newline="") as f:
            for i, line in enumerate(csv.reader(f)):
                if not line or (i == 0 and not line[0].strip().lstrip("-").isdigit()):
                    continue
                try:
                    cell = [int(x) for x in line]
                except ValueError:
                    cell = None
                if cell is None or len(cell) != 3 or min(cell[:2]) < 0:
                    raise fail("path", "ChipMap.load", "a CSV of row,col,value lines (integers, "
                               "row and col >= 0)", f"line {i + 1}: {','.join(line)}")
                cells.append(cell)
        a = np.asarray(cells, dtype=np.int64).reshape(-1, 3)
        if shape is None:  # a header-only file is a healthy chip
            shape = (int(a[:, 0].max()) + 1, int(a[:, 1].max()) + 1) if len(a) else (1, 1)
        return cls(a[:, 0], a[:, 1], a[:, 2], shape, offset, layout)

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr(self.shape).encode())
        for a in (self.rows, self.cols, self.values):
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        d = {"fault": self.label, "cells": int(self.rows.size), "shape": list(self.shape),
             "map": self.fingerprint(), "offset": list(self.offset) if self.offset else None}
        if self.layout is not None:
            d["layout"] = self.layout.label()
        return d

    def _offset(self, seed):
        if self.offset is not None:
            return self.offset
        rng = np.random.default_rng([int(seed), 0x636869])  # "chi": separate stream
        return int(rng.integers(self.shape[0])), int(rng.integers(self.shape[1]))

    def _events(self, mem, seed):
        """(word, bit, kind) of every memory cell the tiled map covers."""
        h, w = self.shape
        dr, dc = self._offset(seed)
        r0 = (self.rows - dr) % h  # first memory row / column showing each map cell
        c0 = (self.cols - dc) % w
        nr = np.clip(-(-(mem.rows - r0) // h), 0, None)
        nc = np.clip(-(-(mem.row_width - c0) // w), 0, None)
        ti, cell = _span(np.zeros(r0.size, dtype=np.int64), nr)  # row tiles of each cell
        row = r0[cell] + ti * h
        tj, e = _span(np.zeros(cell.size, dtype=np.int64), nc[cell])  # then column tiles
        row, col, cell = row[e], c0[cell[e]] + tj * w, cell[e]
        word, bit = mem.from_physical(row, col)
        ok = word >= 0
        kind = np.where(self.values[cell[ok]] == 1, KINDS.index("stuck1"), KINDS.index("stuck0"))
        return word[ok], bit[ok], kind.astype(np.int8)


def _check_consistent(rows, cols, values, shape) -> None:
    """A cell listed twice must say the same level (stuck-at-0 and stuck-at-1 at once is a
    corrupt map, refused naming the cell; a repeated identical line is harmless)."""
    if rows.size < 2:
        return
    key = rows * shape[1] + cols
    order = np.lexsort((values, key))
    k, v = key[order], values[order]
    clash = (k[1:] == k[:-1]) & (v[1:] != v[:-1])
    if clash.any():
        cell = int(k[1:][np.argmax(clash)])
        raise fail("cells", "ChipMap", "one stuck-at level per cell",
                   f"cell (row {cell // shape[1]}, col {cell % shape[1]}) listed as stuck-at-0 "
                   "and stuck-at-1")
