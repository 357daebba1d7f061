"""Statistics of fault campaigns: intervals for proportions and means, Leveugle's sample size.

A proportion (accuracy, SDC rate, top-5) gets :func:`proportion_ci`, which never leaves [0, 1];
other numbers (a loss, a user metric, a latency) get the Student-t interval of :func:`mean_ci`.
"""

from __future__ import annotations

import math

import numpy as np

from hwlab.errors import check, check_int, check_number
from hwlab.stats import (  # noqa: F401  (re-exported: faultlab.proportion_ci, ...)
    DENOMINATORS,
    PROPORTIONS,
    _check_confidence,
    interval,
    mean_ci,
    proportion_ci,
)

__all__ = ["interval", "leveugle_sample_size", "mean_ci", "proportion_ci", "summarize"]


def summarize(results, confidence: float = 0.95,
              by=("variant", "dtype", "fault_model", "fault_rate"), metric: str = "accuracy"):
    """The mean of ``metric`` with its interval per group of a campaign's result rows.

    Returns a DataFrame with the ``by`` columns, ``n`` (trials), ``mean``, ``std`` (between
    trials), ``ci_low``, ``ci_high`` and ``half_width`` (``by`` columns missing from the
    results are skipped). A proportion (accuracy, sdc,
    critical_sdc, top5) gets :func:`proportion_ci` with each row's denominator read from its
    ``extra`` (``n_samples``, or ``n_clean_correct`` for critical_sdc), so bounds stay in [0, 1]
    and a single row (the fault-free one) gets the Wilson interval of its samples; any other
    column gets the Student-t :func:`mean_ci`. Rows whose ``metric`` is NULL are ignored.
    """
    import json

    import pandas as pd

    _check_confidence(confidence, "summarize")
    check(isinstance(metric, str) and metric in results.columns, "metric", "summarize",
          f"a column of the results ({', '.join(map(str, results.columns))})", metric)
    by = [c for c in by if c in results.columns]
    rows = []
    field = DENOMINATORS.get(metric)
    for keys, group in results.dropna(subset=[metric]).groupby(by, dropna=False, sort=True):
        vals = group[metric].to_numpy(dtype=np.float64)
        counts = None
        if field is not None and "extra" in group.columns:
            extra = [json.loads(e) if isinstance(e, str) else (e or {}) for e in group["extra"]]
            got = [e.get(field) for e in extra]
            counts = None if any(c is None for c in got) else np.asarray(got, dtype=np.float64)
        mean, low, high = interval(vals, metric, counts, confidence)
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append({**dict(zip(by, keys)), "n": int(vals.size), "mean": mean,
                     "std": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
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
    population = check_int(population, "population", caller, 1)
    margin = check_number(margin, "margin", caller, 0, 1, inclusive=(False, False))
    _check_confidence(confidence, caller)
    p = check_number(p, "p", caller, 0, 1, inclusive=(False, False))
    t = float(stats.norm.ppf(0.5 + confidence / 2))
    n = population / (1 + margin**2 * (population - 1) / (t**2 * p * (1 - p)))
    return math.ceil(n - 1e-9)
