"""Store.aggregate / select / count against pandas on the rows themselves: the same groups, the
same sums, and intervals from sums equal to the intervals from the rows."""

import numpy as np
import pandas as pd
import pytest

from app._demo import seed_store
from hwlab._figure_data import (
    ber_rows,
    clean_rows,
    is_aggregate,
    mean_ci_sums,
    proportion_ci_sums,
    summarize,
    summarize_sums,
)
from hwlab.stats import mean_ci, proportion_ci
from hwlab.store import Store


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("agg") / "hwlab.sqlite")
    seed_store(store, n_rows=3000)
    return store, store.results()


def test_sums_and_counts_equal_pandas(seeded):
    store, rows = seeded
    by = ["study", "model", "dataset", "fault_model", "fault_rate"]
    got = store.aggregate(by, ["accuracy", "latency_ms"])
    d = rows.assign(**{c: rows[c].astype("object") for c in by})
    want = d.groupby(by, dropna=False).agg(
        rows=("key", "size"), accuracy_n=("accuracy", "count"), accuracy_sum=("accuracy", "sum"),
        latency_ms_max=("latency_ms", "max")).reset_index()
    assert len(got) == len(want) and got["rows"].sum() == len(rows)
    def key(f):
        return ["|".join(str(None if pd.isna(v) else v) for v in r)
                for r in f[by].itertuples(index=False)]
    m = want.assign(k=key(want)).merge(got.assign(k=key(got)), on="k", suffixes=("", "_sql"))
    assert len(m) == len(want)
    assert (m["rows"] == m["rows_sql"]).all()
    assert (m["accuracy_n"] == m["accuracy_n_sql"]).all()
    ok = m["accuracy_n"] > 0
    np.testing.assert_allclose(m.loc[ok, "accuracy_sum_sql"], m.loc[ok, "accuracy_sum"],
                               rtol=1e-12)


@pytest.mark.parametrize("direct", [False, True], ids=["summary", "rows"])
@pytest.mark.parametrize("by", [["study", "fault_model", "fault_rate"],
                                ["run_id", "variant", "dtype", "fault_rate"],
                                ["model", "extra.dtype", "fault_model"]])
def test_intervals_from_sums_equal_intervals_from_rows(seeded, by, direct):
    store, rows = seeded
    agg = store.aggregate(by, ["accuracy"], lcm=["accuracy"], _rows=direct)
    got = summarize_sums(agg, by).sort_values(by, ignore_index=True)
    d = rows.assign(**{c: rows[c].astype("object") for c in by if c in rows})
    if "extra.dtype" in by:
        d["extra.dtype"] = d["extra"].str.extract(r'"dtype": "([^"]*)"', expand=False)
    want = summarize(d, by).sort_values(by, ignore_index=True)
    assert len(got) == len(want) > 5
    for c in ("mean", "lo", "hi"):
        np.testing.assert_allclose(got[c].astype(float), want[c].astype(float), rtol=1e-9,
                                   atol=1e-12, equal_nan=True)
    assert (got["n"].to_numpy() == want["n"].to_numpy()).all()
    assert (got["band"].to_numpy() == want["band"].to_numpy()).all()


def test_interval_helpers_equal_stats_on_random_trials():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 30))
        n = rng.integers(50, 2000, m).astype(float)
        v = np.round(rng.uniform(0, 1) + rng.normal(0, rng.choice([0, 0.01, 0.2]), m), 3)
        v = np.clip(v, 0, 1)
        want = proportion_ci(v, n)
        got = proportion_ci_sums(m, n.sum(), (v * n).sum(), v.sum(), (v * v).sum())
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(mean_ci_sums(m, v.sum(), (v * v).sum()), mean_ci(v),
                                   rtol=1e-9, atol=1e-12, equal_nan=True)


def test_filters_equal_the_pandas_selections(seeded):
    store, rows = seeded
    assert store.count() == len(rows)
    assert store.count(clean=True) == int(clean_rows(rows).sum())
    assert store.count(clean=False) == int((~clean_rows(rows)).sum())
    assert store.count(ber=True) == int(ber_rows(rows).sum())
    assert store.count(aggregates=False) == int((~is_aggregate(rows)).sum())
    assert store.count(study="faultlab.campaign") == int((rows["study"] == "faultlab.campaign").sum())
    near = np.isclose(rows["fault_rate"], 1e-4)
    assert store.count(near={"fault_rate": 1e-4}) == int(near.sum()) > 0
    has = rows["extra"].astype(str).str.contains('"thresholds"', regex=False)
    assert store.count(contains="thresholds") == int(has.sum()) > 0
    assert store.count(where={"dataset": ["digits"], "model": None}) == int(
        ((rows["dataset"] == "digits") & rows["model"].isna()).sum())


