"""Latency-budget calibration (issue 22, defect 14) on a hand-made recording: exact thresholds.

The recording has 4 samples, 4 steps and 3 classes (label 0). Classes 0 and 1 carry the running
sum that is correct exactly where ``CORRECT`` is 1; class 2 is never the argmax and carries the
rule's score (``-10 - score``), so the stopping rule ``_BY_SCORE`` reads ``SCORE`` back exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

import spiking as sp
from hwlab.studies import get_study
from spiking._pipeline import calibration_budget

CORRECT = [[0, 1, 1, 1],  # fixed-T accuracy 0.25, 0.5, 0.75, 1.0
           [0, 0, 1, 1],
           [1, 1, 1, 1],
           [0, 0, 0, 1]]
SCORE = [[1, 5, 6, 7],
         [2, 3, 6, 8],
         [4, 6, 7, 8],
         [1, 2, 3, 9]]
THRESHOLDS = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 8.5]
# By hand: a sample stops at its first step whose score > threshold, else at step 4.
#   threshold  exit steps     correct   accuracy  mean steps
#   0.5        1, 1, 1, 1     0 0 1 0   0.25      1.0
#   1.5        2, 1, 1, 2     1 0 1 0   0.5       1.5
#   2.5        2, 2, 1, 3     1 0 1 0   0.5       2.0
#   3.5        2, 3, 1, 4     1 1 1 1   1.0       2.5
#   4.5        2, 3, 2, 4     1 1 1 1   1.0       2.75
#   5.5        3, 3, 2, 4     1 1 1 1   1.0       3.0
#   6.5        4, 4, 3, 4     1 1 1 1   1.0       3.75
#   8.5        4, 4, 4, 4     1 1 1 1   1.0       4.0
HAND = {0.5: (0.25, 1.0), 1.5: (0.5, 1.5), 2.5: (0.5, 2.0), 3.5: (1.0, 2.5), 4.5: (1.0, 2.75),
        5.5: (1.0, 3.0), 6.5: (1.0, 3.75), 8.5: (1.0, 4.0)}
_BY_SCORE = sp.StoppingRule("by-score", lambda acc, t: -10.0 - acc[..., 2], True, 0.5)


def _recording() -> sp.Recording:
    c = torch.tensor(CORRECT, dtype=torch.float32) * 2 - 1  # +1 correct, -1 wrong
    acc = torch.stack([c, -c, -10.0 - torch.tensor(SCORE, dtype=torch.float32)], dim=-1)
    out = torch.cat([acc[:, :1], acc[:, 1:] - acc[:, :-1]], dim=1)  # small integers: exact
    return sp.Recording(outputs=out, labels=torch.zeros(4, dtype=torch.long))


def _calibrate(**kw) -> sp.Calibration:
    return sp.calibrate(_recording(), _BY_SCORE, thresholds=THRESHOLDS, **kw)


def test_the_hand_made_curve_is_what_calibration_sees():
    rec = _recording()
    assert rec.accuracy_curve().tolist() == [0.25, 0.5, 0.75, 1.0]
    curve = sp.sweep(rec, _BY_SCORE, THRESHOLDS)
    assert {r.threshold: (r.accuracy, r.mean_steps) for r in curve.itertuples()} == HAND


@pytest.mark.parametrize("tolerance, budget, threshold, accuracy, steps, t_ref", [
    # T_ref = 4 (only T = 4 reaches 1.0): at most 2.0 steps -> 0.5 at 1.5 and at 2.0 steps tie
    # on accuracy, the fewer steps win
    (0.0, 0.5, 1.5, 0.5, 1.5, 4),
    # at most 2.5 steps: 2.5 itself fits (<=), and 1.0 there beats everything cheaper
    (0.0, 0.625, 3.5, 1.0, 2.5, 4),
    # tolerance 0.25: T_ref = 3 (0.75 >= 1.0 - 0.25), budget 0.75 -> at most 2.25 steps
    (0.25, 0.75, 1.5, 0.5, 1.5, 3),
    # a budget of every fixed step: the most accurate point, the cheapest of its ties
    (0.0, 1.0, 3.5, 1.0, 2.5, 4),
])
def test_budget_mode_takes_the_most_accurate_threshold_within_budget_times_t_ref(
        tolerance, budget, threshold, accuracy, steps, t_ref):
    cal = _calibrate(tolerance=tolerance, budget=budget)
    assert (cal.threshold, cal.accuracy, cal.mean_steps) == (threshold, accuracy, steps)
    assert (cal.reference_steps, cal.budget, cal.met, cal.reference_accuracy) == (
        t_ref, budget, True, 1.0)
    again = sp.apply_rule(_recording(), _BY_SCORE, cal.threshold)
    assert (again.accuracy, again.mean_steps) == (accuracy, steps)


def test_budget_below_one_step_falls_back_to_the_cheapest_threshold():
    cal = _calibrate(tolerance=0.0, budget=0.2)  # 0.2 x 4 = 0.8 steps: nothing fits
    assert (cal.threshold, cal.mean_steps, cal.met) == (0.5, 1.0, False)


def test_tolerance_mode_is_unchanged_and_the_default():
    cal = _calibrate(tolerance=0.0)  # the cheapest threshold reaching 1.0
    assert (cal.threshold, cal.accuracy, cal.mean_steps, cal.budget) == (3.5, 1.0, 2.5, None)
    assert cal.reference_steps == 4
    assert _calibrate(tolerance=0.5).threshold == 1.5  # 0.5 first reached at 1.5 steps


@pytest.mark.parametrize("budget", [0, -0.5, 1.5, math.nan, "0.5", True])
def test_bad_budget_is_refused(budget):
    with pytest.raises(ValueError, match=r"budget of calibrate must be None or a number in "
                                         r"\(0, 1\], got"):
        _calibrate(budget=budget)


def test_study_calibration_options():
    study = get_study("spiking.dynamic-confidence")
    cfg = study.make_config()
    assert (cfg.calibration, cfg.budget) == ("budget", 0.5) and calibration_budget(cfg) == 0.5
    assert calibration_budget(study.make_config(calibration="tolerance")) is None
    assert calibration_budget(get_study("spiking.faults").make_config()) is None  # unchanged
    with pytest.raises(ValueError, match="calibration of study spiking.dynamic-confidence must "
                                         "be one of budget, tolerance, got 'fast'"):
        study.make_config(calibration="fast")
    with pytest.raises(ValueError, match=r"budget of study spiking.dynamic-confidence must be a "
                                         r"number in \(0, 1\], got 0"):
        study.make_config(budget=0.0)
