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
    min_accuracy: float
    confidence: float
    passed: bool


def assert_resilient(model, data, fault_model, min_accuracy: float, trials: int = 20,
                     confidence: float = 0.95, seed: int = 0, **campaign_kw) -> ResilienceResult:
    """Pass only if the lower confidence bound of the mean accuracy under faults >= min_accuracy.

    Runs :func:`faultlab.campaign` with ``fault_model`` (one BitFlip / StuckAt / NeuronFault or a
    tuple of them) for ``trials`` seeded trials (overridden by pytest's ``--fault-trials`` and
    ``--fault-seed`` when run under the faultlab plugin) and computes the two-sided Student-t
    interval of the mean at ``confidence``. Raises ``AssertionError`` with the figures when the
    lower bound is below ``min_accuracy``; otherwise returns the :class:`ResilienceResult`.
    Under pytest each check is listed in the faultlab summary at the end of the report.
    Bad arguments raise ``ValueError`` (the campaign's checks).
    """
    from faultlab._campaign import campaign, point_key
    from faultlab._stats import mean_ci
    from hwlab.errors import check

    ok = isinstance(min_accuracy, (int, float)) and not isinstance(min_accuracy, bool)
    check(ok and 0.0 <= min_accuracy <= 1.0, "min_accuracy", "assert_resilient",
          "a number in [0, 1]", min_accuracy)
    rec = RECORDER.get()
    if rec is not None:
        trials = rec.trials if rec.trials is not None else trials
        seed = rec.seed if rec.seed is not None else seed
    check(isinstance(trials, int) and trials >= 2, "trials", "assert_resilient",
          "an integer >= 2 (an interval needs two trials)", trials)
    df = campaign(model, data, [fault_model], trials=trials, seed=seed, clean=False,
                  confidence=confidence, **campaign_kw)
    mean, low, high = mean_ci(df["accuracy"].to_numpy(), confidence)
    spec = fault_model if isinstance(fault_model, tuple) else (fault_model,)
    result = ResilienceResult(
        test=rec.test if rec is not None else "", fault_model=point_key(spec), trials=trials,
        seed=seed, mean=mean, ci_low=low, ci_high=high, min_accuracy=float(min_accuracy),
        confidence=confidence, passed=bool(low >= min_accuracy and not math.isnan(low)))
    if rec is not None:
        rec.results.append(result)
    if not result.passed:
        raise AssertionError(
            f"not resilient to {result.fault_model}: mean accuracy {mean:.4f} over {trials} "
            f"trials, {confidence:.0%} interval [{low:.4f}, {high:.4f}], lower bound below "
            f"min_accuracy {min_accuracy}")
    return result
