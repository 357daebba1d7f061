"""Threshold calibration on held-out data along the accuracy-vs-mean-steps (Pareto) curve.

The Dynamic Confidence paper picks the threshold from the accuracy-latency curve on held-out
data. We state the choice exactly, in one of two modes (both on the calibration data only):

* ``budget=None`` (tolerance mode): among candidate thresholds, the one with the fewest mean
  steps whose accuracy is at least (best fixed-T accuracy - ``tolerance``). If no threshold gets
  there, the most accurate one (and ``met=False``).
* ``budget=b`` (latency-budget mode): ``T_ref`` = the fewest fixed steps whose accuracy is at
  least (best fixed-T accuracy - ``tolerance``); the most accurate threshold whose mean steps are
  <= ``b * T_ref`` (ties: the fewest steps). If none fits (``b * T_ref < 1``), the cheapest
  threshold (and ``met=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hwlab.errors import check, check_positive_int

from ._record import Recording
from ._rules import _first_stop, get_rule, scores

__all__ = ["Calibration", "calibrate", "candidate_thresholds", "pareto_front", "sweep"]


def candidate_thresholds(rec: Recording, rule, num: int = 256) -> torch.Tensor:
    """``num`` quantiles of the rule's scores over every sample and step, plus its default."""
    r = get_rule(rule)
    s = scores(rec, r).flatten().double()
    if s.numel() > 1_000_000:  # torch.quantile's input limit; a strided subsample is enough
        s = s[:: s.numel() // 1_000_000 + 1]
    q = torch.quantile(s, torch.linspace(0, 1, num, dtype=torch.float64))
    q = q.float().double()  # representable in float32, so float32 and float64 checks agree
    extra = torch.tensor([r.default_threshold], dtype=torch.float64)
    return torch.unique(torch.cat([q, extra]))  # sorted, distinct


def sweep(rec: Recording, rule, thresholds) -> pd.DataFrame:
    """Accuracy and mean steps of ``rule`` at every threshold (vectorised over thresholds)."""
    r = get_rule(rule)
    if isinstance(thresholds, torch.Tensor):
        th = thresholds.detach().cpu().double().flatten()
    else:
        th = torch.tensor(np.array(thresholds, dtype=np.float64)).flatten()
    check(th.numel() > 0 and bool(torch.isfinite(th).all()), "thresholds", "sweep",
          "a non-empty list of finite numbers", thresholds)
    s = scores(rec, r).double()  # N x T
    preds, labels = rec.predictions, rec.labels  # N x T, N
    acc, steps = [], []
    for chunk in th.split(64):  # K x N x T booleans per chunk keeps memory bounded
        k = chunk[:, None, None]
        stop = s[None] > k if r.higher_stops else s[None] < k  # K x N x T
        idx = _first_stop(stop)  # K x N
        pred = preds[None].expand(len(chunk), -1, -1).gather(2, idx[..., None])[..., 0]  # K x N
        acc.append((pred == labels[None]).double().mean(dim=1))
        steps.append((idx + 1).double().mean(dim=1))
    return pd.DataFrame({"threshold": th.numpy(), "accuracy": torch.cat(acc).numpy(),
                         "mean_steps": torch.cat(steps).numpy()})


def pareto_front(curve: pd.DataFrame) -> pd.Series:
    """True for the points no other point beats (fewer or equal steps and higher accuracy)."""
    order = curve.sort_values(["mean_steps", "accuracy"], ascending=[True, False]).index
    best, keep = -math.inf, pd.Series(False, index=curve.index)
    for i in order:  # one pass over <= a few hundred curve points, not over samples
        if curve.at[i, "accuracy"] > best:
            keep[i], best = True, curve.at[i, "accuracy"]
    return keep


@dataclass(frozen=True)
class Calibration:
    rule: str
    threshold: float
    accuracy: float  # on the calibration recording
    mean_steps: float
    reference_accuracy: float  # best fixed-T accuracy on the calibration recording
    tolerance: float
    met: bool  # tolerance mode: some threshold reached reference - tolerance; budget mode: some
    # threshold fits the budget
    curve: pd.DataFrame  # threshold, accuracy, mean_steps, pareto
    budget: float | None = None  # None: tolerance mode
    reference_steps: int = 0  # T_ref: the fewest fixed steps within tolerance of the reference


def _reference_steps(rec: Recording, reference: float, tolerance: float) -> int:
    """The fewest fixed steps whose accuracy is >= ``reference - tolerance``."""
    ok = rec.accuracy_curve() >= reference - tolerance - 1e-12
    return int(ok.nonzero()[0, 0]) + 1


def calibrate(rec: Recording, rule, tolerance: float = 0.002, thresholds=None,
              num: int = 256, budget: float | None = None) -> Calibration:
    """Choose the threshold of ``rule`` on ``rec`` (a validation recording).

    ``tolerance`` is in accuracy units (0.002 = 0.2 points, one sample of 500). ``budget``
    (``None`` or a number in (0, 1]) switches to latency-budget mode: the most accurate
    threshold whose mean steps are <= ``budget`` x the fewest fixed steps within ``tolerance``
    of the best fixed-T accuracy (see the module docstring).
    """
    check(isinstance(rec, Recording), "rec", "calibrate", "a Recording", type(rec).__name__)
    check(isinstance(tolerance, (int, float)) and 0 <= tolerance < 1, "tolerance", "calibrate",
          "a number in [0, 1)", tolerance)
    check(budget is None or (isinstance(budget, (int, float)) and not isinstance(budget, bool)
                             and 0 < budget <= 1), "budget", "calibrate",
          "None or a number in (0, 1]", budget)
    check_positive_int(num, "num", "calibrate", minimum=2)
    r = get_rule(rule)
    th = candidate_thresholds(rec, r, num) if thresholds is None else thresholds
    curve = sweep(rec, r, th)
    curve["pareto"] = pareto_front(curve)
    reference = float(rec.accuracy_curve().max())
    t_ref = _reference_steps(rec, reference, tolerance)
    if budget is None:
        ok = curve[curve["accuracy"] >= reference - tolerance - 1e-12]
        met = len(ok) > 0
        pool = ok if met else curve[curve["accuracy"] == curve["accuracy"].max()]
    else:
        fits = curve[curve["mean_steps"] <= budget * t_ref + 1e-12]
        met = len(fits) > 0
        pool = (fits[fits["accuracy"] == fits["accuracy"].max()] if met
                else curve[curve["mean_steps"] == curve["mean_steps"].min()])
    best = pool.sort_values(["mean_steps", "accuracy"], ascending=[True, False]).iloc[0]
    return Calibration(r.name, float(best["threshold"]), float(best["accuracy"]),
                       float(best["mean_steps"]), reference, float(tolerance), met, curve,
                       None if budget is None else float(budget), t_ref)
