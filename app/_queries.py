"""Cached reads of the results store for the dashboard pages.

Every page reads the store through these functions only. The store is
``$HWLAB_STORE`` when set (``hwlab dashboard --store PATH`` sets it), else the embedded default
``hwlab.store.Store()`` (``$HWLAB_HOME/hwlab.sqlite``). Reads go through the store's own
parameterised API; anything a user types on a page filters the returned DataFrame in pandas and
never reaches SQL.

Queries, not loads: a page asks for what it plots. Points (a run's trials of one condition)
come from :meth:`Store.aggregate` as sums and counts (the store keeps them per point, so a
million rows cost a read of a few hundred points), intervals follow from the sums
(:func:`hwlab._figure_data.summarize_sums`, equal to those of the rows); row-level reads are
narrow: the fault-free rows (:meth:`Store.select` with ``clean=True``), one study's or one
run's rows, a page of a run's rows. Nothing reads the whole store except the export button.

Caching: a query result is cached under the store path plus a *stamp* of the store's files (size
and modification time of the SQLite file and its write-ahead log), so a page sees new rows as soon
as a study writes them, and a page re-run over an unchanged store costs no SQL at all. Row tables
and point tables that several pages share are ``st.cache_resource`` entries (shared, not copied),
so callers treat every returned DataFrame as read-only and derive new frames (filters,
``assign``) instead of changing them in place; the small derived tables are ``st.cache_data``
entries (copied per caller).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from hwlab.store import RESULT_COLUMNS, Store, default_store_path

__all__ = [
    "ber_points",
    "clean_metrics",
    "clear",
    "dataset_metrics",
    "empty_results",
    "export_bytes",
    "get_store",
    "metric_combinations",
    "metrics",
    "module_extra",
    "module_metrics",
    "module_results",
    "parse_extra",
    "points",
    "reliability",
    "results",
    "row_count",
    "run_config",
    "run_points",
    "run_rows",
    "run_summary",
    "runs",
    "stamp",
    "store_path",
    "study_points",
    "study_results",
    "study_rows",
    "thresholds",
    "with_run_field",
]

MODULES = ("faultlab", "spiking", "quantum", "localtrain")
TEXT_COLUMNS = ("run_id", "key", "module", "method", "model", "dataset", "variant", "fault_model",
                "extra", "study")


def store_path() -> str:
    """The store the dashboard reads: ``$HWLAB_STORE`` or the embedded default."""
    return str(Path(os.environ.get("HWLAB_STORE") or default_store_path()).resolve())


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    return Store(path)


def get_store() -> Store:
    """The (cached) :class:`~hwlab.store.Store`; raises the store's error for a foreign file."""
    return _store(store_path())


