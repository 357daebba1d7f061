"""Pure pandas computations behind the dashboard's charts: aggregation, Pareto fronts, colours.

No Streamlit here, so every function is tested directly on small DataFrames. Metric meanings,
intervals and selections come from :mod:`hwlab._figure_data` (shared with ``hwlab figure``).
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pandas as pd

from hwlab._figure_data import METRICS, Metric, clean_rows, is_oracle, summarize
from hwlab.errors import check

__all__ = [
    "IDENTITY",
    "METRICS",
    "Metric",
    "aggregate_points",
    "compare_runs",
    "fixed_t",
    "log_fits",
    "numeric_metrics",
    "pareto_front",
    "reliability_configs",
    "series_colors",
    "summarize",
]

# Columns that identify one measured point; trials and seeds are averaged over.
IDENTITY = ("run_id", "study", "module", "method", "model", "dataset", "variant", "dtype",
            "fault_model", "fault_rate", "timesteps")
AXES = tuple(m for m in METRICS if m != "fault_rate")  # fault rate is a condition, not an axis
# A fixed colour per module · method (the same in every chart, whatever the axes show).
_KNOWN = ("hwlab · zoo", "faultlab · fault-injection", "faultlab · ft-clipact",
          "faultlab · mitigation", "faultlab · memory-protection", "faultlab · vulnerability",
          "faultlab · systolic", "spiking · converted", "spiking · direct", "quantum · creep",
          "localtrain · e2e", "localtrain · dgl", "localtrain · infopro", "localtrain · man",
          "localtrain · auglocal", "localtrain · fr")
_PALETTE = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2",
            "#ff9da6", "#9d755d", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd",
            "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939")


def series_colors(series) -> dict[str, str]:
    """A colour for each ``module · method``: fixed for known series, a stable hash otherwise."""
    out = {}
    for s in sorted(set(map(str, series))):
        i = _KNOWN.index(s) if s in _KNOWN else len(_KNOWN) + zlib.crc32(s.encode()) % 4
        out[s] = _PALETTE[i % len(_PALETTE)]
    return out


def numeric_metrics(df: pd.DataFrame, axes: tuple = AXES) -> list[str]:
    """The metrics of ``axes`` that have at least one non-missing value in ``df``."""
    return [m for m in axes if m in df and df[m].notna().any()]


def log_fits(values: pd.Series, min_span: float = 50.0) -> bool:
    """A log axis fits when every value is positive and they span at least ``min_span`` x."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(v)) and bool((v > 0).all()) and float(v.max() / v.min()) >= min_span


