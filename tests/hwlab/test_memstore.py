"""MemoryStore: the Store interface without a file, same validation, same results() frame."""

from __future__ import annotations

import pandas as pd
import pytest

from hwlab._memstore import MemoryStore
from hwlab.store import Store
from hwlab.studies import run_context, run_items


def _fill(store):
    store.ensure_columns(["iou"])
    with run_context(store, "demo", {"n": 3}) as run:
        run_items(store, run, {f"k{i}": {"trial": i, "accuracy": i / 4, "iou": 0.5,
                                         "extra": {"i": i}, "fault_rate": float("nan")}
                               for i in range(3)}, dict, defaults={"module": "m", "dtype": "int8"})
    return run


def test_memory_store_gives_the_same_frame_as_sqlite(tmp_path):
    mem, disk = Store.memory(), Store(tmp_path / "s.sqlite")
    assert isinstance(mem, MemoryStore) and mem.path is None
    _fill(mem), _fill(disk)
    a = mem.results().drop(columns="run_id")
    b = disk.results().drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)  # same columns, values, NULLs and dtypes
    assert mem.runs()["status"].tolist() == ["done"] and mem.runs()["n_results"].tolist() == [3]
    run = mem.runs()["run_id"].iloc[0]
    assert mem.config(run) == {"n": 3} and mem.done_keys(run) == {"k0", "k1", "k2"}
    assert mem.add_results(run, [{"key": "k0", "trial": 9}]) == 0  # the first write wins
    assert len(mem.results(module="m")) == 3 and mem.results(study="other").empty


def test_memory_store_validates_like_sqlite():
    mem = Store.memory()
    run = mem.open_run("demo", {})
    with pytest.raises(ValueError, match=r"column 'acc' of MemoryStore.add_results must be one of"):
        mem.add_results(run, [{"key": "a", "acc": 1.0}])
    with pytest.raises(ValueError, match=r"trial of MemoryStore.add_results must be an integer or "
                                         r"None, got 1.5"):
        mem.add_results(run, [{"key": "ok", "trial": 1}, {"key": "b", "trial": 1.5}])
    assert mem.done_keys(run) == set()  # all or none
    with pytest.raises(ValueError, match=r"names of MemoryStore.ensure_columns must be column "):
        mem.ensure_columns(["Bad"])
    with pytest.raises(ValueError, match=r"run_id of MemoryStore.done_keys must be the id of a run"):
        mem.done_keys("nope")
    with pytest.raises(ValueError, match="x of t must be"):  # a refusal leaves no run behind
        with run_context(mem, "refused", {}):
            from hwlab.errors import fail

            raise fail("x", "t", "y", 1)
    assert mem.runs()["study"].tolist() == ["demo"]


def test_batch_validation_equals_the_per_cell_conversion():
    """Rows are validated column by column; every value converts exactly as _cell does."""
    import math

    import numpy as np

    from hwlab._rows import RESULT_COLUMNS, _cell, _row_values

    rows = [{"key": "a", "accuracy": 0.5, "trial": 3, "seed": 2**62 + 1, "extra": {"n": 1},
             "fault_rate": math.nan, "model": "m"},
            {"key": "b", "accuracy": np.float32(0.25), "trial": np.int64(4), "latency_ms": 2,
             "extra": '{"n": 2}', "params": 7.0},
            {"key": "c", "accuracy": None, "trial": None, "fault_rate": float("inf")}]
    got = _row_values("r1", rows, RESULT_COLUMNS, "t")
    want = [("r1", *(_cell(c, r.get(c), "t") for c in RESULT_COLUMNS[1:])) for r in rows]
    assert got == want
    assert [type(v) for v in got[1]] == [type(v) for v in want[1]]
    assert got[0][RESULT_COLUMNS.index("seed")] == 2**62 + 1  # exact, never through a float
    assert got[0][RESULT_COLUMNS.index("fault_rate")] is None  # NaN is NULL
    with pytest.raises(ValueError, match="trial of t must be an integer or None, got 2.5"):
        _row_values("r1", [rows[0], {"key": "d", "trial": 2.5}], RESULT_COLUMNS, "t")
    with pytest.raises(ValueError, match="model of t must be a str or None, got 3"):
        _row_values("r1", [{"key": "e", "model": 3}], RESULT_COLUMNS, "t")


def test_results_frame_keeps_64_bit_integers_exact_beside_nulls():
    mem = Store.memory()
    run = mem.open_run("exact", {})
    mem.add_results(run, [{"key": "a", "seed": 2**62 + 1, "trial": 0, "accuracy": 0.5},
                          {"key": "b", "seed": None, "trial": None, "accuracy": None}])
    df = mem.results(run_id=run)
    assert str(df.seed.dtype) == "Int64" and int(df.seed[0]) == 2**62 + 1  # not via float64
    assert df.seed.isna().tolist() == [False, True] and df.accuracy.isna().tolist() == [False, True]
    assert str(df.accuracy.dtype) == "float64"
