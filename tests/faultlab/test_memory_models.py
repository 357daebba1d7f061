"""faultlab.memory geometry: layout translation, row / column / bank faults, bursts, chip maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import faultlab as fl
from faultlab.memory import ECC, BankFault, Burst, ChipMap, ColumnFault, MemoryLayout, RowFault


class Two(nn.Module):
    """A float32 conv and an int8-sized float16 linear: mixed word packing, no Sequential."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)  # 72 float32 weights = 36 words
        self.fc = nn.Linear(9, 3).half()  # 27 float16 weights = 7 words (last one padded)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1)[:, :9].half())


@pytest.fixture
def two():
    torch.manual_seed(0)
    return Two()


def test_layout_translation_round_trip_and_order(two):
    lay = MemoryLayout(row_bits=64 * 8, banks=2, interleave=2)
    mem = lay.bind(two, check_bits=8)
    assert mem.names == ("conv.weight", "fc.weight") and mem.words == 36 + 7
    assert mem.rows == 6 and mem.row_width == 8 * 72
    # element e of conv.weight: word e // 2, bits 32 * (e % 2) ..; fc.weight starts at word 36
    w, b = mem.to_memory([0, 0, 1, 1], [0, 3, 0, 26], [31, 0, 15, 2])
    assert w.tolist() == [0, 1, 36, 42] and b.tolist() == [31, 32, 15, 32 + 2]
    p, e, wb = mem.to_weights(w, b)
    assert p.tolist() == [0, 0, 1, 1] and e.tolist() == [0, 3, 0, 26]
    assert wb.tolist() == [31, 0, 15, 2]
    # padding (fc word 42, bits 48..63) and check bits map to no weight
    assert mem.to_weights([42, 5], [50, 64])[0].tolist() == [-1, -1]
    words = np.repeat(np.arange(mem.words), 72)
    bits = np.tile(np.arange(72), mem.words)
    bank, row, col = mem.to_physical(words, bits)
    assert np.array_equal(bank, row % 2)
    w2, b2 = mem.from_physical(row, col)
    assert np.array_equal(w2, words) and np.array_equal(b2, bits)
    assert len(set(zip(row.tolist(), col.tolist()))) == words.size  # a bijection
    # interleave 2: adjacent cells of a row belong to alternating words
    w3, _ = mem.from_physical([0, 0, 0, 0], [0, 1, 2, 3])
    assert w3.tolist() == [0, 1, 0, 1]


