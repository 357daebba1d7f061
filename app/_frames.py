"""Pure pandas computations behind the charts: metric metadata, aggregation, CIs, Pareto fronts.

No Streamlit here, so every function is tested directly on small DataFrames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hwlab.errors import check

__all__ = [
    "IDENTITY",
    "METRICS",
    "Metric",
    "aggregate_points",
    "fixed_t",
    "log_fits",
    "mean_ci",
    "numeric_metrics",
    "pareto_front",
]


@dataclass(frozen=True)
class Metric:
    label: str
    better: str  # "max" or "min": the direction a Pareto front prefers
    log: bool  # whether a log axis is the natural default (when the values allow it)


METRICS = {
    "accuracy": Metric("Accuracy", "max", False),
    "memory_bytes": Metric("Memory (bytes)", "min", True),
    "latency_ms": Metric("Latency (ms)", "min", True),
    "fault_rate": Metric("Fault rate (per bit)", "max", True),  # tolerating more faults is better
    "timesteps": Metric("Time steps", "min", False),
    "params": Metric("Parameters", "min", True),
}

# Columns that identify one measured point; trials and seeds are averaged over.
IDENTITY = ("run_id", "study", "module", "method", "model", "dataset", "variant", "fault_model",
            "fault_rate", "timesteps")


def numeric_metrics(df: pd.DataFrame) -> list[str]:
    """The metrics of :data:`METRICS` that have at least one non-missing value in ``df``."""
    return [m for m in METRICS if m in df and df[m].notna().any()]


def log_fits(values: pd.Series, min_span: float = 50.0) -> bool:
    """A log axis fits when every value is positive and they span at least ``min_span`` x."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(v)) and bool((v > 0).all()) and float(v.max() / v.min()) >= min_span


def aggregate_points(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean of ``x`` and ``y`` per measured point (see :data:`IDENTITY`), with the row count ``n``.

    Rows where ``x`` or ``y`` is missing are dropped. The result has the identity columns, ``x``,
    ``y``, ``n`` and a ``series`` label ("module · method") for colouring.
    """
    check(x != y, "y", "aggregate_points", f"a metric other than x={x!r}", y)
    d = df[df[x].notna() & df[y].notna()]
    keys = [c for c in IDENTITY if c in d]  # x or y in IDENTITY (fault rate, T) stay keys
    values = [m for m in (x, y) if m not in keys]
    if d.empty:
        return pd.DataFrame(columns=[*keys, *values, "n", "series"])
    d = d[list(dict.fromkeys([*keys, x, y]))].astype({x: "float64", y: "float64"})
    g = d.groupby(keys, dropna=False, sort=False)
    out = g[values].mean() if values else pd.DataFrame(index=g.size().index)
    out["n"] = g.size()
    out = out.reset_index()
    out["series"] = out["module"].fillna("?") + " · " + out["method"].fillna("?")
    return out


def pareto_front(df: pd.DataFrame, x: str, y: str, x_better: str | None = None,
                 y_better: str | None = None) -> pd.DataFrame:
    """The non-dominated rows of ``df`` for metrics ``x`` and ``y``, sorted by ``x``.

    A row is dominated when another is at least as good on both metrics and better on one.
    Directions default to :data:`METRICS` ("max" for accuracy and fault rate, "min" otherwise).
    O(n log n): sort by x (best first), keep a row when its y beats every row before it.
    """
    x_better = x_better or METRICS.get(x, Metric(x, "min", False)).better
    y_better = y_better or METRICS.get(y, Metric(y, "max", False)).better
    for name, value in (("x_better", x_better), ("y_better", y_better)):
        check(value in ("min", "max"), name, "pareto_front", "'min' or 'max'", value)
    d = df[df[x].notna() & df[y].notna()]
    if d.empty:
        return d.copy()
    sx = d[x].to_numpy(float) * (1 if x_better == "min" else -1)
    sy = d[y].to_numpy(float) * (1 if y_better == "min" else -1)
    order = np.lexsort((sy, sx))  # by sx, ties broken by sy: best first
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], sy[order][:-1]]))
    keep = order[sy[order] < best_before]
    return d.iloc[keep].sort_values(x).reset_index(drop=True)


def mean_ci(df: pd.DataFrame, by: list[str], value: str = "accuracy",
            confidence: float = 0.95) -> pd.DataFrame:
    """Mean of ``value`` per group with a Student-t confidence interval over the rows (trials).

    Columns: ``by``, ``mean``, ``lo``, ``hi``, ``n``, ``std``. A group of one row has lo = hi =
    mean (no interval can be drawn from one trial).
    """
    check(0 < confidence < 1, "confidence", "mean_ci", "in (0, 1)", confidence)
    d = df[df[value].notna()]
    if d.empty:
        return pd.DataFrame(columns=[*by, "mean", "lo", "hi", "n", "std"])
    g = d.groupby(by, dropna=False, sort=True)[value]
    out = g.agg(mean="mean", std="std", n="size").reset_index()
    n = out["n"].to_numpy(float)
    t = np.where(n > 1, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), 0.0)
    half = t * out["std"].fillna(0).to_numpy(float) / np.sqrt(n)
    out["lo"] = out["mean"] - half
    out["hi"] = out["mean"] + half
    return out


_FIXED_T = re.compile(r"^fixed-T(\d+)$")


def fixed_t(variants: pd.Series) -> pd.Series:
    """The T of ``fixed-T<T>`` variant names (NaN for any other variant)."""
    return pd.to_numeric(variants.astype(str).str.extract(_FIXED_T, expand=False),
                         errors="coerce")