def aggregate_points(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean of ``x`` and ``y`` per fault-free measured point (see :data:`IDENTITY`), with the row
    count ``n``, a ``series`` label ("module · method") and ``oracle`` (never on a front).

    ``df`` is a frame of :func:`hwlab._figure_data.with_metrics`; rows with a fault rate > 0
    and rows where ``x`` or ``y`` is missing are dropped.
    """
    check(x != y, "y", "aggregate_points", f"a metric other than x={x!r}", y)
    d = df[df[x].notna() & df[y].notna()]
    d = d[clean_rows(d)] if len(d) else d
    keys = [c for c in IDENTITY if c in d and c not in (x, y)]
    if d.empty:
        return pd.DataFrame(columns=[*keys, x, y, "n", "series", "oracle"])
    d = d[[*keys, x, y]].astype({x: "float64", y: "float64"})
    d = d.assign(**{k: d[k].astype("string").fillna("") for k in keys
                    if k not in ("fault_rate", "timesteps")})
    g = d.groupby(keys, dropna=False, sort=False)
    out = g[[x, y]].mean()
    out["n"] = g.size()
    out = out.reset_index()
    out["series"] = out["module"].replace("", "?") + " · " + out["method"].replace("", "?")
    out["oracle"] = is_oracle(out).to_numpy()
    return out


def pareto_front(df: pd.DataFrame, x: str, y: str, x_better: str | None = None,
                 y_better: str | None = None) -> pd.DataFrame:
    """The non-dominated rows of ``df`` for metrics ``x`` and ``y``, sorted by ``x``.

    A row is dominated when another is at least as good on both metrics and better on one.
    Directions default to :data:`METRICS`; a metric without one (fault rate, campaign trial
    time: conditions of an experiment, not objectives) has no front (empty result). Oracle rows
    (column ``oracle``) are never on a front. O(n log n): sort by x (best first), keep a row
    when its y beats every row before it.
    """
    x_better = x_better or METRICS.get(x, Metric(x, "min", False)).better
    y_better = y_better or METRICS.get(y, Metric(y, "max", False)).better
    if x_better is None or y_better is None:
        return df.iloc[:0].copy()
    for name, value in (("x_better", x_better), ("y_better", y_better)):
        check(value in ("min", "max"), name, "pareto_front", "'min' or 'max'", value)
    d = df[df[x].notna() & df[y].notna()]
    if "oracle" in d:
        d = d[~d["oracle"].astype(bool)]
    if d.empty:
        return d.copy()
    sx = d[x].to_numpy(float) * (1 if x_better == "min" else -1)
    sy = d[y].to_numpy(float) * (1 if y_better == "min" else -1)
    order = np.lexsort((sy, sx))  # by sx, ties broken by sy: best first
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], sy[order][:-1]]))
    keep = order[sy[order] < best_before]
    return d.iloc[keep].sort_values(x).reset_index(drop=True)


_FIXED_T = re.compile(r"^fixed-T(\d+)$")


def fixed_t(variants: pd.Series) -> pd.Series:
    """The T of ``fixed-T<T>`` variant names (NaN for any other variant)."""
    return pd.to_numeric(variants.astype(str).str.extract(_FIXED_T, expand=False),
                         errors="coerce")




_WORD_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "float64": 8}


def reliability_configs(df: pd.DataFrame, ber: float, fault_model: str,
                        at_ber: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration (study, run, model, variant, dtype): fault-free accuracy,
    weight storage in MiB (stored ``memory_bytes``, else parameters x bytes of the format) and
    mean accuracy at ``ber`` under ``fault_model`` (NaN: not measured there).

    ``at_ber``: the rows at ``ber`` under ``fault_model`` already aggregated (sums of
    :meth:`hwlab.store.Store.aggregate`: ``accuracy_sum`` and ``accuracy_n`` per point);
    without it they are the matching rows of ``df``."""
    from hwlab._figure_data import MIB, ber_rows

    keys = ["study", "run_id", "model", "dataset", "variant", "dtype"]
    d = df[[*keys, "accuracy", "model_bytes", "params", "fault_rate", "fault_model"]]
    d = d.assign(**{k: d[k].astype("string").fillna("") for k in keys})
    clean = d[clean_rows(d) & d["accuracy"].notna()]
    out = clean.groupby(keys).agg(clean=("accuracy", "mean"), stored=("model_bytes", "mean"),
                                  params=("params", "max")).reset_index()
    if out.empty:
        return out.assign(memory=[], memory_source=[], at_ber=[])
    per_word = out["dtype"].astype(str).map(_WORD_BYTES).astype("float64")
    estimate = out["params"].astype("float64") * per_word / MIB
    out["memory"] = out["stored"].fillna(estimate)
    out["memory_source"] = np.where(out["stored"].notna(), "stored bytes",
                                    "parameters x bytes of the format")
    if at_ber is None:
        hit = d[ber_rows(d) & np.isclose(d["fault_rate"], ber) & (d["fault_model"] == fault_model)]
        at = hit.groupby(keys)["accuracy"].mean().rename("at_ber").reset_index()
    else:
        hit = at_ber.assign(**{k: at_ber[k].astype("string").fillna("") for k in keys})
        sums = hit.groupby(keys)[["accuracy_sum", "accuracy_n"]].sum(min_count=1)
        at = (sums["accuracy_sum"] / sums["accuracy_n"]).rename("at_ber").reset_index()
    return out.merge(at, on=keys, how="left")


COMPARE = ("module", "method", "model", "dataset", "variant", "dtype", "fault_model",
           "fault_rate", "timesteps")


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, value: str = "accuracy"):
    """Join two runs' mean ``value`` point by point: ``(both, keys, labels)``.

    The join keys are the columns of :data:`COMPARE` that vary inside either run (the points of
    a sweep: fault model, rate, variant, dataset, ...) or hold the same value in both; a column
    that is constant in each run but differs between them (e.g. ``dtype`` float32 vs float16)
    is what the runs compare, so it labels the sides instead (``labels[col] = (a, b)``).
    ``both`` has the keys, ``VALUE A``, ``n A``, ``VALUE B``, ``n B`` and ``VALUE B - A``
    (NaN where a point is in one run only). Nothing is averaged across keys. ``a`` and ``b``
    are rows, or points with the sums of :meth:`hwlab.store.Store.aggregate` (``VALUE_sum``,
    ``VALUE_n``: the same means and counts).
    """
    sums = f"{value}_n" in a  # points of Store.aggregate: sums and counts per point

    def norm(d):
        d = d[d[f"{value}_n"] > 0] if sums else d[d[value].notna()]
        out = d.assign(**{c: d[c].astype("string").fillna("-") for c in COMPARE
                          if c not in ("fault_rate", "timesteps")})
        return out.assign(fault_rate=pd.to_numeric(d["fault_rate"]).fillna(-1.0),
                          timesteps=pd.to_numeric(d["timesteps"]).fillna(-1.0))

    a, b = norm(a), norm(b)
    keys, labels = [], {}
    for c in COMPARE:
        va, vb = set(a[c]), set(b[c])
        if len(va) == 1 and len(vb) == 1 and va != vb:
            labels[c] = (next(iter(va)), next(iter(vb)))
        else:
            keys.append(c)
    sides = []
    for d, s in ((a, "A"), (b, "B")):
        if sums:
            t = d.groupby(keys)[[f"{value}_sum", f"{value}_n"]].sum()
            g = pd.DataFrame({"mean": t[f"{value}_sum"] / t[f"{value}_n"],
                              "size": t[f"{value}_n"].astype("int64")}).reset_index()
        else:
            g = d.groupby(keys)[value].agg(["mean", "size"]).reset_index()
        sides.append(g.rename(columns={"mean": f"{value} {s}", "size": f"n {s}"}))
    both = sides[0].merge(sides[1], on=keys, how="outer")
    both[f"{value} B - A"] = both[f"{value} B"] - both[f"{value} A"]
    for c in ("fault_rate", "timesteps"):
        if c in both:
            both[c] = both[c].where(both[c] >= 0)
    return both, keys, labels