def stamp(path: str | None = None) -> tuple:
    """Size and mtime of the store file and its WAL: changes whenever a row is written."""
    path = path or store_path()
    out = []
    for p in (path, path + "-wal"):
        try:
            s = os.stat(p)
            out.append((s.st_size, s.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _text(df: pd.DataFrame) -> pd.DataFrame:
    # A text column that is NULL in every row comes back as float; make it text so that frames
    # concatenate (and merge) with one dtype per column.
    return df.astype({c: "str" for c in TEXT_COLUMNS if c in df})


@st.cache_resource(show_spinner="Reading results…", max_entries=4)
def _results(path: str, file_stamp: tuple) -> pd.DataFrame:
    # Every row: only the export button reads this (the pages ask for what they show).
    return _text(_store(path).results())


@st.cache_resource(show_spinner=False, max_entries=32)
def _module_results(path: str, file_stamp: tuple, module: str) -> pd.DataFrame:
    return _text(_store(path).select(module=module))


@st.cache_data(show_spinner=False, max_entries=4)
def _runs(path: str, file_stamp: tuple) -> pd.DataFrame:
    return _store(path).runs()


def results() -> pd.DataFrame:
    """Every result row (RESULT_COLUMNS plus ``study``); treat as read-only. Reads the whole
    store: for the export button only; pages use the narrower queries below."""
    path = store_path()
    get_store()
    return _results(path, stamp(path))


def module_results(module: str) -> pd.DataFrame:
    """Result rows of one module (``faultlab``, ``spiking``, ...)."""
    path = store_path()
    get_store()
    return _module_results(path, stamp(path), module)


def runs() -> pd.DataFrame:
    """The runs table (run_id, study, config JSON, status, times, n_results)."""
    path = store_path()
    get_store()
    return _runs(path, stamp(path))


def run_config(run_id: str) -> dict:
    """The config dict of one run (from the cached runs table; {} for an unknown id)."""
    df = runs()
    hit = df.loc[df["run_id"] == run_id, "config"]
    return json.loads(hit.iloc[0]) if len(hit) else {}


def parse_extra(df: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """Rows of ``df`` whose ``extra`` JSON holds any of ``keys``, with those keys as columns.

    The index of ``df`` is kept, so ``df.drop(parsed.index)`` gives the other rows.
    """
    extra = df["extra"].fillna("").astype(str)
    mask = pd.Series(False, index=df.index)
    for k in keys:  # cheap substring prefilter: only rows that can hold a key are parsed
        mask |= extra.str.contains(f'"{k}"', regex=False)
    parsed = [json.loads(e) for e in extra[mask]]
    out = df[mask].copy()
    for k in keys:
        out[k] = [p.get(k) if isinstance(p, dict) else None for p in parsed]
    return out


@st.cache_resource(show_spinner=False, max_entries=64)
def _module_extra(path: str, file_stamp: tuple, module: str, keys: tuple) -> pd.DataFrame:
    return parse_extra(_module_results(path, file_stamp, module), keys)


def module_extra(module: str, *keys: str) -> pd.DataFrame:
    """Rows of a module whose ``extra`` holds any of ``keys``, with those keys as columns."""
    path = store_path()
    get_store()
    return _module_extra(path, stamp(path), module, tuple(keys))


@st.cache_resource(show_spinner=False, max_entries=32)
def _study_results(path: str, file_stamp: tuple, study: str) -> pd.DataFrame:
    return _text(_store(path).select(study=study))


def study_results(study: str) -> pd.DataFrame:
    """Result rows of one study (``faultlab.memory``, ...); treat as read-only."""
    path = store_path()
    get_store()
    return _study_results(path, stamp(path), study)


@st.cache_resource(show_spinner=False, max_entries=4)
def _metrics(path: str, file_stamp: tuple) -> pd.DataFrame:
    from hwlab._figure_data import with_metrics

    store = _store(path)
    return with_metrics(_text(store.select(aggregates=False)), store.study_kinds())


@st.cache_resource(show_spinner=False, max_entries=8)
def _module_metrics(path: str, file_stamp: tuple, module: str) -> pd.DataFrame:
    from hwlab._figure_data import with_metrics

    store = _store(path)
    return with_metrics(_text(store.select(module=module, aggregates=False)),
                        store.study_kinds())


def module_metrics(module: str) -> pd.DataFrame:
    """:func:`metrics` of one module's rows (read from the store with that filter)."""
    path = store_path()
    get_store()
    return _module_metrics(path, stamp(path), module)


def metrics() -> pd.DataFrame:
    """Every non-aggregate row with one column per metric meaning (hwlab._figure_data.METRICS:
    inference / trial / training-step latency, weight storage / training memory in MiB, ...)."""
    path = store_path()
    get_store()
    return _metrics(path, stamp(path))


@st.cache_resource(show_spinner=False, max_entries=4)
def _metric_combinations(path: str, file_stamp: tuple) -> pd.DataFrame:
    from hwlab._figure_data import combinations

    return combinations(_store(path).aggregate(["model", "dataset"], aggregates=False))


def metric_combinations() -> pd.DataFrame:
    """(model, dataset, rows) of the non-aggregate rows, most rows first."""
    path = store_path()
    get_store()
    return _metric_combinations(path, stamp(path))


@st.cache_resource(show_spinner=False, max_entries=4)
def _clean_metrics(path: str, file_stamp: tuple) -> pd.DataFrame:
    from hwlab._figure_data import with_metrics

    store = _store(path)
    return with_metrics(_text(store.select(clean=True, aggregates=False)), store.study_kinds())


def clean_metrics() -> pd.DataFrame:
    """The fault-free non-aggregate rows with one column per metric meaning (with_metrics)."""
    path = store_path()
    get_store()
    return _clean_metrics(path, stamp(path))


BER_KEYS = ["study", "run_id", "module", "model", "dataset", "variant", "dtype", "fault_model",
            "fault_rate"]


@st.cache_resource(show_spinner=False, max_entries=4)
def _ber_points(path: str, file_stamp: tuple) -> pd.DataFrame:
    agg = _store(path).aggregate(BER_KEYS, ["accuracy"], ber=True, aggregates=False)
    return _text(agg.assign(accuracy=agg["accuracy_sum"] / agg["accuracy_n"]))


def ber_points() -> pd.DataFrame:
    """One row per (run, configuration, fault model, bit error rate) of the weight-fault rows
    (:func:`hwlab._figure_data.ber_rows`, aggregates left out): ``rows``, the accuracy sums and
    their mean ``accuracy``."""
    path = store_path()
    get_store()
    return _ber_points(path, stamp(path))


def _of_dataset(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    return df[df["dataset"].astype("string").fillna("?") == dataset]


@st.cache_resource(show_spinner=False, max_entries=16)
def _dataset_metrics(path: str, file_stamp: tuple, dataset: str) -> tuple:
    return (_of_dataset(_clean_metrics(path, file_stamp), dataset),
            _of_dataset(_ber_points(path, file_stamp), dataset))


def dataset_metrics(dataset: str) -> tuple:
    """``(fault-free rows, weight-fault points)`` of one dataset (:func:`clean_metrics`,
    :func:`ber_points`)."""
    path = store_path()
    get_store()
    return _dataset_metrics(path, stamp(path), dataset)


@st.cache_data(show_spinner=False, max_entries=32)
def _reliability(path: str, file_stamp: tuple, dataset: str, ber: float, fm: str):
    import numpy as np

    from app._frames import reliability_configs

    clean, faulty = _dataset_metrics(path, file_stamp, dataset)
    hit = faulty[(faulty["module"] != "localtrain") & (faulty["fault_model"] == fm)
                 & np.isclose(faulty["fault_rate"], ber)]
    return reliability_configs(clean[clean["module"] != "localtrain"], ber, fm, at_ber=hit)


def reliability(dataset: str, ber: float, fault_model: str) -> pd.DataFrame:
    """:func:`app._frames.reliability_configs` of one dataset (local-learning rows left out):
    fault-free rows read as rows, the accuracy at ``ber`` from the store's sums."""
    path = store_path()
    get_store()
    return _reliability(path, stamp(path), dataset, ber, fault_model)


@st.cache_data(show_spinner=False, max_entries=16)
def _points(path: str, file_stamp: tuple, x: str, y: str) -> pd.DataFrame:
    from app._frames import aggregate_points

    return aggregate_points(_clean_metrics(path, file_stamp), x, y)


def points(x: str, y: str) -> pd.DataFrame:
    """Every fault-free measured point's mean ``x`` and ``y`` (trials averaged), for the
    Overview (aggregate rows excluded)."""
    path = store_path()
    get_store()
    return _points(path, stamp(path), x, y)


@st.cache_resource(show_spinner=False, max_entries=32)
def _study_points(path: str, file_stamp: tuple, study: str) -> pd.DataFrame:
    from hwlab._figure_data import study_points

    return _text(study_points(_store(path), study)).reset_index(drop=True)


def study_points(study: str) -> pd.DataFrame:
    """One row per point of a study (run, method, model, dataset, variant, format, fault model
    and rate): ``rows``, the accuracy sums of :meth:`Store.aggregate` and their mean
    ``accuracy``; :func:`hwlab._figure_data.summarize_sums` gives each curve's interval."""
    path = store_path()
    get_store()
    return _study_points(path, stamp(path), study)


@st.cache_resource(show_spinner=False, max_entries=4)
def _run_summary(path: str, file_stamp: tuple) -> pd.DataFrame:
    from hwlab._figure_data import MIB, study_kinds

    store = _store(path)
    agg = store.aggregate(["run_id", "study", "module", "model", "timesteps",
                           "extra.memory_kind"], ["memory_bytes"], aggregates=False)
    _, memory_kind = study_kinds(agg["study"].unique(), store.study_kinds())
    fallback = agg["module"].astype("string").fillna("").map(
        lambda m: "train_memory_bytes" if m == "localtrain" else "model_bytes")
    kind = agg["extra.memory_kind"].astype("object")
    kind = kind.where(kind.notna(), agg["study"].map(memory_kind).astype("object"))
    kind = kind.where(kind.notna(), fallback.astype("object"))
    peak = agg["memory_bytes_max"] / MIB
    steps = agg["timesteps"].notna()
    d = agg.assign(train_memory_bytes=peak.where(kind == "train_memory_bytes"),
                   model_bytes=peak.where(kind == "model_bytes"),
                   steps_sum=(agg["timesteps"] * agg["rows"]).where(steps),
                   steps_n=agg["rows"].where(steps))
    g = d.groupby("run_id")
    return pd.DataFrame({
        "peak training memory (MiB)": g["train_memory_bytes"].max(),
        "weight storage (MiB)": g["model_bytes"].max(),
        "mean steps": g["steps_sum"].sum(min_count=1) / g["steps_n"].sum(min_count=1),
        "models": g["model"].agg(lambda s: ", ".join(sorted(s.dropna().astype(str).unique()))),
    })


def run_summary() -> pd.DataFrame:
    """Per run (index run_id): peak training memory and weight storage (MiB, the metric
    meanings of :func:`hwlab._figure_data.with_metrics`), mean time steps and its models, from
    the store's sums (aggregate rows left out)."""
    path = store_path()
    get_store()
    return _run_summary(path, stamp(path))


COMPARE_KEYS = ["run_id", "module", "method", "model", "dataset", "variant", "dtype",
                "fault_model", "fault_rate", "timesteps"]


@st.cache_data(show_spinner=False, max_entries=16)
def _run_points(path: str, file_stamp: tuple, run_id: str) -> pd.DataFrame:
    agg = _store(path).aggregate(COMPARE_KEYS, ["accuracy"], run_id=run_id, aggregates=False)
    return agg.assign(accuracy=agg["accuracy_sum"] / agg["accuracy_n"])


def run_points(run_id: str) -> pd.DataFrame:
    """One run's points (the columns of :data:`app._frames.COMPARE`) with accuracy sums and
    counts (aggregate rows left out), for the run comparison."""
    path = store_path()
    get_store()
    return _run_points(path, stamp(path), run_id)


def study_rows() -> pd.Series:
    """Result rows per study (from the runs table: no result row is read)."""
    df = runs()
    if df.empty:
        return pd.Series(dtype="int64")
    return df.groupby("study")["n_results"].sum()


def row_count() -> int:
    """Result rows in the store (from the runs table)."""
    df = runs()
    return int(df["n_results"].sum()) if len(df) else 0


@st.cache_data(show_spinner=False, max_entries=16)
def _run_rows(path: str, file_stamp: tuple, run_id: str, limit: int | None) -> pd.DataFrame:
    return _text(_store(path).select(run_id=run_id, limit=limit))


def run_rows(run_id: str, limit: int | None = None) -> pd.DataFrame:
    """The result rows of one run (the first ``limit`` of them)."""
    path = store_path()
    get_store()
    return _run_rows(path, stamp(path), run_id, limit)


@st.cache_data(show_spinner=False, max_entries=16)
def _thresholds(path: str, file_stamp: tuple, module: str) -> pd.DataFrame:
    has = _text(_store(path).select(module=module, contains="thresholds"))
    first = has.drop_duplicates(["run_id", "variant"])  # one set of thresholds per run/variant
    out = parse_extra(first, ("thresholds",))
    return out.loc[out["thresholds"].map(lambda v: isinstance(v, dict)).astype(bool)]


def thresholds(module: str = "faultlab") -> pd.DataFrame:
    """The first row per (run, variant) whose extra holds a ``thresholds`` dict (FT-ClipAct)."""
    path = store_path()
    get_store()
    return _thresholds(path, stamp(path), module)


def with_run_field(df: pd.DataFrame, field: str) -> pd.Series:
    """A column holding ``field`` of each row's run config (None where the config lacks it)."""
    configs = {r: run_config(r).get(field) for r in df["run_id"].unique()}
    return df["run_id"].map(configs)


def export_bytes(fmt: str, study: str | None = None) -> bytes:
    """The results (all, or of one study) as CSV or Parquet bytes, built in memory.

    Used by the Runs page's download button: the file goes to the browser, nothing is written
    on the server (so no path a user types can reach the file system).
    """
    from hwlab.errors import check

    check(fmt in ("CSV", "Parquet"), "fmt", "export_bytes", "'CSV' or 'Parquet'", fmt)
    df = results()
    if study not in (None, "all studies"):
        df = df[df["study"] == study]
    if fmt == "CSV":
        return df.to_csv(index=False).encode()
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def clear() -> None:
    """Forget every cached query (after a study run, or on the sidebar's Reload button)."""
    _results.clear()
    _clean_metrics.clear()
    _ber_points.clear()
    _study_points.clear()
    _run_rows.clear()
    _module_results.clear()
    _runs.clear()
    _module_extra.clear()
    _points.clear()
    _thresholds.clear()
    _study_results.clear()
    _metrics.clear()
    _module_metrics.clear()
    _run_summary.clear()
    _run_points.clear()
    _metric_combinations.clear()
    _dataset_metrics.clear()
    _reliability.clear()


def empty_results() -> pd.DataFrame:
    """A results frame with the right columns and no rows."""
    return pd.DataFrame(columns=[*RESULT_COLUMNS, "study"])
