"""Pure pandas behind the figures: what each stored number means, honest intervals, selections.

Used by :mod:`hwlab.figures` (the ``hwlab figure`` command) and the dashboard, so a chart in the
app and the same figure from the CLI are built from the same frames. Reads store rows only
(``Store.results()`` frames); imports no method package.

What a stored ``latency_ms`` / ``memory_bytes`` means depends on the study that wrote it, so the
figures never put two meanings on one axis. :func:`with_metrics` turns them into distinct
metrics (:data:`METRICS`): inference latency per sample, campaign trial time, training step
time; weight storage bytes, peak training memory, protection overhead. What a study's numbers
mean is said by the study itself (``Study.latency_kind`` / ``memory_kind``, read from the
registry by :func:`study_kinds`); a row may say it with ``extra.latency_kind`` /
``extra.memory_kind``, and the rows of a study that says nothing (or is not installed here)
fall back by module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hwlab.errors import check, fail
from hwlab.stats import PROPORTIONS, mean_ci, proportion_ci

__all__ = ["METRICS", "POINT_KEYS", "PROPORTIONS", "Metric", "ber_rows",
           "clean_rows", "combinations", "extra_number", "is_aggregate", "is_oracle",
           "mean_ci_sums", "pick_combination", "proportion_ci", "proportion_ci_sums", "study_kinds",
           "study_points", "summarize", "summarize_sums", "with_metrics"]

MIN_BAND_TRIALS = 3  # fewer trials than this: the trials are drawn, not a band


@dataclass(frozen=True)
class Metric:
    label: str  # axis title, with its unit
    better: str | None  # "min" / "max" for a trade-off front; None: a condition, never a front
    log: bool  # whether a log axis is the natural default (when the values allow it)


METRICS = {
    "accuracy": Metric("Accuracy", "max", False),
    "inference_ms": Metric("Inference latency per sample (ms)", "min", True),
    "train_step_ms": Metric("Training step time (ms)", "min", True),
    "trial_ms": Metric("Campaign trial time (ms)", None, True),  # the experiment's cost
    "model_bytes": Metric("Weight storage (MiB)", "min", True),
    "train_memory_bytes": Metric("Peak training memory (MiB)", "min", True),
    "protection_overhead": Metric("Protection memory overhead (% of weight bits)", "min", False),
    "timesteps": Metric("Mean time steps", "min", False),
    "params": Metric("Parameters", "min", True),
    "fault_rate": Metric("Fault rate (per bit)", None, True),  # a condition, not an objective
}
MIB = 2.0 ** 20
OVERHEAD_KEYS = ("memory_overhead", "code_overhead")  # extra fields: extra bits / weight bits
_BER_FAULTS = r"^(bitflip|stuck0|stuck1|burst|row|asym)"  # faults of stored bits: rate = BER


def extra_number(df: pd.DataFrame, key: str) -> pd.Series:
    """The numeric ``extra[key]`` of every row (NaN where absent), without parsing all JSON."""
    if "extra" not in df or df.empty:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    pattern = rf'"{key}":\s*(-?[0-9.eE+-]+|true|false|NaN|Infinity|-Infinity)'
    extra = df["extra"].astype("string")
    has = extra.str.contains(f'"{key}"', regex=False).fillna(False).astype(bool)
    out = pd.Series(np.nan, index=df.index, dtype="float64")
    if has.any():  # the regex only on rows that can hold the key (cheap on 100,000 rows)
        raw = extra[has].str.extract(pattern, expand=False).replace({"true": "1", "false": "0"})
        out[has] = pd.to_numeric(raw, errors="coerce").astype("float64")
    return out


def _extra_text(df: pd.DataFrame, key: str) -> pd.Series:
    if "extra" not in df or df.empty:
        return pd.Series(None, index=df.index, dtype="object")
    extra = df["extra"].astype("string")
    has = extra.str.contains(f'"{key}"', regex=False).fillna(False).astype(bool)
    out = pd.Series(None, index=df.index, dtype="object")
    if has.any():
        out[has] = extra[has].str.extract(rf'"{key}":\s*"([^"]*)"', expand=False)
    return out


def is_aggregate(df: pd.DataFrame) -> pd.Series:
    """Rows that summarise other rows (``*-mean`` methods or variants): never plotted beside
    the rows they average."""
    method = df["method"].astype("string").fillna("")
    variant = df["variant"].astype("string").fillna("")
    return method.str.endswith("-mean") | variant.str.endswith("-mean")


def is_oracle(df: pd.DataFrame) -> pd.Series:
    """Oracle rows (they read the label to stop): a bound, never on a trade-off front."""
    return df["variant"].astype("string").fillna("").str.startswith("oracle")


def clean_rows(df: pd.DataFrame) -> pd.Series:
    """Fault-free rows: no fault rate, rate 0, or fault model ``none``."""
    rate = pd.to_numeric(df["fault_rate"], errors="coerce")
    none = df["fault_model"].astype("string").fillna("none").isin(["none", "None", "nan"])
    return rate.isna() | (rate == 0) | (none & rate.isna())


def ber_rows(df: pd.DataFrame) -> pd.Series:
    """Rows with faults in stored bits at a positive rate (the rate is a bit error rate)."""
    rate = pd.to_numeric(df["fault_rate"], errors="coerce")
    ber = df["fault_model"].astype("string").fillna("").str.match(_BER_FAULTS)
    return ber & (rate > 0)


def study_kinds(names, known=None) -> tuple[dict[str, str], dict[str, str]]:
    """``({study: latency kind}, {study: memory kind})`` of the studies among ``names`` that say
    what their ``latency_ms`` / ``memory_bytes`` mean (``Study.latency_kind`` / ``memory_kind``).
    ``known``: ``{study: (latency kind, memory kind)}`` as a store recorded them
    (``Store.study_kinds``); only the other studies are looked up in the registry (which imports
    them); a study that is not installed here is left out (its rows fall back)."""
    latency, memory = {}, {}
    known = known or {}
    for name in names:
        if str(name) in known:
            lat, mem = known[str(name)]
            if lat is not None:
                latency[str(name)] = lat
            if mem is not None:
                memory[str(name)] = mem
            continue
        from hwlab.studies import find_study

        study = find_study(str(name))
        if study is not None and study.latency_kind is not None:
            latency[str(name)] = study.latency_kind
        if study is not None and study.memory_kind is not None:
            memory[str(name)] = study.memory_kind
    return latency, memory


def with_metrics(df: pd.DataFrame, kinds=None) -> pd.DataFrame:
    """``df`` plus one column per :data:`METRICS` entry, each with one meaning (and unit).

    ``latency_ms`` goes to inference_ms / trial_ms / train_step_ms, ``memory_bytes`` to
    model_bytes / train_memory_bytes (in MiB), the protection overhead (``extra.memory_overhead``
    or ``extra.code_overhead``) to protection_overhead in percent. The input is not changed.
    ``kinds``: what a store recorded of its studies (:func:`study_kinds`), so that reading rows
    imports no study.
    """
    out = df.copy()
    study = out.get("study", pd.Series("", index=out.index)).astype("string").fillna("")
    module = out["module"].astype("string").fillna("")
    latency_kind, memory_kind = study_kinds(study.unique(), kinds)
    lat_kind = study.map(latency_kind).astype("object")
    clean = clean_rows(out)
    fallback = np.where(module == "localtrain", "train_step_ms",
                        np.where(clean, "inference_ms", "trial_ms"))
    lat_kind = lat_kind.where(lat_kind.notna(), pd.Series(fallback, index=out.index))
    lat_kind = _extra_text(out, "latency_kind").fillna(lat_kind)
    mem_kind = study.map(memory_kind).astype("object")
    mem_kind = mem_kind.where(mem_kind.notna(), pd.Series(
        np.where(module == "localtrain", "train_memory_bytes", "model_bytes"), index=out.index))
    mem_kind = _extra_text(out, "memory_kind").fillna(mem_kind)
    latency = pd.to_numeric(out["latency_ms"], errors="coerce").astype("float64")
    memory = pd.to_numeric(out["memory_bytes"], errors="coerce").astype("float64") / MIB
    for kind in ("inference_ms", "trial_ms", "train_step_ms"):
        out[kind] = latency.where(lat_kind == kind)
    for kind in ("model_bytes", "train_memory_bytes"):
        out[kind] = memory.where(mem_kind == kind)
    overhead = pd.Series(np.nan, index=out.index, dtype="float64")
    for key in OVERHEAD_KEYS:
        overhead = overhead.fillna(extra_number(out, key))
    out["protection_overhead"] = 100.0 * overhead
    for c in ("accuracy", "timesteps", "params", "fault_rate"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    return out


def implied_count(values, limit: int = 10**5) -> float | None:
    """The smallest sample count consistent with every value being ``k / n`` (or None).

    Each value's reduced fraction has a denominator that divides the true count, so their least
    common multiple is a lower bound of it: an interval on this count is at least as wide as
    one on the true count. None when a value is not such a fraction (a weighted mean, say).
    """
    from fractions import Fraction

    n = 1
    for v in values:
        f = Fraction(float(v)).limit_denominator(limit)
        if abs(float(f) - float(v)) > 1e-12:
            return None
        n = math.lcm(n, f.denominator)
        if n > limit:
            return None
    return float(n)


def summarize(df: pd.DataFrame, by: list[str], value: str = "accuracy",
              confidence: float = 0.95) -> pd.DataFrame:
    """Mean of ``value`` per group with its interval and trial count.

    A proportion (:data:`PROPORTIONS`) gets :func:`proportion_ci` (``mean`` is then the pooled
    proportion: the trials' mean when they share a denominator), with each row's denominator
    from ``extra.n_samples`` when every row of the group has it, else the smallest count
    consistent with the values (:func:`implied_count`: never narrower than the true count's
    interval), else one per trial (conservative); anything else the Student-t
    interval. Columns: ``by``, ``mean``, ``lo``, ``hi``, ``n`` and ``band`` (True when n >=
    :data:`MIN_BAND_TRIALS`: with fewer trials the charts draw the trials themselves).
    """
    check(0 < confidence < 1, "confidence", "summarize", "in (0, 1)", confidence)
    cols = [*by, "mean", "lo", "hi", "n", "band"]
    d = df[pd.to_numeric(df[value], errors="coerce").notna()]
    if d.empty:
        return pd.DataFrame(columns=cols)
    vals = pd.to_numeric(d[value], errors="coerce").to_numpy(np.float64)
    counts = extra_number(d, "n_samples").to_numpy(np.float64)
    rows = []
    groups = d.groupby(by, dropna=False, sort=True).indices
    for keys, idx in groups.items():
        v = vals[idx]
        if value in PROPORTIONS:
            c = counts[idx]
            if np.isnan(c).any():  # no stored denominators: the smallest consistent count
                implied = implied_count(v)
                c = None if implied is None else np.full(len(v), implied)
            mean, lo, hi = proportion_ci(v, c, confidence)
        else:
            mean, lo, hi = mean_ci(v, confidence)
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append({**dict(zip(by, keys)), "mean": mean, "lo": lo, "hi": hi, "n": len(v),
                     "band": len(v) >= MIN_BAND_TRIALS})
    return pd.DataFrame(rows, columns=cols)


def _variance(n: float, vsum: float, vsumsq: float) -> float:
    """The sample variance (ddof=1) from sums; 0 where it is below the rounding of the sums
    (a relative spread under 1e-6: equal values would otherwise leave a rounding residue)."""
    ss = vsumsq - vsum * vsum / n
    return 0.0 if ss <= 1e-12 * abs(vsumsq) else ss / (n - 1)


def proportion_ci_sums(m: float, total: float, wsum: float, vsum: float, vsumsq: float,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """:func:`hwlab.stats.proportion_ci` from sums instead of the trials themselves.

    ``m`` trials with proportions ``v_i`` and denominators ``n_i``: ``total = sum(n_i)``,
    ``wsum = sum(v_i n_i)``, ``vsum = sum(v_i)``, ``vsumsq = sum(v_i^2)``. The estimate, the
    Kish effective size (from the trials' variance ``(vsumsq - vsum^2/m) / (m - 1)``) and the
    Wilson bounds are those of ``proportion_ci`` step by step, so a group's interval is the
    same whether its rows or the store's sums of them are at hand (equal to rounding of the
    sums; tests hold them to 1e-9).
    """
    from scipy import stats

    check(0 < confidence < 1, "confidence", "proportion_ci_sums", "in (0, 1)", confidence)
    if m <= 0 or total <= 0:
        return math.nan, math.nan, math.nan
    p = float(np.clip(wsum / total, 0.0, 1.0))
    size, z = total, float(stats.norm.ppf(0.5 + confidence / 2))
    if m >= 2 and 0 < p < 1:
        s2 = _variance(m, vsum, vsumsq)
        if s2 > 0 and p * (1 - p) * m / s2 < total:
            size = p * (1 - p) * m / s2
            z = float(stats.t.ppf(0.5 + confidence / 2, m - 1))
    denom = 1 + z * z / size
    centre = (p + z * z / (2 * size)) / denom
    half = z * math.sqrt(p * (1 - p) / size + z * z / (4 * size * size)) / denom
    low = 0.0 if p == 0.0 else max(0.0, centre - half)
    high = 1.0 if p == 1.0 else min(1.0, centre + half)
    return p, low, high


def mean_ci_sums(n: float, vsum: float, vsumsq: float,
                 confidence: float = 0.95) -> tuple[float, float, float]:
    """:func:`hwlab.stats.mean_ci` (Student-t) from ``n``, ``sum(v)`` and ``sum(v^2)``."""
    from scipy import stats

    if n <= 0:
        return math.nan, math.nan, math.nan
    mean = vsum / n
    if n == 1:
        return mean, math.nan, math.nan
    var = _variance(n, vsum, vsumsq)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * math.sqrt(var) / math.sqrt(n))
    return mean, mean - half, mean + half


def _lcm_of(parts) -> float:
    n = 1
    for p in parts:
        if p is None or math.isnan(p):
            return math.nan
        n = math.lcm(n, int(p))
    return float(n) if n <= 10**5 else math.nan


def summarize_sums(agg: pd.DataFrame, by: list[str], value: str = "accuracy",
                   confidence: float = 0.95) -> pd.DataFrame:
    """:func:`summarize` from the sums of :meth:`hwlab.store.Store.aggregate` (``value``'s
    ``_n``, ``_sum``, ``_sumsq``, ``_wn``, ``_w``, ``_wsum`` and ``_values`` columns): the
    groups of ``agg`` that share ``by`` are added up first (sums are additive), then each gets
    the interval :func:`summarize` gives on its rows: a proportion's denominators are the
    stored ``n_samples`` when every row has one, else the smallest count consistent with the
    values (``_lcm``: :func:`implied_count` of each group, merged by their least common
    multiple), else one per trial."""
    check(0 < confidence < 1, "confidence", "summarize_sums", "in (0, 1)", confidence)
    cols = [*by, "mean", "lo", "hi", "n", "band"]
    a = agg[agg[f"{value}_n"] > 0]
    if a.empty:
        return pd.DataFrame(columns=cols)
    sums = [f"{value}_{k}" for k in ("n", "sum", "sumsq", "wn", "w", "wsum") if f"{value}_{k}" in a]
    rows = []
    for keys, g in a.groupby(by, dropna=False, sort=True):
        t = g[sums].sum()
        m = float(t[f"{value}_n"])
        if value in PROPORTIONS:
            if f"{value}_wn" in t and float(t[f"{value}_wn"]) == m:  # every row has n_samples
                total, wsum = float(t[f"{value}_w"]), float(t[f"{value}_wsum"])
            else:  # the smallest count consistent with every value, else one per trial
                implied = _lcm_of(g[f"{value}_lcm"]) if f"{value}_lcm" in g else math.nan
                c = 1.0 if math.isnan(implied) else implied
                total, wsum = m * c, float(t[f"{value}_sum"]) * c
            mean, lo, hi = proportion_ci_sums(m, total, wsum, float(t[f"{value}_sum"]),
                                              float(t[f"{value}_sumsq"]), confidence)
        else:
            mean, lo, hi = mean_ci_sums(m, float(t[f"{value}_sum"]),
                                        float(t[f"{value}_sumsq"]), confidence)
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append({**dict(zip(by, keys)), "mean": mean, "lo": lo, "hi": hi, "n": int(m),
                     "band": m >= MIN_BAND_TRIALS})
    return pd.DataFrame(rows, columns=cols)


POINT_KEYS = ("study", "run_id", "module", "method", "model", "dataset", "variant", "dtype",
              "extra.dtype", "fault_model", "fault_rate")  # one point: a run's trials of one condition


def study_points(store, study: str, value: str = "accuracy") -> pd.DataFrame:
    """One row per point of ``study`` (:data:`POINT_KEYS`) with the sums of
    :meth:`hwlab.store.Store.aggregate` for ``value`` (``value_n``, ``value_sum``, ... and
    ``value_lcm``), ``rows`` and the mean ``value``: what a fault sweep draws (its curves and
    intervals follow from the sums, :func:`summarize_sums`), without reading the rows."""
    agg = store.aggregate(list(POINT_KEYS), [value], lcm=[value], study=study)
    return agg.assign(**{value: agg[f"{value}_sum"] / agg[f"{value}_n"], "extra": None})


def combinations(df: pd.DataFrame) -> pd.DataFrame:
    """(model, dataset) pairs with their row counts, most rows first (ties: newest run).

    ``df`` holds result rows, or groups of them with their count in a ``rows`` column (the
    frames of :meth:`hwlab.store.Store.aggregate`)."""
    if df.empty:
        return pd.DataFrame(columns=["model", "dataset", "rows"])
    g = pd.DataFrame({"model": df["model"].astype("string").fillna("?"),
                      "dataset": df["dataset"].astype("string").fillna("?")})
    if "rows" in df:
        g["rows"] = df["rows"].to_numpy("int64")
        out = g.groupby(["model", "dataset"])["rows"].sum().reset_index()
        out = out[out["rows"] > 0]
    else:
        out = g.groupby(["model", "dataset"]).size().rename("rows").reset_index()
    return out.sort_values(["rows", "model", "dataset"], ascending=[False, True, True],
                           ignore_index=True)


def pick_combination(df: pd.DataFrame, model: str | None = None, dataset: str | None = None,
                     caller: str = "figure") -> tuple[str, str]:
    """The (model, dataset) to draw: the one asked for, else the one with the most rows.

    A pair without rows is an error that names the pairs that have rows.
    """
    combos = combinations(df)
    check(len(combos) > 0, "study", caller, "a study with rows in the store", "no rows")
    hits = combos
    if model is not None:
        hits = hits[hits["model"] == model]
    if dataset is not None:
        hits = hits[hits["dataset"] == dataset]
    if hits.empty:
        have = ", ".join(f"{m}/{d}" for m, d in zip(combos["model"], combos["dataset"]))
        raise fail("model/dataset", caller, f"a pair with rows ({have})",
                   f"{model or '*'}/{dataset or '*'}")
    return str(hits["model"].iloc[0]), str(hits["dataset"].iloc[0])
