"""Statistics of fault campaigns: Student-t confidence intervals and Leveugle's sample size."""

from __future__ import annotations

import math

import numpy as np

from hwlab.errors import check

__all__ = ["leveugle_sample_size", "mean_ci", "summarize"]


def _check_confidence(confidence, caller):
    ok = isinstance(confidence, (int, float)) and not isinstance(confidence, bool)
    check(ok and 0.0 < confidence < 1.0, "confidence", caller, "a number in (0, 1)", confidence)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: two-sided Student-t interval of the mean of ``values``.

    half-width = t_{(1+confidence)/2, n-1} * s / sqrt(n), s the sample standard deviation
    (ddof=1). With one value the interval is (-inf, inf); with none everything is NaN.
    """
    from scipy import stats

    _check_confidence(confidence, "mean_ci")
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n == 1:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def summarize(results, confidence: float = 0.95, by=("variant", "fault_model", "fault_rate")):
    """Mean accuracy with a Student-t interval per group of a campaign's result rows.

    Returns a DataFrame with the ``by`` columns, ``n``, ``mean``, ``std``, ``ci_low``,
    ``ci_high`` and ``half_width``. Rows whose accuracy is NULL are ignored.
    """
    import pandas as pd

    _check_confidence(confidence, "summarize")
    by = [c for c in by if c in results.columns]
    rows = []
    for keys, group in results.dropna(subset=["accuracy"]).groupby(by, dropna=False, sort=True):
        acc = group["accuracy"].to_numpy(dtype=np.float64)
        mean, low, high = mean_ci(acc, confidence)
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append({**dict(zip(by, keys)), "n": int(acc.size), "mean": mean,
                     "std": float(acc.std(ddof=1)) if acc.size > 1 else math.nan,
                     "ci_low": low, "ci_high": high, "half_width": (high - low) / 2})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "std", "ci_low", "ci_high",
                                       "half_width"])


def leveugle_sample_size(population, margin: float = 0.01, confidence: float = 0.95,
                         p: float = 0.5) -> int:
    """Number of fault injections for a statistical fault-injection campaign.

    Leveugle, Calvez, Maistri, Vanhauwaert, "Statistical fault injection: quantified error and
    confidence", DATE 2009, eq. (2): ``n = N / (1 + e^2 (N - 1) / (t^2 p (1 - p)))`` with ``N``
    the population (all possible faults, e.g. eligible bits), ``e`` the error margin, ``t`` the
    standard-normal cut-off for ``confidence`` (1.96 at 95 %) and ``p`` the estimated proportion
    of faults that cause a failure (0.5 is the safe, largest choice). Rounded up.
    """
    from scipy import stats

    caller = "leveugle_sample_size"
    ok = isinstance(population, (int, np.integer)) and not isinstance(population, bool)
    check(ok and population >= 1, "population", caller, "an integer >= 1", population)
    ok = isinstance(margin, (int, float)) and not isinstance(margin, bool)
    check(ok and 0.0 < margin < 1.0, "margin", caller, "a number in (0, 1)", margin)
    _check_confidence(confidence, caller)
    ok = isinstance(p, (int, float)) and not isinstance(p, bool)
    check(ok and 0.0 < p < 1.0, "p", caller, "a number in (0, 1)", p)
    t = float(stats.norm.ppf(0.5 + confidence / 2))
    n = population / (1 + margin**2 * (population - 1) / (t**2 * p * (1 - p)))
    return math.ceil(n - 1e-9)