def test_select_pages_and_picks_columns(seeded):
    store, rows = seeded
    camp = rows[rows["study"] == "faultlab.campaign"].reset_index(drop=True)
    page = store.select(["key", "accuracy", "trial"], study="faultlab.campaign", limit=50,
                        offset=10)
    assert list(page.columns) == ["key", "accuracy", "trial"]
    assert page["key"].tolist() == camp["key"].iloc[10:60].tolist()
    assert str(page["trial"].dtype) == "Int64" and page["accuracy"].dtype == np.float64
    full = store.select(study="faultlab.campaign")
    pd.testing.assert_frame_equal(full, camp[full.columns], check_dtype=False)


def test_names_are_validated_before_sql(seeded):
    store, _ = seeded
    with pytest.raises(ValueError, match="column of Store.aggregate must be one of"):
        store.aggregate(["model; DROP TABLE results"])
    with pytest.raises(ValueError, match="column of Store.select must be extra.KEY"):
        store.select(["extra.a') --"])
    with pytest.raises(ValueError, match="contains of Store.aggregate"):
        store.aggregate(contains="x\"); --")


def test_summary_follows_every_write_batch(tmp_path):
    """The summary table is brought up to the newest row on each read: reads between batches
    (of the same points, new points and a new run) equal a scan of the rows."""
    from app._demo import fake_results

    store = Store(tmp_path / "s.sqlite")
    df = fake_results(n_rows=1500)
    by = ["study", "run_id", "variant", "dtype", "extra.dtype", "fault_model", "fault_rate"]
    vals = ["accuracy", "latency_ms", "params"]
    runs = {}
    shuffled = df.sample(frac=1, random_state=0)
    for i in range(7):
        chunk = shuffled.iloc[i * len(df) // 7:(i + 1) * len(df) // 7]
        for (study, run), part in chunk.groupby(["study", "run"]):
            if (study, run) not in runs:
                runs[(study, run)] = store.open_run(study, {"run": int(run)})
            records = part.drop(columns=["study", "run"]).to_dict("records")
            store.add_results(runs[(study, run)], [
                {k: v for k, v in r.items() if not (np.isscalar(v) and pd.isna(v))}
                for r in records])
        fast = store.aggregate(by, vals, lcm=["accuracy"]).sort_values(by, ignore_index=True)
        slow = store.aggregate(by, vals, lcm=["accuracy"], _rows=True).sort_values(
            by, ignore_index=True)
        pd.testing.assert_frame_equal(fast, slow, check_exact=False, rtol=1e-12)
        assert store.count() == fast["rows"].sum() == len(store.results())


def test_memory_store_aggregates_like_the_sqlite_store(seeded):
    """Store.memory() has the same grouped reads (pandas), equal to the SQLite store's."""
    from hwlab.store import MemoryStore

    store, rows = seeded
    mem = MemoryStore()
    for (study, run_id), part in rows.groupby(["study", "run_id"], sort=False):
        rid = mem.open_run(study, {"run": run_id})
        recs = part.drop(columns=["study", "run_id"]).to_dict("records")
        mem.add_results(rid, [{k: v for k, v in r.items() if not (
            v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA)} for r in recs])
    by = ["study", "dataset", "dtype", "fault_model", "fault_rate"]
    for filters in ({}, {"clean": False, "aggregates": False}, {"ber": True},
                    {"near": {"fault_rate": 1e-5}}, {"where": {"dataset": "digits"}}):
        a = summarize_sums(store.aggregate(by, ["accuracy"], lcm=["accuracy"], **filters), by)
        b = summarize_sums(mem.aggregate(by, ["accuracy"], lcm=["accuracy"], **filters), by)
        assert len(a) == len(b), filters
        for c in ("mean", "lo", "hi", "n"):
            np.testing.assert_allclose(a[c].astype(float), b[c].astype(float), rtol=1e-9,
                                       equal_nan=True)
        assert mem.count(**filters) == store.count(**filters)
    assert mem.select(["key"], study="faultlab.campaign", limit=5)["key"].tolist() == \
        store.select(["key"], study="faultlab.campaign", limit=5)["key"].tolist()


def test_summary_rebuilds_when_rows_are_renumbered_or_removed(tmp_path):
    import sqlite3

    store = Store(tmp_path / "v.sqlite")
    seed_store(store)
    by = ["study", "fault_model", "fault_rate"]
    before = store.aggregate(by, ["accuracy"])
    conn = sqlite3.connect(store.path)
    n = conn.execute("SELECT count(*) FROM results WHERE module = 'quantum'").fetchone()[0]
    conn.execute("DELETE FROM results WHERE module = 'quantum'")  # another tool removes rows
    conn.commit()
    conn.execute("VACUUM")  # renumbers the rowids of a table without INTEGER PRIMARY KEY
    conn.close()
    after = store.aggregate(by, ["accuracy"])
    assert after["rows"].sum() == before["rows"].sum() - n > 0
    scan = store.aggregate(by, ["accuracy"], _rows=True)
    key = lambda f: f.sort_values(by, ignore_index=True)
    pd.testing.assert_frame_equal(key(after), key(scan), check_exact=False, rtol=1e-12)
    run = store.open_run("late", {})
    store.add_results(run, [{"key": "x", "accuracy": 0.5}])
    assert store.count() == before["rows"].sum() - n + 1
