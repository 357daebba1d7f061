"""``assert_resilient``: a resilience test as one call (used by the pytest plugin's fixture).

Light at import time (no torch): the pytest plugin imports this module in every session.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["RECORDER", "Recorder", "ResilienceResult", "assert_resilient"]


@dataclass
class Recorder:
    """Session-wide settings and results of the pytest plugin (one per pytest session)."""

    trials: int | None = None  # --fault-trials: overrides every check's trials
    seed: int | None = None  # --fault-seed: overrides every check's seed
    test: str = ""  # node id of the running test
    results: list = field(default_factory=list)


# Set by the pytest plugin around each test call; None outside pytest (nothing is recorded).
RECORDER: ContextVar[Recorder | None] = ContextVar("faultlab_recorder", default=None)


@dataclass(frozen=True)
class ResilienceResult:
    """Outcome of one resilience check."""

    test: str
    fault_model: str
    trials: int
    seed: int
    mean: float
    ci_low: float
    ci_high: float
    min_accuracy: float | None  # the lower limit (higher-is-better metrics), else None
    confidence: float
    passed: bool
    metric: str = "accuracy"
    max_value: float | None = None  # the upper limit (sdc, critical_sdc, loss), else None


_LOWER_IS_BETTER = ("sdc", "critical_sdc", "loss")


def _limit(value, name, metric):
    from hwlab.errors import check_number

    if metric in ("accuracy", "sdc", "critical_sdc", "top5"):
        return check_number(value, name, "assert_resilient", 0, 1)
    return check_number(value, name, "assert_resilient", finite=False)


def assert_resilient(model, data, fault_model, min_accuracy: float | None = None,
                     trials: int = 20, confidence: float = 0.95, seed: int = 0, *,
                     metric="accuracy", max_value: float | None = None,
                     **campaign_kw) -> ResilienceResult:
    """Pass only if the confidence interval of ``metric`` under faults clears its limit.

    Runs :func:`faultlab.campaign` with ``fault_model`` (one weight fault model / NeuronFault or a
    tuple of them) for ``trials`` seeded trials (overridden by pytest's ``--fault-trials`` and
    ``--fault-seed`` when run under the faultlab plugin). ``metric``: ``accuracy`` (default),
    ``top5`` or a user callable ``metric(logits, y, clean_logits)`` must have a lower bound
    ``>= min_accuracy``; ``sdc``, ``critical_sdc`` or ``loss`` an upper bound ``<= max_value``.
    The interval of a proportion (accuracy, top5, sdc, critical_sdc) is
    :func:`faultlab.proportion_ci` (Wilson on the pooled trials with the trials' effective sample
    size: never outside [0, 1]); for a loss or a user metric the Student-t :func:`mean_ci`.
    Raises ``AssertionError`` with the figures when the check fails; otherwise returns the
    :class:`ResilienceResult`. Under pytest each check is listed in the faultlab summary at the
    end of the report. Bad arguments raise ``ValueError`` (the campaign's checks).
    """
    import json

    from faultlab._campaign import campaign, point_key
    from faultlab._stats import DENOMINATORS, interval
    from hwlab.errors import check, check_int
    from hwlab.metrics import resolve_metrics

    (m,) = resolve_metrics((metric,), "assert_resilient")
    lower = m.name in _LOWER_IS_BETTER
    if lower:
        check(max_value is not None, "max_value", "assert_resilient",
              f"given for metric {m.name!r} (lower is better)", max_value)
        check(min_accuracy is None, "min_accuracy", "assert_resilient",
              f"None for metric {m.name!r} (give max_value)", min_accuracy)
        max_value = _limit(max_value, "max_value", m.name)
    else:
        check(min_accuracy is not None, "min_accuracy", "assert_resilient",
              f"given for metric {m.name!r} (higher is better)", min_accuracy)
        check(max_value is None, "max_value", "assert_resilient",
              f"None for metric {m.name!r} (give min_accuracy)", max_value)
        min_accuracy = _limit(min_accuracy, "min_accuracy", m.name)
    rec = RECORDER.get()
    if rec is not None:
        trials = rec.trials if rec.trials is not None else trials
        seed = rec.seed if rec.seed is not None else seed
    trials = check_int(trials, "trials", "assert_resilient", 2,
                       constraint="an integer >= 2 (an interval needs two trials)")
    df = campaign(model, data, [fault_model], trials=trials, seed=seed, clean=False,
                  confidence=confidence, metrics=(metric,), **campaign_kw)
    counts = None
    if m.name in DENOMINATORS:
        counts = [json.loads(e)[DENOMINATORS[m.name]] for e in df["extra"]]
    mean, low, high = interval(df[m.name].to_numpy(dtype=float), m.name, counts, confidence)
    spec = fault_model if isinstance(fault_model, tuple) else (fault_model,)
    passed = high <= max_value if lower else low >= min_accuracy
    result = ResilienceResult(
        test=rec.test if rec is not None else "", fault_model=point_key(spec), trials=trials,
        seed=seed, mean=mean, ci_low=low, ci_high=high, min_accuracy=min_accuracy,
        confidence=confidence, passed=bool(passed and not math.isnan(mean)), metric=m.name,
        max_value=max_value)
    if rec is not None:
        rec.results.append(result)
    if not result.passed:
        what = f"upper bound above max_value {max_value}" if lower else \
            f"lower bound below min_accuracy {min_accuracy}"
        raise AssertionError(
            f"not resilient to {result.fault_model}: mean {m.name} {mean:.4f} over {trials} "
            f"trials, {confidence:.0%} interval [{low:.4f}, {high:.4f}], {what}")
    return result
