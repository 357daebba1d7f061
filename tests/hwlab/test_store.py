"""hwlab.store: resume, INSERT OR IGNORE, NULLs, foreign files, schema versions, export, concurrency."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pandas as pd
import pytest

from hwlab.store import APPLICATION_ID, RESULT_COLUMNS, SCHEMA_VERSION, Store


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _siblings(path) -> set[str]:
    return {p.name for p in path.parent.iterdir()}


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "s.sqlite")


def test_new_store_is_marked_and_in_wal_mode(tmp_path):
    path = tmp_path / "deep" / "dir" / "s.sqlite"
    Store(path)
    head = path.read_bytes()[:100]
    assert int.from_bytes(head[68:72], "big") == APPLICATION_ID
    assert int.from_bytes(head[60:64], "big") == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        cols = [r[1] for r in conn.execute("PRAGMA table_info(results)")]
        types = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(results)")}
    assert meta["application"] == "hwlab" and meta["schema_version"] == str(SCHEMA_VERSION)
    assert tuple(cols) == RESULT_COLUMNS
    assert types["fault_rate"] == "REAL" and types["seed"] == "INTEGER" and types["extra"] == "TEXT"
    Store(path)  # re-opening an existing store works


def test_default_path_reads_hwlab_home_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("HWLAB_HOME", str(tmp_path / "home"))
    assert Store().path == tmp_path / "home" / "hwlab.sqlite"
    assert (tmp_path / "home" / "hwlab.sqlite").is_file()
    monkeypatch.delenv("HWLAB_HOME")
    monkeypatch.chdir(tmp_path)
    assert Store().path.resolve() == (tmp_path / "hwlab-runs" / "hwlab.sqlite").resolve()


def test_open_run_resumes_same_study_and_config(store):
    a = store.open_run("s1", {"model": "mlp", "rates": (1e-6, 1e-5)})
    store.finish_run(a, "failed")
    b = store.open_run("s1", {"rates": [1e-6, 1e-5], "model": "mlp"})  # same JSON, other order
    assert b == a
    runs = store.runs().set_index("run_id")
    assert runs.loc[a, "status"] == "running" and runs.loc[a, "finished"] is None
    assert store.open_run("s2", {"model": "mlp", "rates": (1e-6, 1e-5)}) != a  # other study
    assert store.open_run("s1", {"model": "lenet5"}) != a  # other config
    assert store.open_run("s1", {"model": "lenet5"}, fingerprint="fp") != a
    assert store.config(a) == {"model": "mlp", "rates": [1e-6, 1e-5]}
    store.finish_run(a)
    runs = store.runs().set_index("run_id")
    assert runs.loc[a, "status"] == "done" and runs.loc[a, "finished"] is not None
    assert runs.loc[a, "code_version"].startswith("0.1.0")
    assert len(runs) == 4


def test_open_run_accepts_a_dataclass(store):
    @dataclass(frozen=True)
    class Config:
        model: str = "mlp"
        seed: int = 0

    run = store.open_run("s", Config())
    assert store.config(run) == {"model": "mlp", "seed": 0}
    assert store.open_run("s", {"model": "mlp", "seed": 0}) == run


def test_add_results_ignores_stored_keys_and_counts_new_rows(store):
    run = store.open_run("s", {})
    assert store.add_results(run, [{"key": "a", "accuracy": 0.5}, {"key": "b"}]) == 2
    assert store.add_results(run, [{"key": "a", "accuracy": 0.9}, {"key": "c"}]) == 1
    assert store.add_results(run, []) == 0
    assert store.done_keys(run) == {"a", "b", "c"}
    df = store.results(run_id=run)
    assert df.set_index("key").loc["a", "accuracy"] == 0.5  # the first write wins
    other = store.open_run("s", {"x": 1})
    assert store.add_results(other, [{"key": "a"}]) == 1  # keys are per run
    assert store.done_keys(other) == {"a"}


def test_missing_values_are_null_never_zero(store):
    run = store.open_run("s", {})
    store.add_results(run, [{"key": "k", "model": "mlp", "seed": 3, "accuracy": float("nan"),
                             "extra": {"seconds": 1.5, "tags": ["x"]}}])
    df = store.results()
    assert list(df.columns) == [*RESULT_COLUMNS, "study"]
    row = df.iloc[0]
    assert row["study"] == "s" and row["model"] == "mlp" and row["seed"] == 3
    assert df["seed"].dtype == "Int64"
    for c in ("fault_rate", "accuracy", "latency_ms", "timesteps"):
        assert pd.isna(row[c]), c
    for c in ("trial", "memory_bytes", "params", "module", "fault_model"):
        assert pd.isna(row[c]), c
    assert json.loads(row["extra"]) == {"seconds": 1.5, "tags": ["x"]}
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM results WHERE trial IS NULL AND "
                            "accuracy IS NULL AND params IS NULL").fetchone()[0] == 1


def test_bad_rows_are_errors_naming_the_problem_and_write_nothing(store):
    run = store.open_run("s", {})
    with pytest.raises(ValueError, match=r"column 'acc' of Store.add_results must be one of"):
        store.add_results(run, [{"key": "a"}, {"key": "b", "acc": 1.0}])
    with pytest.raises(ValueError, match=r"key of rows\[1\] of Store.add_results must be a "
                                         r"non-empty str, got None"):
        store.add_results(run, [{"key": "a"}, {"accuracy": 1.0}])
    with pytest.raises(ValueError, match=r"seed of Store.add_results must be an integer or None"):
        store.add_results(run, [{"key": "a", "seed": 1.5}])
    with pytest.raises(ValueError, match=r"accuracy of Store.add_results must be a number"):
        store.add_results(run, [{"key": "a", "accuracy": "high"}])
    with pytest.raises(ValueError, match=r"model of Store.add_results must be a str"):
        store.add_results(run, [{"key": "a", "model": 5}])
    with pytest.raises(ValueError, match=r"extra of Store.add_results must be a dict or a JSON"):
        store.add_results(run, [{"key": "a", "extra": "{not json"}])
    with pytest.raises(ValueError, match=r"run_id of Store.add_results must be the id of a run"):
        store.add_results("nope", [{"key": "a"}])
    with pytest.raises(ValueError, match=r"status of Store.finish_run must be 'done' or 'failed'"):
        store.finish_run(run, "ok")
    with pytest.raises(ValueError, match=r"run_id of Store.config must be the id of a run"):
        store.config("nope")
    assert store.done_keys(run) == set()


@pytest.mark.parametrize("kind", ["text", "sqlite", "newer", "short"])
def test_foreign_files_are_refused_and_left_untouched(tmp_path, kind):
    path = tmp_path / "f.db"
    if kind == "text":
        path.write_text("hello, this is not a database\n" * 10)
        match = r"path of Store must be an hwlab store .*not an SQLite database"
    elif kind == "short":
        path.write_bytes(b"SQLite format 3\x00abc")
        match = r"path of Store must be an hwlab store .*not an SQLite database"
    elif kind == "sqlite":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE runs (x INTEGER)")
            conn.execute("INSERT INTO runs VALUES (1)")
        conn.close()
        match = r"path of Store must be an hwlab store .*application id 0x0"
    else:
        Store(path)
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            conn.execute("PRAGMA journal_mode = DELETE")  # checkpoint: header now on disk
        conn.close()
        match = rf"path of Store must be a store of schema version <= {SCHEMA_VERSION}.*" \
                rf"schema version {SCHEMA_VERSION + 1}"
    before, names = _digest(path), _siblings(path)
    with pytest.raises(ValueError, match=match):
        Store(path)
    assert _digest(path) == before
    assert _siblings(path) == names  # no -wal / -shm / journal files appeared


def test_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"path of Store must be a file path"):
        Store(tmp_path)


def test_export_round_trip(store, tmp_path):
    run = store.open_run("s", {})
    store.add_results(run, [
        {"key": "a", "model": "mlp", "fault_rate": 1e-6, "trial": 2, "accuracy": 0.75,
         "extra": {"t": 1}},
        {"key": "b", "model": "mlp", "seed": 1, "memory_bytes": 2**40},
    ])
    other = store.open_run("t", {})
    store.add_results(other, [{"key": "z"}])
    expected = store.results(study="s").reset_index(drop=True)
    back = pd.read_parquet(store.export(tmp_path / "r.parquet", study="s"))
    pd.testing.assert_frame_equal(back, expected)
    csv = pd.read_csv(store.export(tmp_path / "r.csv", study="s"))
    assert csv["key"].tolist() == ["a", "b"]
    assert csv["memory_bytes"].tolist()[1] == 2**40 and pd.isna(csv["memory_bytes"][0])
    assert csv["fault_rate"][0] == 1e-6 and csv["accuracy"][0] == 0.75
    assert len(pd.read_csv(store.export(tmp_path / "all.csv"))) == 3
    with pytest.raises(ValueError, match=r"path of Store.export must be a file name ending in "
                                         r"\.csv or \.parquet, got '.*r\.xlsx'"):
        store.export(tmp_path / "r.xlsx")
    assert store.results(module="none").empty


_WRITER = textwrap.dedent("""
    import sys
    from hwlab.store import Store
    store = Store(sys.argv[1])
    run = store.open_run("conc", {"n": 1})
    tag = sys.argv[2]
    total = 0
    for i in range(60):
        total += store.add_results(run, [{"key": f"{i}", "trial": i},
                                         {"key": f"{tag}-{i}", "trial": i}])
    print(total)
""")


def test_two_processes_write_at_once(tmp_path):
    path = tmp_path / "c.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("p", "q")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    written = sum(int(o[0]) for o in outs)
    store = Store(path)
    runs = store.runs()
    assert len(runs) == 1  # both resumed the same run
    keys = store.done_keys(runs["run_id"][0])
    assert len(keys) == 60 + 2 * 60 == written  # shared keys written exactly once
