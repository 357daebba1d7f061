"""faultlab.training: faults in weights, gradients, optimizer state and activations while a
model trains on the one loop, detectors and recovery, checked bit-exactly against fault-free fit."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import faultlab as fl
from hwlab import data
from hwlab.errors import HwlabError
from hwlab.train import TrainConfig, fit

CFG = TrainConfig(epochs=2, batch_size=64, lr=3e-3)


class Net(nn.Module):
    """A model of the test's own: conv, batch norm, dropout (so the RNG matters), linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.fixture(scope="module")
def train():
    return data.load("digits", "train", seed=0)


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return Net()


def _fit(base, train, faults=(), config=CFG, wrap=True, **kw):
    model = copy.deepcopy(base)
    task = fl.training(model, faults, **kw) if wrap else model
    fit(task, train, config)
    return model, task


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


@pytest.fixture(scope="module")
def clean(base, train):
    return _fit(base, train, wrap=False)[0]


def test_fault_free_wrapped_training_is_bit_identical_to_fit(base, train, clean):
    plain, wrapped = copy.deepcopy(base), copy.deepcopy(base)
    opts = {}

    class Grab:
        def __init__(self, key):
            self.key = key

        def on_step(self, state):
            opts[self.key] = state.optimizer

    fit(plain, train, CFG, callbacks=[Grab("plain")])
    task = fl.training(wrapped, (), policy="rollback", checkpoint_every=3)
    fit(task, train, CFG, callbacks=[Grab("wrapped")])
    assert _same(plain, wrapped) and _same(plain, clean)
    assert task.detections == [] and task.log == []  # no false alarm in a fault-free run
    for p, q in zip(plain.parameters(), wrapped.parameters()):
        for k, v in opts["plain"].state[p].items():
            assert torch.equal(v, opts["wrapped"].state[q][k]), k


MSB = (30,)  # float32 exponent MSB: a gradient of 1e-3 becomes about 3e35


def test_gradient_exponent_flip_is_caught_before_the_update_and_recompute_restores(
        base, train, clean):
    fault = fl.TrainFault("gradients", fl.BitFlip(count=1, bits=MSB), steps=(30,))
    none_model, none_task = _fit(base, train, [fault])
    assert not _same(none_model, clean)
    first = none_task.detections[0]
    assert (first.step, first.phase, first.detector) == (30, "pre", "grad_spike")
    assert first.value > 1e30 and first.action == "none"
    (inj,) = none_task.log
    assert (inj.step, inj.target, len(inj.fmap), int(inj.fmap.bit[0])) == (30, "gradients", 1, 30)

    model, task = _fit(base, train, [fault], policy="recompute")
    assert _same(model, clean)
    assert [(d.step, d.action, d.recovered) for d in task.detections] == [(30, "recompute", True)]
    skipped, task = _fit(base, train, [fault], policy="skip")
    assert not _same(skipped, clean) and all(torch.isfinite(t).all()
                                             for t in skipped.state_dict().values())
    # replaying the recorded map reproduces the faulty run exactly
    again, _ = _fit(base, train, [inj.replay()])
    assert _same(again, none_model)


def test_adam_moment_flip_is_detected_and_rollback_replays_to_the_fault_free_weights(
        base, train, clean):
    fault = fl.TrainFault("exp_avg", fl.BitFlip(count=1, bits=MSB), steps=(20,))
    model, task = _fit(base, train, [fault])
    assert task.log[0].target == "exp_avg" and task.log[0].step == 20
    assert 0 <= task.detections[0].step - 20 <= 3
    assert not _same(model, clean)
    model, task = _fit(base, train, [fault], policy="rollback", checkpoint_every=8)
    assert _same(model, clean)
    (d,) = task.detections
    assert d.action == "rollback" and d.recovered and d.step - 20 <= 3


def test_gradient_rate_faults_are_binomial_per_step(base, train):
    rate = 2e-5
    _, task = _fit(base, train, [fl.TrainFault("gradients", fl.BitFlip(rate=rate))],
                   detectors=())
    model = base
    bits = 32 * sum(p.numel() for n, p in model.named_parameters() if not n.endswith("bias")
                    and not n.startswith("bn."))
    steps = task.steps
    n = sum(len(i.fmap) for i in task.log)
    mean = steps * bits * rate
    assert abs(n - mean) < 4 * math.sqrt(mean), (n, mean)
    assert {i.target for i in task.log} == {"gradients"} and len({i.step for i in task.log}) > 10


