"""Recordings are reproducible; the live early-exit runner equals the offline evaluation."""

from __future__ import annotations

import pytest
import torch

import spiking as sp


def test_recording_shape_and_reproducibility_for_a_seed(direct, digits):
    test = digits["test"]
    r1 = sp.record(direct, test, steps=8, seed=1)
    r2 = sp.record(direct, test, steps=8, seed=1)
    r3 = sp.record(direct, test, steps=8, seed=2)
    assert r1.outputs.shape == (len(test), 8, 10) and r1.outputs.dtype == torch.float32
    assert torch.equal(r1.outputs, r2.outputs)
    assert not torch.equal(r1.outputs, r3.outputs)  # rate code: another seed, other spikes
    # the batch size does not change the spikes (batches are seeded by index, same cut)
    assert torch.equal(sp.record(direct, test, 8, batch_size=500, seed=1).outputs, r1.outputs)


def test_converted_snn_reaches_its_ann_accuracy(converted, digits):
    ann, net = converted
    test = digits["test"]
    ann_acc = (ann(test.x).argmax(1) == test.y).double().mean().item()
    curve = sp.record(net, test, steps=16).accuracy_curve()
    assert ann_acc > 0.85
    assert curve[0] < curve[-1]  # one step is too few
    assert curve[3:].max() >= ann_acc - 0.02  # from L = 4 steps on, close to the ANN


@pytest.mark.parametrize("rule", list(sp.RULES))
@pytest.mark.parametrize("which", ["converted", "direct"])
def test_live_early_exit_matches_offline_exactly(rule, which, converted, direct, digits):
    net = converted[1] if which == "converted" else direct
    val, test = digits["val"], digits["test"]
    cal = sp.calibrate(sp.record(net, val, steps=12, seed=3), rule, tolerance=0.01)
    offline = sp.apply_rule(sp.record(net, test, steps=12, batch_size=64, seed=3), rule,
                            cal.threshold)
    live = sp.run_live(net, test.x, rule, cal.threshold, steps=12, batch_size=64, seed=3)
    assert torch.equal(live.predictions, offline.predictions)
    assert torch.equal(live.steps, offline.steps)
    assert live.mean_steps < 12  # some samples really stopped early
    assert live.layer_rows == int(offline.steps.sum())  # finished rows were dropped


def test_live_fixed_steps_equals_fixed_offline(converted, digits):
    net, test = converted[1], digits["test"]
    rec = sp.record(net, test, steps=6)
    live = sp.run_live(net, test.x, None, steps=6)
    assert torch.equal(live.predictions, sp.fixed_steps(rec, 6).predictions)
    assert live.steps.tolist() == [6] * len(test) and live.layer_rows == 6 * len(test)


def test_run_live_and_record_reject_bad_input(converted):
    net = converted[1]
    with pytest.raises(ValueError, match="threshold of run_live must be a finite number when a rule"):
        sp.run_live(net, torch.rand(4, 1, 8, 8), "margin", None)
    with pytest.raises(ValueError, match=r"x of run_live must be a non-empty tensor"):
        sp.run_live(net, torch.rand(0, 1, 8, 8))
    with pytest.raises(ValueError, match=r"y of record must be an int tensor of shape \(4,\)"):
        sp.record(net, (torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match="steps of record must be an integer >= 1, got 0"):
        sp.record(net, (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), steps=0)
