"""hwlab.store schema 2: new columns, user metric columns, v1 migration, damaged files, revert."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from hwlab.store import APPLICATION_ID, METRIC_COLUMNS, RESULT_COLUMNS, SCHEMA_VERSION, Store

# The schema of version 1, exactly as hwlab 0.1.0 wrote it (copied, not generated from the code).
_V1 = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE runs (run_id TEXT PRIMARY KEY, study TEXT NOT NULL, config TEXT NOT NULL,
        fingerprint TEXT NOT NULL, code_version TEXT, status TEXT NOT NULL,
        started TEXT NOT NULL, finished TEXT, UNIQUE (study, fingerprint))""",
    """CREATE TABLE results (run_id TEXT NOT NULL, key TEXT NOT NULL, module TEXT, method TEXT,
        model TEXT, dataset TEXT, variant TEXT, fault_model TEXT, fault_rate REAL, trial INTEGER,
        seed INTEGER, accuracy REAL, latency_ms REAL, memory_bytes INTEGER, timesteps REAL,
        params INTEGER, extra TEXT, FOREIGN KEY (run_id) REFERENCES runs (run_id),
        UNIQUE (run_id, key))""",
    "CREATE INDEX results_module ON results (module)",
]
_V1_COLUMNS = RESULT_COLUMNS[:17]


def _v1_store(path):
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    for s in _V1:
        conn.execute(s)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("application", "hwlab"),
                                                        ("schema_version", "1")])
    conn.execute("INSERT INTO runs VALUES ('r1', 'faultlab.campaign', '{}', 'fp', '0.1.0', "
                 "'done', '2026-01-01', '2026-01-02')")
    rows = [("r1", f"bitflip|1e-05|trial={t}", "faultlab", "campaign", "lenet5", "mnist5k",
             "float16", "bitflip", 1e-5, t, 10 + t, 0.9 - t / 100, None, None, None, 61706,
             '{"n_faults": 3}') for t in range(5)]
    conn.executemany(f"INSERT INTO results VALUES ({', '.join('?' * 17)})", rows)
    conn.commit()
    conn.close()
    return rows


def test_schema_2_columns_and_types(tmp_path):
    assert SCHEMA_VERSION == 2
    assert RESULT_COLUMNS[17:] == ("dtype", "sdc", "critical_sdc", "top5", "loss")
    assert METRIC_COLUMNS == ("accuracy", "sdc", "critical_sdc", "top5", "loss")
    s = Store(tmp_path / "s.sqlite")
    with sqlite3.connect(s.path) as conn:
        types = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(results)")}
    assert types["dtype"] == "TEXT" and all(types[c] == "REAL" for c in METRIC_COLUMNS)
    run = s.open_run("t", {})
    s.add_results(run, [{"key": "a", "dtype": "int8", "sdc": 0.25, "critical_sdc": 0.125,
                         "top5": 1.0, "loss": 0.5}])
    row = s.results().iloc[0]
    assert (row["dtype"], row.sdc, row.critical_sdc, row.top5, row.loss) == (
        "int8", 0.25, 0.125, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"dtype of Store.add_results must be a str or None"):
        s.add_results(run, [{"key": "b", "dtype": 8}])


def test_v1_store_is_migrated_on_open_with_the_same_rows(tmp_path, caplog):
    path = tmp_path / "v1.sqlite"
    rows = _v1_store(path)
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT * FROM results ORDER BY rowid").fetchall()
    assert before == rows
    with caplog.at_level("WARNING", logger="hwlab.store"):
        s = Store(path)
    assert "migrated hwlab store" in caplog.text and "from schema version 1 to 2" in caplog.text
    head = path.read_bytes()[:100]
    assert int.from_bytes(head[60:64], "big") == 2
    with sqlite3.connect(path) as conn:
        after = conn.execute(f"SELECT {', '.join(_V1_COLUMNS)} FROM results ORDER BY rowid"
                             ).fetchall()
        new = conn.execute("SELECT dtype, sdc, critical_sdc, top5, loss FROM results").fetchall()
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert after == before  # same rows, same values
    assert new == [(None,) * 5] * 5  # never filled in by guessing (variant keeps 'float16')
    assert meta["schema_version"] == "2" and "migrated_from_1" in meta
    df = s.results()
    assert df["variant"].tolist() == ["float16"] * 5 and df["dtype"].isna().all()
    assert df["accuracy"].tolist() == [r[11] for r in rows]
    assert s.runs()["status"].tolist() == ["done"]
    Store(path)  # opening again: nothing left to migrate
    assert s.columns() == RESULT_COLUMNS


