"""Intervals for the numbers hwlab stores: proportions (accuracy, SDC, top-5) and means.

One copy for every package and the dashboard: a proportion gets :func:`proportion_ci`, which
never leaves [0, 1]; other numbers (a loss, a user metric, a latency) get the Student-t interval
of :func:`mean_ci`. ``faultlab`` re-exports them (``faultlab.proportion_ci``).
"""

from __future__ import annotations

import math

import numpy as np

from hwlab.errors import check, check_number

__all__ = ["DENOMINATORS", "PROPORTIONS", "interval", "mean_ci", "proportion_ci"]

PROPORTIONS = ("accuracy", "sdc", "critical_sdc", "top5")  # columns that are fractions in [0, 1]
# extra field holding the denominator of each proportion (the trial's number of samples, or of
# fault-free-correct samples for critical_sdc)
DENOMINATORS = {"accuracy": "n_samples", "sdc": "n_samples", "top5": "n_samples",
                "critical_sdc": "n_clean_correct"}


def _check_confidence(confidence, caller):
    check_number(confidence, "confidence", caller, 0, 1, inclusive=(False, False))


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: two-sided Student-t interval of the mean of ``values``.

    half-width = t_{(1+confidence)/2, n-1} * s / sqrt(n), s the sample standard deviation
    (ddof=1). For numbers that are not proportions (a loss, a latency, a user metric); use
    :func:`proportion_ci` for an accuracy. With one value the bounds are NaN (no spread can be
    estimated: show the single value), with none everything is NaN. NaN values are ignored.
    """
    from scipy import stats

    _check_confidence(confidence, "mean_ci")
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n == 1:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def proportion_ci(values, counts=None, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(p, low, high)`` for a proportion measured in ``m`` trials; always inside [0, 1].

    ``values[i]`` is trial ``i``'s proportion (an accuracy) and ``counts[i]`` its denominator
    (the number of samples it was measured on). The estimate is the pooled proportion
    ``p = sum(v_i n_i) / N`` with ``N = sum(n_i)``, and the interval is the Wilson score interval
    (Wilson 1927) ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` on the pooled
    trials with an effective sample size: the trials are clusters (one fault map each, every
    sample of a trial shares it), so ``n = min(N, p(1-p) m / s^2)`` with ``s^2`` the variance of
    the trial proportions (Kish's design effect, as in Korn & Graubard 1998's intervals for
    clustered proportions). When the trials vary no more than sampling explains (``n = N``,
    e.g. ``s = 0``) or ``m = 1``, this is the plain Wilson interval on all ``N`` samples with the
    normal ``z``; when the between-trial variance sets ``n`` the Student-t quantile with
    ``m - 1`` degrees of freedom replaces ``z``, so a few disagreeing trials give a wide
    interval.
    Without ``counts`` each trial counts as one sample (conservative). NaN trials are ignored.
    """
    from scipy import stats

    _check_confidence(confidence, "proportion_ci")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = np.ones_like(v) if counts is None else np.asarray(counts, dtype=np.float64).reshape(-1)
    check(n.shape == v.shape and bool(np.all(n[~np.isnan(v)] >= 0)), "counts", "proportion_ci",
          f"None or {v.size} non-negative denominators", counts)
    keep = ~np.isnan(v) & (n > 0)
    v, n = v[keep], n[keep]
    check(bool(np.all((v >= 0) & (v <= 1))), "values", "proportion_ci",
          "proportions in [0, 1]", values)
    m, total = v.size, float(n.sum())
    if m == 0:
        return math.nan, math.nan, math.nan
    p = float(np.clip((v * n).sum() / total, 0.0, 1.0))
    size, z = total, float(stats.norm.ppf(0.5 + confidence / 2))
    if m >= 2 and 0 < p < 1:
        s2 = float(v.var(ddof=1))
        if s2 > 0 and p * (1 - p) * m / s2 < total:  # the trials disagree beyond sampling
            size = p * (1 - p) * m / s2
            z = float(stats.t.ppf(0.5 + confidence / 2, m - 1))
    denom = 1 + z * z / size
    centre = (p + z * z / (2 * size)) / denom
    half = z * math.sqrt(p * (1 - p) / size + z * z / (4 * size * size)) / denom
    low = 0.0 if p == 0.0 else max(0.0, centre - half)  # Wilson's bound is exactly 0 / 1 there
    high = 1.0 if p == 1.0 else min(1.0, centre + half)
    return p, low, high


def interval(values, metric: str = "accuracy", counts=None, confidence: float = 0.95):
    """``(mean, low, high)`` of a metric over trials: :func:`proportion_ci` for a proportion
    (accuracy, sdc, critical_sdc, top5), :func:`mean_ci` for anything else."""
    if metric in PROPORTIONS:
        return proportion_ci(values, counts, confidence)
    return mean_ci(values, confidence)