def test_persistent_stuck_bits_stay_stuck_after_every_update(base, train):
    fault = fl.TrainFault("weights", fl.StuckAt(value=0, count=5, bits=(29,)), steps=(4,),
                          persistent=True, layers=("fc",))
    model, task = _fit(base, train, [fault], detectors=())
    (inj,) = task.log
    w = model.fc.weight.detach().reshape(-1).view(torch.int32)
    idx = torch.as_tensor(inj.fmap.index)
    assert not bool(((w[idx] >> 29) & 1).any())  # still stuck at 0 after the last update
    repaired = dict(fault.__dict__, until=6)
    model2, _ = _fit(base, train, [fl.TrainFault(**repaired)], detectors=())
    w2 = model2.fc.weight.detach().reshape(-1).view(torch.int32)
    assert bool(((w2[idx] >> 29) & 1).any())  # repaired from step 6: updates set it again


def test_activation_fault_at_one_step_changes_training_and_is_logged(base, train, clean):
    fault = fl.TrainFault("activations", fl.BitFlip(count=3, bits=(26,)), steps=(5,),
                          layers=("bn",))
    model, task = _fit(base, train, [fault], detectors=())
    (inj,) = task.log
    assert inj.target == "activations" and inj.fmap.names == ("bn.out",) and len(inj.fmap) == 3
    assert not _same(model, clean)
    again, _ = _fit(base, train, [inj.replay()], detectors=())
    assert _same(again, model)


def test_immediate_nan_raises_without_policy_and_recompute_recovers_it(base, train, clean):
    fault = fl.TrainFault("activations", fl.BitFlip(count=3, bits=MSB), steps=(5,),
                          layers=("bn",))
    with pytest.raises(FloatingPointError, match=r"training diverged at epoch 0 step 5: "
                       r"losses \{'loss': nan\}.*FaultyTraining.update returned them"):
        _fit(base, train, [fault])
    model, task = _fit(base, train, [fault], policy="recompute")
    assert _same(model, clean)
    assert [(d.step, d.detector, d.recovered) for d in task.detections] == [
        (5, "nonfinite", True)]


def test_step_count_and_sgd_momentum_targets(base, train):
    _, task = _fit(base, train, [fl.TrainFault("step", fl.BitFlip(count=1, bits=(23,)),
                                               steps=(3,))], detectors=())
    assert task.log[0].target == "step" and int(task.log[0].fmap.index[0]) == 0
    sgd = TrainConfig(epochs=1, batch_size=64, lr=0.05, optimizer="sgd")
    _, task = _fit(base, train, [fl.TrainFault("momentum_buffer", fl.BitFlip(count=2),
                                               steps=(5,))], config=sgd, detectors=())
    assert sum(len(i.fmap) for i in task.log) == 2
    with pytest.raises(HwlabError, match="optimizer state this optimizer keeps "
                       r"\(momentum_buffer\), got 'exp_avg'"):
        _fit(base, train, [fl.TrainFault("exp_avg", fl.BitFlip(count=1), steps=(5,))],
             config=sgd)
    with pytest.raises(HwlabError, match="optimizer state appears after the first update"):
        _fit(base, train, [fl.TrainFault("exp_avg", fl.BitFlip(count=1), steps=(0,))])


def test_bad_specs_are_refused_with_the_allowed_values():
    with pytest.raises(HwlabError, match="target of TrainFault must be one of weights, "
                       "gradients, activations"):
        fl.TrainFault("bias", fl.BitFlip(count=1))
    with pytest.raises(HwlabError, match="persistent of TrainFault must be False for target "
                       "'gradients'"):
        fl.TrainFault("gradients", fl.BitFlip(count=1), persistent=True)
    with pytest.raises(HwlabError, match="activations need layers"):
        fl.TrainFault("activations", fl.BitFlip(count=1))
    with pytest.raises(HwlabError, match="policy of faultlab.training must be 'none' when "
                       "there are no detectors"):
        fl.training(Net(), (), detectors=(), policy="rollback")
    with pytest.raises(HwlabError, match="policy of faultlab.training must be one of none, "
                       "skip, recompute, rollback"):
        fl.training(Net(), (), policy="retry")
    with pytest.raises(HwlabError, match="z of LossSpike"):
        fl.LossSpike(z=0)