def test_row_fault_covers_exactly_the_faulty_rows(two):
    lay = MemoryLayout(row_bits=64 * 4, banks=2)
    fm = RowFault(rate=0.4, kind="stuck1", layout=lay)
    fmap = fl.sample_faults(two, fm, seed=3)
    mem = lay.bind(two)
    w, b = mem.to_memory(fmap.param, fmap.index, fmap.bit)
    _, rows, _ = mem.to_physical(w, b)
    faulty = np.unique(rows)
    assert 0 < faulty.size < mem.rows and fmap.extra["units"] == faulty.size
    # every weight bit of a faulty row is in the map, and nothing else
    all_w = np.repeat(np.arange(mem.words), 64)
    all_b = np.tile(np.arange(64), mem.words)
    p, e, wb = mem.to_weights(all_w, all_b)
    in_row = np.isin(all_w // lay.words_per_row, faulty) & (p >= 0)
    expect = set(zip(p[in_row].tolist(), e[in_row].tolist(), wb[in_row].tolist()))
    got = set(zip(fmap.param.tolist(), fmap.index.tolist(), fmap.bit.tolist()))
    assert got == expect
    assert set(fmap.kind.tolist()) == {2}  # stuck1


def test_column_and_bank_faults(two):
    lay = MemoryLayout(row_bits=64 * 2, banks=3)
    mem = lay.bind(two)
    fmap = fl.sample_faults(two, ColumnFault(count=2, layout=lay), seed=0)
    w, b = mem.to_memory(fmap.param, fmap.index, fmap.bit)
    bank, _row, col = mem.to_physical(w, b)
    lines = set(zip(bank.tolist(), col.tolist()))
    assert len(lines) <= 2 and len(fmap) > 0
    for bk, c in lines:  # every row of that bank has the cell (unless it is padding)
        rows = np.arange(bk, mem.rows, 3)
        ww, bb = mem.from_physical(rows, np.full(rows.size, c))
        assert (mem.to_weights(ww, bb)[0] >= 0).sum() == ((bank == bk) & (col == c)).sum()
    fmap = fl.sample_faults(two, BankFault(count=1, kind="stuck0", layout=lay), seed=1)
    w, b = mem.to_memory(fmap.param, fmap.index, fmap.bit)
    banks = np.unique(mem.to_physical(w, b)[0])
    assert banks.size == 1
    n_bits = sum(int((mem.to_weights(np.repeat(np.arange(r * 2, min(r * 2 + 2, mem.words)), 64),
                                     np.tile(np.arange(64), min(2, mem.words - r * 2)))[0]
                      >= 0).sum()) for r in range(banks[0], mem.rows, 3))
    assert len(fmap) == n_bits


def test_burst_crosses_word_boundaries_along_the_row():
    m = nn.Linear(64, 4, bias=False)  # 256 float32 = 128 words
    lay = MemoryLayout(row_bits=64 * 16)
    mem = lay.bind(m)
    crossed = 0
    for seed in range(100):  # one burst per map: exactly `length` adjacent cells of one row
        fmap = fl.sample_faults(m, Burst(count=1, length=5, layout=lay), seed=seed)
        w, b = mem.to_memory(fmap.param, fmap.index, fmap.bit)
        _, row, col = mem.to_physical(w, b)
        col = np.sort(col)
        assert np.unique(row).size == 1
        assert np.array_equal(col, np.arange(col[0], col[0] + min(5, mem.row_width - col[0])))
        crossed += int(np.unique(w).size == 2)
    assert crossed > 0  # some bursts run across a word boundary
    # interleaving spreads a 4-burst over 4 words: SEC-DED corrects all of it
    lay4 = MemoryLayout(row_bits=64 * 16, interleave=4)
    ecc = fl.sample_faults(m, ECC("secded72_64", Burst(count=3, length=4, layout=lay4)), seed=5)
    assert ecc.extra["corrected_words"] == 12 and len(ecc) == 0
    plain = fl.sample_faults(m, ECC("secded72_64", Burst(count=3, length=4, layout=lay)), seed=5)
    assert plain.extra["corrected_words"] < 9


def test_chip_map_cells_land_where_the_layout_says(tmp_path, two):
    lay = MemoryLayout(row_bits=64 * 4, banks=1)
    mem = lay.bind(two)
    cells = [(0, 0, 1), (0, 33, 0), (2, 70, 1), (14, 5, 1)]  # the model has 11 rows
    a = np.full((16, 256), -1, dtype=np.int8)
    for r, c, v in cells:
        a[r, c] = v
    np.save(tmp_path / "chip.npy", a)
    (tmp_path / "chip.csv").write_text("row,col,value\n" + "".join(
        f"{r},{c},{v}\n" for r, c, v in cells))
    for name in ("chip.npy", "chip.csv"):
        chip = ChipMap.load(tmp_path / name, offset=(0, 0), layout=lay, shape=(16, 256))
        fmap = fl.sample_faults(two, chip)
        w, b = mem.from_physical([r for r, _, _ in cells[:3]], [c for _, c, _ in cells[:3]])
        p, e, wb = mem.to_weights(w, b)
        assert fmap.param.tolist() == p.tolist() and fmap.index.tolist() == e.tolist()
        assert fmap.bit.tolist() == wb.tolist() and fmap.kind.tolist() == [2, 1, 2]
    # a small map tiles over the model: memory cell (R, C) reads map cell ((R+1) % 2, (C+3) % 64)
    small = ChipMap(np.array([0, 1]), np.array([0, 7]), np.array([1, 0]), (2, 64), offset=(1, 3),
                    layout=lay)
    fmap = fl.sample_faults(two, small)
    R, C = np.meshgrid(np.arange(mem.rows), np.arange(mem.row_width), indexing="ij")
    hit = (((R + 1) % 2 == 0) & ((C + 3) % 64 == 0)) | (((R + 1) % 2 == 1) & ((C + 3) % 64 == 7))
    w, b = mem.from_physical(R[hit], C[hit])
    p, e, wb = mem.to_weights(w, b)
    ok = p >= 0
    expect = set(zip(p[ok].tolist(), e[ok].tolist(), wb[ok].tolist()))
    assert len(expect) > 10
    assert set(zip(fmap.param.tolist(), fmap.index.tolist(), fmap.bit.tolist())) == expect
    # offset None: drawn from the seed (same seed, same map; seeds give different windows)
    seeded = ChipMap(small.rows, small.cols, small.values, (2, 64), layout=lay)
    maps = [fl.sample_faults(two, seeded, seed=s) for s in range(4)]
    assert maps[0] == fl.sample_faults(two, seeded, seed=0)
    assert len({m.fingerprint() for m in maps}) > 1


def test_chip_map_rejects_pickles_and_bad_values(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        ChipMap.load(tmp_path / "obj.npy")
    np.save(tmp_path / "bad.npy", np.full((2, 2), 3))
    with pytest.raises(ValueError, match=r"path of ChipMap.load must be a map of -1 \(healthy\)"):
        ChipMap.load(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match=r"path of ChipMap.load must be an existing"):
        ChipMap.load(tmp_path / "missing.npy")


def test_geometry_errors():
    with pytest.raises(ValueError, match=r"row_bits of MemoryLayout must be a multiple of "
                                         r"word_bits \(64\), got 100"):
        MemoryLayout(row_bits=100)
    with pytest.raises(ValueError, match=r"interleave of MemoryLayout must be a divisor of the "
                                         r"128 words per row, got 3"):
        MemoryLayout(interleave=3)
    with pytest.raises(ValueError, match=r"kind of RowFault must be one of flip, stuck0, stuck1"):
        RowFault(rate=0.1, kind="stuck")
    with pytest.raises(ValueError, match=r"length of Burst must be an integer >= 1, got 0"):
        Burst(rate=1e-3, length=0)
    with pytest.raises(ValueError, match=r"count of sample_faults must be at most the 1 units"):
        fl.sample_faults(nn.Linear(4, 4), RowFault(count=2))
