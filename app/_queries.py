"""Cached reads of the results store for the dashboard pages.

Every page reads the store through these functions only. The store is
``$HWLAB_STORE`` when set (``hwlab dashboard --store PATH`` sets it), else the embedded default
``hwlab.store.Store()`` (``$HWLAB_HOME/hwlab.sqlite``). Reads go through the store's own
parameterised API (:meth:`Store.results`, :meth:`Store.runs`, :meth:`Store.config`); anything a
user types on a page filters the returned DataFrame in pandas and never reaches SQL.

Caching: a query result is cached under the store path plus a *stamp* of the store's files (size
and modification time of the SQLite file and its write-ahead log), so a page sees new rows as soon
as a study writes them, and a page re-run over an unchanged store costs no SQL at all. The large
row tables are ``st.cache_resource`` entries (shared, not copied: pickling 100,000 rows on every
page run would cost more than the page), so callers treat every returned DataFrame as read-only
and derive new frames (filters, ``assign``) instead of changing them in place; the small derived
tables are ``st.cache_data`` entries (copied per caller).
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
    "clear",
    "empty_results",
    "export_bytes",
    "get_store",
    "metrics",
    "module_extra",
    "module_results",
    "parse_extra",
    "points",
    "reliability",
    "results",
    "run_config",
    "runs",
    "stamp",
    "store_path",
    "study_results",
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


@st.cache_resource(show_spinner=False, max_entries=512)
def _run_results(path: str, run_id: str, n_results: int) -> pd.DataFrame:
    # Result rows are insert-only, so (run_id, n_results) identifies a run's rows exactly.
    df = _store(path).results(run_id=run_id)
    # A text column that is NULL in every row of one run comes back as float; make it text so
    # that runs concatenate (and merge) with one dtype per column.
    return df.astype({c: "str" for c in TEXT_COLUMNS})


@st.cache_resource(show_spinner="Reading results…", max_entries=4)
def _results(path: str, file_stamp: tuple) -> pd.DataFrame:
    # Read run by run, each cached on its row count: while a study writes, only its own run is
    # read again, not every row in the store.
    runs = _runs(path, file_stamp)
    parts = [_run_results(path, r, int(n)) for r, n in zip(runs["run_id"], runs["n_results"])
             if n > 0]
    if not parts:
        return _store(path).results()  # the right columns and dtypes, no rows
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


@st.cache_resource(show_spinner=False, max_entries=32)
def _module_results(path: str, file_stamp: tuple, module: str) -> pd.DataFrame:
    df = _results(path, file_stamp)
    return df[df["module"] == module].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=4)
def _runs(path: str, file_stamp: tuple) -> pd.DataFrame:
    return _store(path).runs()


def results() -> pd.DataFrame:
    """Every result row (RESULT_COLUMNS plus ``study``); treat as read-only."""
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
    df = _results(path, file_stamp)
    return df[df["study"] == study].reset_index(drop=True)


def study_results(study: str) -> pd.DataFrame:
    """Result rows of one study (``faultlab.memory``, ...); treat as read-only."""
    path = store_path()
    get_store()
    return _study_results(path, stamp(path), study)


@st.cache_resource(show_spinner=False, max_entries=4)
def _metrics(path: str, file_stamp: tuple) -> pd.DataFrame:
    from hwlab._figure_data import is_aggregate, with_metrics

    df = _results(path, file_stamp)
    return with_metrics(df[~is_aggregate(df)]) if len(df) else with_metrics(df)


def metrics() -> pd.DataFrame:
    """Every non-aggregate row with one column per metric meaning (hwlab._figure_data.METRICS:
    inference / trial / training-step latency, weight storage / training memory in MiB, ...)."""
    path = store_path()
    get_store()
    return _metrics(path, stamp(path))


@st.cache_resource(show_spinner=False, max_entries=4)
def _metric_combinations(path: str, file_stamp: tuple) -> pd.DataFrame:
    from hwlab._figure_data import combinations

    return combinations(_metrics(path, file_stamp))


def metric_combinations() -> pd.DataFrame:
    """(model, dataset, rows) of :func:`metrics`, most rows first."""
    path = store_path()
    get_store()
    return _metric_combinations(path, stamp(path))


@st.cache_resource(show_spinner=False, max_entries=16)
def _dataset_metrics(path: str, file_stamp: tuple, dataset: str) -> tuple:
    from hwlab._figure_data import ber_rows, clean_rows

    m = _metrics(path, file_stamp)
    rows = m[m["dataset"].astype("string").fillna("?") == dataset]
    return rows, rows[clean_rows(rows)], rows[ber_rows(rows)]


def dataset_metrics(dataset: str) -> tuple:
    """``(rows, fault-free rows, weight-fault rows)`` of :func:`metrics` for one dataset."""
    path = store_path()
    get_store()
    return _dataset_metrics(path, stamp(path), dataset)


@st.cache_data(show_spinner=False, max_entries=32)
def _reliability(path: str, file_stamp: tuple, dataset: str, ber: float, fm: str):
    from app._frames import reliability_configs

    rows = _dataset_metrics(path, file_stamp, dataset)[0]
    return reliability_configs(rows[rows["module"] != "localtrain"], ber, fm)


def reliability(dataset: str, ber: float, fault_model: str) -> pd.DataFrame:
    """:func:`app._frames.reliability_configs` of one dataset (local-learning rows left out)."""
    path = store_path()
    get_store()
    return _reliability(path, stamp(path), dataset, ber, fault_model)


@st.cache_data(show_spinner=False, max_entries=16)
def _points(path: str, file_stamp: tuple, x: str, y: str) -> pd.DataFrame:
    from app._frames import aggregate_points

    return aggregate_points(_metrics(path, file_stamp), x, y)


def points(x: str, y: str) -> pd.DataFrame:
    """Every fault-free measured point's mean ``x`` and ``y`` (trials averaged), for the
    Overview (aggregate rows excluded)."""
    path = store_path()
    get_store()
    return _points(path, stamp(path), x, y)


@st.cache_data(show_spinner=False, max_entries=16)
def _thresholds(path: str, file_stamp: tuple, module: str) -> pd.DataFrame:
    df = _module_results(path, file_stamp, module)
    has = df[df["extra"].fillna("").astype(str).str.contains('"thresholds"', regex=False)]
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
    _run_results.clear()
    _module_results.clear()
    _runs.clear()
    _module_extra.clear()
    _points.clear()
    _thresholds.clear()
    _study_results.clear()
    _metrics.clear()
    _metric_combinations.clear()
    _dataset_metrics.clear()
    _reliability.clear()


def empty_results() -> pd.DataFrame:
    """A results frame with the right columns and no rows."""
    return pd.DataFrame(columns=[*RESULT_COLUMNS, "study"])