def test_detectors_against_a_reference_zscore():
    rng = np.random.default_rng(0)
    values = list(rng.normal(1.0, 0.1, 40)) + [1.0 + 0.1 * 7.5]
    det = fl.LossSpike(window=20, z=6.0, warmup=5)
    state = det.state()
    fired = [det.check("pre", {"loss": float(v)}, state) for v in values]
    window = np.array(values[20:40])
    assert (values[-1] > window.mean() + 6 * window.std(ddof=1)) == (fired[-1] is not None)
    assert fired[:-1] == [None] * 40
    assert fl.MomentBound().check("post", {"moment_max": 25.0}, None) == 25.0
    assert fl.MomentBound().check("post", {"moment_max": 19.0}, None) is None


def test_a_local_learning_rule_with_an_ema_trains_under_faults_unchanged(base, train):
    """MAN (local heads + an EMA copy updated in after_step): a gradient fault caught and rolled
    back gives the fault-free weights of every module the rule trains."""
    from localtrain import make_rule

    cfg = TrainConfig(epochs=1, batch_size=64, lr=3e-3)

    torch.manual_seed(1)
    two_blocks = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                               nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
                               nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))

    def run(faults, policy="none"):
        model = copy.deepcopy(two_blocks)
        torch.manual_seed(2)  # the heads and the bias block are drawn from torch's RNG
        rule = make_rule("man", model, K=2, in_shape=(1, 8, 8))
        fit(fl.training(rule, faults, policy=policy, checkpoint_every=4) if faults else rule,
            train, cfg)
        return [t.detach().clone() for m in rule.modules() for t in m.state_dict().values()]

    clean = run(())
    fault = fl.TrainFault("gradients", fl.BitFlip(count=1, bits=MSB), steps=(15,))
    recovered = run([fault], "rollback")
    faulty = run([fault])
    assert all(torch.equal(a, b) for a, b in zip(clean, recovered))
    assert not all(torch.equal(a, b) for a, b in zip(clean, faulty))


def test_a_language_model_trains_under_faults_through_the_one_loop():
    """char-gpt (tiny) on text windows, next-token loss over every position: an Adam
    first-moment flip at step 6 is caught and rolled back to the fault-free weights; a
    second-moment flip that inflates v (the weight freezes) trips no detector."""
    import torch.nn.functional as F

    from hwlab.data import load
    from hwlab.models import char_gpt
    from hwlab.train import ClassificationTask

    text = "the quick brown fox jumps over the lazy dog; " * 40
    path = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "t.txt"
    path.write_text(text)
    train = load(f"text:{path}", "train", block=16)

    def lm_loss(logits, y):  # B x T x V against B x T
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def run(faults, policy="none"):
        torch.manual_seed(0)
        net = char_gpt(train.num_classes, 16, 1, 2, 16)
        task = fl.training(ClassificationTask(net, loss=lm_loss), faults, policy=policy,
                           checkpoint_every=4)
        fit(task, (train.x, train.y), TrainConfig(epochs=3, batch_size=8, lr=3e-3))
        return net, task

    clean, _ = run(())
    fault = fl.TrainFault("exp_avg", fl.BitFlip(count=1, bits=(30,)), steps=(6,))
    faulty, _ = run([fault])
    rolled, task = run([fault], "rollback")
    assert _same(rolled, clean) and not _same(faulty, clean)
    assert [(d.step, d.detector, d.recovered) for d in task.detections] == [
        (6, "moment_bound", True)]
    v_fault = fl.TrainFault("exp_avg_sq", fl.BitFlip(count=1, bits=(30,)), steps=(6,))
    silent, task = run([v_fault], "rollback")
    assert not _same(silent, clean) and task.detections == []  # v ~1e-6 -> ~1e32: a frozen
    # weight, no spike, no NaN, m unchanged: nothing fires
