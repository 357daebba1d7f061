"""Memory fault models at the edges a small user model reaches: nested bursts that overlap, and
count-based maps on a model that fills a fraction of one row of one bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import faultlab as fl
from faultlab.memory import ECC, BankFault, Burst, ColumnFault, MemoryLayout


class _Residual(nn.Module):
    """A small residual MLP (not in the zoo): 3 weight matrices, about 5,000 fp32 weights."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(64, 40), nn.Linear(40, 40), nn.Linear(40, 10)

    def forward(self, x):
        h = torch.relu(self.a(x.flatten(1)))
        return self.head(h + torch.relu(self.b(h)))


def _entries(fmap) -> set:
    return set(zip(fmap.param.tolist(), fmap.index.tolist(), fmap.bit.tolist()))


@pytest.mark.parametrize("layout", [None, MemoryLayout(interleave=4)])
def test_nested_burst_maps_are_subsets_for_100_seeds(layout):
    torch.manual_seed(0)
    m = _Residual()
    overlapped = 0
    for seed in range(100):
        lo, mid, hi = fl.sample_faults(m, Burst(rate=1e-3, length=8, layout=layout), seed=seed,
                                       nested_rates=[2e-4, 5e-4, 1e-3])
        assert _entries(lo) <= _entries(mid) <= _entries(hi), seed
        assert (lo.kind == 0).all() and (hi.kind == 0).all()  # flips
        overlapped += hi.extra["units"] * 8 > len(hi)  # some cell covered twice
    assert overlapped >= 20  # the case that cancelled before: overlapping bursts are common


def test_overlapping_bursts_upset_a_shared_cell_once():
    m = nn.Linear(64, 2, bias=False)  # 128 fp32 = 64 words: cells 0..4095 of one 8192-cell row

    def cells(fmap):  # fp32 element e, bit b -> cell e * 32 + b (two elements per 64-bit word)
        return sorted((fmap.index.astype(np.int64) * 32 + fmap.bit).tolist())

    starts = cells(fl.sample_faults(m, Burst(rate=0.3, length=1), seed=1))  # the same units
    got = cells(fl.sample_faults(m, Burst(rate=0.3, length=4), seed=1))
    expected = sorted({c + k for c in starts for k in range(4) if c + k < 4096})
    assert got == expected
    assert len(starts) * 4 - len(expected) > 100  # many cells were covered twice or more


@pytest.mark.parametrize("fault", [Burst(count=1, length=4), ColumnFault(count=1),
                                   BankFault(count=1), ECC("secded72_64", BankFault(count=1)),
                                   Burst(count=2, length=2, layout=MemoryLayout(interleave=8))])
def test_count_maps_always_hit_a_model_that_fills_part_of_one_row(fault):
    m = nn.Linear(40, 1, bias=False)  # 40 fp32 = 20 of a row's 128 words; 1 of 16 banks
    sizes = [len(fl.sample_faults(m, fault, seed=s)) for s in range(200)]
    assert min(sizes) > 0


def test_count_draws_are_uniform_over_the_live_units():
    m = nn.Linear(768, 1, bias=False)  # 384 words = 3 full rows -> banks 0, 1, 2 live
    banks = []
    for s in range(300):
        fmap = fl.sample_faults(m, BankFault(count=1), seed=s)
        banks.append(int(fmap.index.min()) // (2 * 128))  # 256 fp32 per 8192-bit row
    counts = np.bincount(banks, minlength=3)
    assert len(counts) == 3 and stats.chisquare(counts).pvalue > 1e-3
    cols = {int(fl.sample_faults(m, ColumnFault(count=1), seed=s).index.min() % 256)
            for s in range(60)}
    assert len(cols) > 30  # spread over the row


def test_a_count_above_the_live_units_is_refused():
    m = nn.Linear(40, 1, bias=False)
    with pytest.raises(ValueError, match=r"count of sample_faults must be at most the 1 units "
                                         r"that hold the model's memory, got 2"):
        fl.sample_faults(m, BankFault(count=2))


# -- memory coordinates and measured chip maps: refused, never truncated -------------------------
@pytest.mark.parametrize(("word", "bit", "msg"), [
    (1.5, 0, r"word of memory_map must be integers, got 1.5"),
    (0, 63.7, r"bit of memory_map must be integers, got 63.7"),
    (np.nan, 0, r"word of memory_map must be integers, got nan"),
    ([True, False], [1, 2], r"word of memory_map must be integers, got True"),
])
def test_memory_map_refuses_non_integer_coordinates(word, bit, msg):
    with pytest.raises(ValueError, match=msg):
        from faultlab.memory import memory_map

        memory_map(nn.Linear(40, 1, bias=False), word, bit)


def test_memory_map_takes_whole_floats_as_the_integers_they_are():
    from faultlab.memory import memory_map

    m = nn.Linear(40, 1, bias=False)
    a, b = memory_map(m, [1.0, 2.0], [3.0, 40.0]), memory_map(m, [1, 2], [3, 40])
    assert _entries(a) == _entries(b) == {(0, 2, 3), (0, 5, 8)}


def test_a_healthy_chip_loads_as_an_empty_map(tmp_path):
    from faultlab.memory import ChipMap

    m = nn.Linear(40, 1, bias=False)
    np.save(tmp_path / "ok.npy", np.full((4, 8), -1, dtype=np.int8))
    (tmp_path / "ok.csv").write_text("row,col,value\n")
    for path, shape in ((tmp_path / "ok.npy", (4, 8)), (tmp_path / "ok.csv", (1, 1))):
        cm = ChipMap.load(path)
        assert cm.shape == shape and cm.rows.size == 0
        assert len(fl.sample_faults(m, cm, seed=3)) == 0


@pytest.mark.parametrize(("text", "msg"), [
    ("row,col,value\n1,2\n", (r"path of ChipMap.load must be a CSV of row,col,value lines "
                              r"\(integers, row and col >= 0\), got 'line 2: 1,2'")),
    ("1,2,1\n-3,0,1\n", r"got 'line 2: -3,0,1'"),
    ("1,2,1\nx,0,1\n", r"got 'line 2: x,0,1'"),
    ("1,2,1\n1,2,0\n", (r"cells of ChipMap must be one stuck-at level per cell, got 'cell "
                        r"\(row 1, col 2\) listed as stuck-at-0 and stuck-at-1'")),
])
def test_chip_map_csv_edges_are_refused_naming_the_line_or_cell(tmp_path, text, msg):
    from faultlab.memory import ChipMap

    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ValueError, match=msg):
        ChipMap.load(tmp_path / "m.csv")


@pytest.mark.parametrize(("offset", "msg"), [
    ((np.nan, 0), r"offset of ChipMap must be integers, got nan"),
    ((1.5, 0), r"offset of ChipMap must be integers, got 1.5"),
    ((-1, 0), r"offset of ChipMap must be integers >= 0, got -1"),
    ((1,), r"offset of ChipMap must be None or \(row offset, column offset\) >= 0, got \(1,\)"),
])
def test_chip_map_offsets_are_checked(offset, msg):
    from faultlab.memory import ChipMap

    with pytest.raises(ValueError, match=msg):
        ChipMap([0], [0], [1], (2, 2), offset)


def test_a_repeated_identical_cell_is_one_fault():
    from faultlab.memory import ChipMap

    m = nn.Linear(40, 1, bias=False)
    twice = ChipMap([0, 0], [5, 5], [1, 1], (1, 8192), (0, 0))
    once = ChipMap([0], [5], [1], (1, 8192), (0, 0))
    assert _entries(fl.sample_faults(m, twice)) == _entries(fl.sample_faults(m, once))
