"""Stopping rules, oracles and calibration on hand-made recordings (exact numbers)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import spiking as sp


def _rec_from_correct(pattern: list[list[int]]) -> sp.Recording:
    """A 2-class recording whose running-sum prediction is correct exactly where pattern is 1."""
    c = torch.tensor(pattern, dtype=torch.bool)  # N x T
    # the running sum after step t is +-(t+1) ... choose outputs so that acc[t] = +-1 per step
    target = torch.where(c, 1.0, -1.0)  # N x T: sign of acc for class 0 minus class 1
    acc = torch.stack([target, -target], dim=-1)  # N x T x 2; labels are 0
    out = torch.cat([acc[:, :1], acc[:, 1:] - acc[:, :-1]], dim=1)
    return sp.Recording(outputs=out, labels=torch.zeros(len(c), dtype=torch.long))


def test_recording_derives_predictions_from_the_running_sum():
    rec = _rec_from_correct([[0, 1, 0, 1], [1, 1, 1, 1]])
    assert rec.correct.tolist() == [[False, True, False, True], [True] * 4]
    assert rec.accuracy_curve().tolist() == [0.5, 1.0, 0.5, 1.0]


def test_oracles_on_a_known_pattern():
    rec = _rec_from_correct([[0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    any_ = sp.oracle_any(rec)
    assert any_.steps.tolist() == [2, 4, 1, 3]
    assert any_.correct.tolist() == [True, False, True, True]
    stay = sp.oracle_stay(rec)
    assert stay.steps.tolist() == [4, 4, 1, 3]
    assert stay.accuracy == 0.75 and stay.mean_steps == 3.0


def test_dynamic_confidence_score_is_softmax_of_running_sum_over_30():
    out = torch.tensor([[[3.0, 0.0, 0.0], [30.0, 0.0, 0.0], [30.0, 0.0, 0.0]]])  # 1 x 3 x 3
    rec = sp.Recording(out, torch.tensor([0]))
    acc = torch.tensor([3.0, 33.0, 63.0])
    expected = 1 / (1 + 2 * torch.exp(-acc / 30))  # top softmax probability
    s = sp.get_rule("dynamic-confidence").score(rec.accumulated, torch.arange(1, 4)[None])
    assert torch.allclose(s[0], expected)
    # official demo threshold 0.6: exp(-33/30) -> 0.6002 > 0.6 stops at step 2; step 1 (0.3797) not
    assert sp.apply_rule(rec, "dynamic-confidence", 0.6).steps.tolist() == [2]
    assert sp.apply_rule(rec, sp.dynamic_confidence_rule(60.0), 0.6).steps.tolist() == [3]


def test_entropy_and_margin_scores():
    acc = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([2, 1])
    p = 1 / (1 + math.exp(-1))  # softmax of the mean output (1, 0)
    h = -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2)
    assert torch.allclose(sp.RULES["entropy"].score(acc, t), torch.tensor([h, 1.0]))
    assert torch.allclose(sp.RULES["margin"].score(acc, t), torch.tensor([2 * p - 1, 0.0]))
    assert not sp.RULES["entropy"].higher_stops and sp.RULES["margin"].higher_stops


def test_threshold_extremes_give_step_one_and_t_max():
    rec = _rec_from_correct([[0, 1, 0, 1], [1, 1, 1, 1]])
    assert sp.apply_rule(rec, "margin", -1.0).steps.tolist() == [1, 1]
    assert sp.apply_rule(rec, "margin", 2.0).steps.tolist() == [4, 4]
    assert sp.fixed_steps(rec, 3).predictions.tolist() == [1, 0]


def test_custom_rule_plugs_in():
    rec = _rec_from_correct([[0, 1, 0, 1]])
    by_step = sp.StoppingRule("step", lambda acc, t: t.double(), True, 0.0)
    assert sp.apply_rule(rec, by_step, 2.5).steps.tolist() == [3]


def test_pareto_front_keeps_only_undominated_points():
    curve = pd.DataFrame({"accuracy": [0.9, 0.95, 0.93, 0.95, 0.8],
                          "mean_steps": [2.0, 5.0, 6.0, 4.0, 1.0]})
    assert sp.pareto_front(curve).tolist() == [True, False, False, True, True]


def test_calibration_choice_reapplies_exactly(converted, digits):
    _, net = converted
    rec = sp.record(net, digits["val"], steps=16)
    for rule in sp.RULES:
        cal = sp.calibrate(rec, rule, tolerance=0.01)
        again = sp.apply_rule(rec, rule, cal.threshold)
        assert again.accuracy == pytest.approx(cal.accuracy, abs=1e-12)
        assert again.mean_steps == pytest.approx(cal.mean_steps, abs=1e-12)
        ok = cal.curve[cal.curve.accuracy >= cal.reference_accuracy - 0.01]
        if cal.met:  # the cheapest threshold that meets the tolerance
            assert cal.accuracy >= cal.reference_accuracy - 0.01
            assert cal.mean_steps == ok.mean_steps.min() and cal.mean_steps < 16
        else:  # unreachable: the most accurate threshold
            assert ok.empty and cal.accuracy == cal.curve.accuracy.max()
    assert sp.calibrate(rec, "dynamic-confidence", tolerance=0.01).met


@pytest.mark.parametrize("call, msg", [
    (lambda r: sp.calibrate(r, "dynamic-confidence", tolerance=-0.1),
     r"tolerance of calibrate must be a number in \[0, 1\), got -0.1"),
    (lambda r: sp.apply_rule(r, "nope", 0.5),
     "rule of get_rule must be a StoppingRule or one of dynamic-confidence, entropy, margin"),
    (lambda r: sp.apply_rule(r, "margin", float("nan")),
     "threshold of apply_rule must be a finite number, got nan"),
    (lambda r: sp.fixed_steps(r, 5), "steps of fixed_steps must be <= the recorded 4, got 5"),
    (lambda r: sp.sweep(r, "margin", []), "thresholds of sweep must be a non-empty list"),
])
def test_bad_arguments_get_clear_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call(_rec_from_correct([[0, 1, 0, 1]]))