def test_user_metric_columns(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    run = s.open_run("t", {})
    with pytest.raises(ValueError, match=r"column 'iou' of Store.add_results must be one of "
                                         r".*add metric columns with Store.ensure_columns"):
        s.add_results(run, [{"key": "a", "iou": 0.5}])
    assert s.ensure_columns(["iou", "accuracy", "iou", "mean_ap"]) == ("iou", "mean_ap")
    assert s.ensure_columns(["iou"]) == ()
    assert s.columns()[-2:] == ("iou", "mean_ap")
    assert s.add_results(run, [{"key": "a", "iou": 0.5}, {"key": "b", "mean_ap": float("nan")}])
    df = s.results().set_index("key")
    assert df.loc["a", "iou"] == 0.5 and df["mean_ap"].isna().all()
    assert list(df.columns)[-1] == "study"
    other = Store(s.path)  # another Store object sees the column (read again when needed)
    s.ensure_columns(["f1"])
    assert other.add_results(run, [{"key": "c", "f1": 1.0}]) == 1
    with pytest.raises(ValueError, match=r"f1 of Store.add_results must be a number or None"):
        other.add_results(run, [{"key": "d", "f1": "high"}])


@pytest.mark.parametrize("name", ['x" REAL); DROP TABLE runs; --', "Acc", "1st", "a-b", "",
                                  "study", "rowid", "x" * 64, 3, None])
def test_bad_metric_column_names_are_refused_before_sql(tmp_path, name):
    s = Store(tmp_path / "s.sqlite")
    digest = hashlib.sha256(s.path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=r"names of Store.ensure_columns must be column names "
                                         r"matching \[a-z_\]\[a-z0-9_\]\*"):
        s.ensure_columns(["ok_name", name])
    assert s.columns() == RESULT_COLUMNS  # not even the good name was added
    assert hashlib.sha256(s.path.read_bytes()).hexdigest() == digest
    with pytest.raises(ValueError, match=r"names of Store.ensure_columns must be a list"):
        s.ensure_columns("iou")


@pytest.mark.parametrize("damage", ["truncate", "randomise"])
def test_damaged_store_is_one_error_naming_the_path(tmp_path, damage):
    good = tmp_path / "good.sqlite"
    s = Store(good)
    run = s.open_run("t", {})
    s.add_results(run, [{"key": f"k{i}", "extra": {"pad": "x" * 200}} for i in range(400)])
    with sqlite3.connect(good) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = good.read_bytes()
    bad = tmp_path / "bad.sqlite"
    if damage == "truncate":
        bad.write_bytes(data[:5000])
    else:
        import random

        rnd = random.Random(0)
        bad.write_bytes(data[:100] + bytes(rnd.randrange(256) for _ in range(len(data) - 100)))
    with pytest.raises(ValueError, match=r"path of Store must be an undamaged hwlab store .*got "
                                         rf"'{bad}.*\(SQLite: .*(malformed|not a database)"):
        st = Store(bad)
        st.results()
        st.runs()


def test_revert_run_puts_a_resumed_run_back_and_deletes_a_new_empty_one(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    run = s.open_run("t", {"a": 1})
    s.add_results(run, [{"key": "k"}])
    s.finish_run(run)
    state = s.run_state(run)
    assert state["status"] == "done" and state["n_results"] == 1
    assert s.find_run("t", {"a": 1}) == run and s.find_run("t", {"a": 2}) is None
    assert s.open_run("t", {"a": 1}) == run and s.run_state(run)["status"] == "running"
    s.revert_run(run, state)
    assert s.run_state(run) == state
    new = s.open_run("t", {"a": 2})
    s.revert_run(new, None)
    assert s.runs()["run_id"].tolist() == [run]
    with pytest.raises(ValueError, match=r"run_id of Store.revert_run must be a new run without "
                                         r"result rows"):
        s.revert_run(run, None)


def test_damage_after_open_is_the_same_error_from_every_method(tmp_path):
    path = tmp_path / "s.sqlite"
    s = Store(path)
    run = s.open_run("t", {})
    s.add_results(run, [{"key": f"k{i}", "extra": {"pad": "x" * 300}} for i in range(300)])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path.write_bytes(path.read_bytes()[:6000])  # the Store object was made before the damage
    for call in (s.results, s.runs, lambda: s.done_keys(run), lambda: s.add_results(
            run, [{"key": "new"}]), lambda: s.export(tmp_path / "e.csv")):
        with pytest.raises(ValueError, match=r"path of Store must be an undamaged hwlab store"):
            call()
