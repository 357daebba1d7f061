"""FT-ClipAct: clipped activations, profiling, conversion, the threshold search, prefix caching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from faultlab import clipact
from faultlab._campaign_data import CACHE_BYTES, CampaignData
from faultlab._evaluator import Evaluator
from hwlab.data import load
from hwlab.models import create_model
from hwlab.train import TrainConfig, evaluate, fit

FAST = {"rates": (1e-4, 1e-3, 3e-3), "maps": 4, "rounds": 2, "min_rounds": 2, "eval_size": 300}


@pytest.fixture(scope="module")
def digits_mlp():
    """An MLP (64-32-16-10) trained on digits to about 90 % test accuracy, and its data."""
    train, test = load("digits", "train"), load("digits", "test")
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(0)
        model = create_model("mlp", in_shape=(1, 8, 8), hidden=(32, 16))
    fit(model, train, TrainConfig(epochs=10, lr=1e-2, seed=0))
    return model.eval(), train, test


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- ClippedReLU ---------------------------------------------------------------------------
def test_clipped_relu_zero_and_cap_values():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 1.5, math.inf, -math.inf, math.nan])
    zero = clipact.ClippedReLU(1.0, "zero")(x)
    cap = clipact.ClippedReLU(1.0, "cap")(x)
    assert zero.tolist() == [0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0]  # NaN squashed to 0 too
    assert cap[:7].tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]
    assert math.isnan(cap[7])  # cap mode keeps NaN, like torch.clamp
    # zero mode is relu(x) * (x <= t) on finite inputs
    z = torch.randn(1000) * 3
    m = clipact.ClippedReLU(1.25, "zero")
    assert torch.equal(m(z), torch.relu(z) * (z <= 1.25))


def test_clipped_relu_wraps_other_activations_and_moves_threshold():
    m = clipact.ClippedReLU(0.5, "cap", base=nn.GELU())
    x = torch.linspace(-3, 3, 101)
    assert torch.equal(m(x), torch.clamp(nn.functional.gelu(x), max=0.5))
    m.set_threshold(2.0)
    assert float(m.threshold) == 2.0 and "threshold" in m.state_dict()


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1", True])
def test_clipped_relu_rejects_bad_threshold(bad):
    with pytest.raises(ValueError, match="threshold of ClippedReLU must be a finite number >= 0"):
        clipact.ClippedReLU(bad)


def test_clipped_relu_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode of ClippedReLU must be one of zero, cap, got 'clamp'"):
        clipact.ClippedReLU(1.0, "clamp")


# -- sites, feeding layers, profile, clip ----------------------------------------------------
def test_sites_and_feeding_layers_flat_and_residual():
    lenet = create_model("lenet5")
    assert clipact.activation_sites(lenet) == ["1", "4", "8", "10"]
    assert clipact.feeding_layers(lenet) == {"1": ["0"], "4": ["3"], "8": ["7"], "10": ["9"]}
    vgg = create_model("vgg-s")  # conv, BatchNorm, ReLU: the conv feeds, BN is skipped
    assert clipact.feeding_layers(vgg)["2"] == ["0"]
    res = create_model("resnet20", in_shape=(1, 8, 8))
    feeders = clipact.feeding_layers(res)
    assert len(feeders) == 19
    assert feeders["2"] == ["0"] and feeders["3.relu1"] == ["3.conv1"]
    # after the residual add: this block's conv2 (the option-A shortcut carries no weights)
    assert feeders["3.relu2"] == ["3.conv2"] and feeders["11.relu2"] == ["11.conv2"]


def test_profile_is_the_max_of_each_relu_output():
    torch.manual_seed(1)
    model = create_model("lenet5").eval()
    x = torch.rand(40, 1, 28, 28)
    maxima = clipact.profile(model, (x, torch.zeros(40, dtype=torch.long)), batch_size=16)
    h, expect = x, {}
    with torch.no_grad():
        for name, child in model.named_children():
            h = child(h)
            if isinstance(child, nn.ReLU):
                expect[name] = float(h.max())
    assert maxima == pytest.approx(expect, rel=0, abs=0)


def test_clip_returns_new_model_and_leaves_input_untouched():
    torch.manual_seed(2)
    model = create_model("resnet20", in_shape=(1, 8, 8)).eval()
    before = _state(model)
    x = torch.rand(32, 1, 8, 8)
    maxima = clipact.profile(model, (x, torch.zeros(32, dtype=torch.long)))
    ranger = clipact.clip(model, maxima, mode="cap")
    assert ranger is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model[2], nn.ReLU) and isinstance(model[3].relu1, nn.ReLU)
    assert isinstance(ranger.get_submodule("3.relu1"), clipact.ClippedReLU)
    assert set(model.state_dict()) <= set(ranger.state_dict())  # parameter names preserved
    assert clipact.thresholds(ranger) == maxima
    with torch.no_grad():  # capping at the profiled maximum changes nothing on the profiled data
        assert torch.equal(ranger(x), model(x))
        assert not torch.equal(clipact.clip(model, {k: v / 2 for k, v in maxima.items()})(x),
                               model(x))


def test_clip_rejects_unknown_site_and_bad_threshold():
    model = create_model("lenet5")
    with pytest.raises(ValueError, match=r"thresholds of clip must be keys among the model's "
                                         r"activation sites \(1, 10, 4, 8\), got '2'"):
        clipact.clip(model, {"2": 1.0})
    with pytest.raises(ValueError, match=r"thresholds\['1'\] of clip must be a finite number"):
        clipact.clip(model, {"1": -1.0})


def test_profile_rejects_empty_data_and_model_without_activations():
    with pytest.raises(ValueError, match="data of profile must be a non-empty dataset"):
        clipact.profile(create_model("lenet5"), (torch.zeros(0, 1, 28, 28),
                                                 torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"model of profile must be a model with unbounded "
                                         r"activation call sites \(ReLU, .*, got 'Sequential without any "
                                         r"activation call site hwlab.graph recognises'"):
        clipact.profile(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)),
                        (torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long)))


# -- prefix caching (the campaign engine's evaluator, used by the threshold search) -----------
def _evaluator(model, x, y, batch_size=500):
    return Evaluator(model, CampaignData((x, y), batch_size, "test", model), None, (), True,
                     CACHE_BYTES)


@pytest.mark.parametrize("name,shape", [("lenet5", (1, 28, 28)), ("resnet20", (1, 8, 8)),
                                        ("vgg-s", (1, 16, 16))])
def test_prefix_evaluator_is_bit_identical_to_full_inference(name, shape):
    torch.manual_seed(3)
    model = create_model(name, in_shape=shape).eval()
    x, y = torch.rand(37, *shape), torch.randint(0, 10, (37,))
    ev = _evaluator(model, x, y, batch_size=16)
    assert ev.cached and ev.fallback is None
    with torch.no_grad():
        full = torch.cat([model(x[i: i + 16]) for i in range(0, 37, 16)])
    cuts = [c.node for c in ev._graph[0].cuts]
    assert len(cuts) >= len(model) - 1
    ev.warm(cuts)
    assert set(ev._acts) == set(cuts)  # every cut cached, in one chained pass
    assert torch.equal(ev.logits(), full)
    for cut in cuts:
        assert ev._activations(cut)[0] == cut  # really started from the cache
        assert torch.equal(ev.logits(cut), full), cut
    # under a fault in the last site's producer, the segment after the cut equals full inference
    layer = clipact.feeding_layers(model)[clipact.activation_sites(model)[-1]][0]
    start = ev.cut_before([layer])
    assert start is not None
    fmap = fl.sample_faults(model, fl.BitFlip(count=5, bits=(30,)), seed=1, layers=[layer])
    ev.clear_activations()
    ev.warm([start])  # cache filled before the fault
    assert set(ev._acts) == {start}
    with fl.inject(model, fmap):
        with torch.no_grad():
            faulty = torch.cat([model(x[i: i + 16]) for i in range(0, 37, 16)])
        assert torch.equal(ev.logits(start), faulty)
        assert not torch.equal(faulty, full)


def test_prefix_evaluator_cut_before_on_sequential_and_wrapped_models():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = create_model("lenet5")

        def forward(self, x):
            return self.body(x)

    model = Wrapped().eval()
    x, y = torch.rand(5, 1, 28, 28), torch.zeros(5, dtype=torch.long)
    ev, seq = _evaluator(model, x, y), _evaluator(model.body, x, y)
    # the same cut (the flatten before body.7) in the wrapper as in the Sequential itself
    a, b = ev.cut_before(["body.7"]), seq.cut_before(["7"])
    assert a is not None and b is not None
    assert [c.index for c in ev._graph[0].cuts if c.node == a] == \
        [c.index for c in seq._graph[0].cuts if c.node == b]
    assert seq.cut_before(["9", "3.weight"]) == seq.cut_before(["3"])
    assert seq.cut_before(["0"]) is None  # nothing before the first layer
    start = ev.cut_before(["body.9"])
    ev.warm([start])
    assert torch.equal(ev.logits(start), seq.logits())
    with pytest.raises(ValueError, match="layers of Evaluator.cut_before must be module "
                                         "or parameter names of the model, got 'fc'"):
        seq.cut_before(["fc"])
    with pytest.raises(ValueError, match="cut of Evaluator.logits must be None or a cut node "
                                         "returned by cut_before, got 'nowhere'"):
        seq.logits("nowhere")


def test_prefix_evaluator_clones_a_cached_input_the_tail_writes_in_place():
    class Scale(nn.Module):  # the segment after fc1 doubles its input in place
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = self.fc1(x.flatten(1))
            h.mul_(2).add_(1)  # not idempotent: a reused, written cache would drift
            return self.fc2(F.relu(h))

    torch.manual_seed(5)
    model = Scale().eval()
    x, y = torch.randn(9, 1, 2, 2), torch.zeros(9, dtype=torch.long)
    ev = _evaluator(model, x, y, batch_size=4)
    graph = ev._graph[0] if ev.cached else None
    assert graph.mutates_input(graph.segment("fc1", None))  # the tail: mul_, add_, ...
    assert not graph.mutates_input(graph.segment(ev.cut_before(["fc2"]), None))
    ev.warm(["fc1"])
    assert ev._activations("fc1")[0] == "fc1"
    with torch.no_grad():
        full = torch.cat([model(x[i: i + 4]) for i in range(0, 9, 4)])
    for _ in range(3):
        assert torch.equal(ev.logits("fc1"), full)


def test_prefix_evaluator_falls_back_loudly_for_an_untraceable_model(caplog):
    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = x.flatten(1)
            return self.fc(h) if h.sum() > 0 else -self.fc(h)

    model = Branchy().eval()
    x = torch.rand(6, 1, 2, 2)
    ev = _evaluator(model, x, torch.zeros(6, dtype=torch.long))
    with caplog.at_level("WARNING", logger="faultlab._evaluator"):
        assert not ev.cached
    assert "must be traceable by torch.fx" in ev.fallback
    assert "prefix caching is off" in caplog.text and "Branchy" in caplog.text
    assert ev.cut_before(["fc"]) is None
    ev.warm([None])
    with torch.no_grad():
        assert torch.equal(ev.logits(), model(x))


# -- the threshold search ---------------------------------------------------------------------
def test_protect_is_reproducible_and_leaves_input_untouched(digits_mlp):
    model, train, _ = digits_mlp
    before = _state(model)
    a = clipact.search_thresholds(model, train, mode="zero", seed=3, **FAST)
    b = clipact.search_thresholds(model, train, mode="zero", seed=3, **FAST)
    assert a.thresholds == b.thresholds and a.history == b.history
    protected = clipact.protect(model, train, mode="zero", seed=3, **FAST)
    assert clipact.thresholds(protected) == a.thresholds
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(isinstance(m, nn.ReLU) for m in (model[2], model[4]))
    assert list(a.thresholds) == ["2", "4"] and a.feeders == {"2": ["1"], "4": ["3"]}
    assert a.to_dict()["config"]["maps"] == 4


def test_search_follows_the_interval_procedure(digits_mlp):
    model, train, _ = digits_mlp
    res = clipact.search_thresholds(model, train, mode="cap", **FAST)
    hist = res.to_frame()
    first = hist[(hist.site == "2") & (hist["round"] == 0)]
    np.testing.assert_allclose(first.threshold, np.linspace(0, res.profiled["2"], 4))
    for site, rows in hist.groupby("site"):
        assert rows["round"].max() == 1  # two rounds: min_rounds=2 = rounds
        best = rows.loc[rows.score == rows.score.max(), "threshold"].max()
        assert res.thresholds[site] == best  # the best scored candidate, ties to the larger
        r0 = rows[rows["round"] == 0].reset_index()
        b = int(r0.score[::-1].idxmax())
        r1 = rows[rows["round"] == 1].threshold.to_numpy()
        assert r1[0] == r0.threshold[max(b - 1, 0)] and r1[-1] == r0.threshold[min(b + 1, 3)]
    assert (hist.score <= 100 * 2 / 3 + 1e-9).all()  # 3 rates: max area 100 (k - 1) / k


def test_search_score_is_clean_area_when_no_fault_lands(digits_mlp):
    model, train, _ = digits_mlp
    res = clipact.search_thresholds(model, train, rates=(0.0, 1e-12), maps=2, rounds=3,
                                    min_rounds=1, tolerance=1e9, eval_size=200)
    hist = res.to_frame()
    assert hist["round"].max() == 0  # the early stop fires after min_rounds = 1
    np.testing.assert_allclose(hist.score, 100 * hist.clean_accuracy * 0.5, rtol=1e-12)


def test_protected_model_resists_faults_on_fresh_maps(digits_mlp):
    model, train, test = digits_mlp
    protected = clipact.protect(model, train, mode="zero", seed=0, **FAST)
    xy = (test.x, test.y)
    assert abs(evaluate(protected, xy) - evaluate(model, xy)) <= 0.02
    acc_u, acc_p = [], []
    for k in range(20):  # seeds the search never used (its maps derive from (seed, site, ...))
        with fl.inject(model, fl.BitFlip(rate=3e-3), seed=50_000 + k):
            acc_u.append(evaluate(model, xy))
        with fl.inject(protected, fl.BitFlip(rate=3e-3), seed=50_000 + k):
            acc_p.append(evaluate(protected, xy))
    assert np.mean(acc_p) >= np.mean(acc_u) + 0.25, (np.mean(acc_u), np.mean(acc_p))


def test_protect_rejects_bad_options(digits_mlp):
    model, train, _ = digits_mlp
    with pytest.raises(ValueError, match="options of protect must be fields of SearchConfig"):
        clipact.protect(model, train, trials=3)
    with pytest.raises(ValueError, match="mode of protect must be one of zero, cap, got 'clip'"):
        clipact.protect(model, train, mode="clip")
    with pytest.raises(ValueError, match="rates of protect must be at least two distinct "
                                         "increasing per-bit rates"):
        clipact.protect(model, train, rates=(1e-5, -1.0))
    with pytest.raises(ValueError, match="candidates of protect must be an integer >= 3, got 2"):
        clipact.protect(model, train, candidates=2)
    with pytest.raises(ValueError, match=r"data of protect must be a hwlab.data.Split, an \(x, y\) "
                                         r"pair, a DataLoader or an iterable of \(x, y\) batches; "
                                         r"batch 0 is not an \(x, y\) pair, got 'int'"):
        clipact.protect(model, [1, 2, 3])
