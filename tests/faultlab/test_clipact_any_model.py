"""FT-ClipAct, Ranger, prefix caching and vulnerability on a researcher's own (non-zoo) network.

The model below is written the way researchers write them, not as an nn.Sequential: functional
``F.relu``, a tensor-method ``.relu()``, ``torch.clamp(min=0)``, ONE ``nn.ReLU(inplace=True)``
module called twice per block, residual adds (identity and projection shortcut), ``torch.cat``
and BatchNorm. Trained on digits for a few seconds. Faults for the protection check are drawn by
an independent NumPy bit-flip injector written here, not by faultlab.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import faultlab as fl
import faultlab._sample
from faultlab import clipact
from faultlab._campaign_data import CACHE_BYTES, CampaignData
from faultlab._evaluator import Evaluator
from hwlab.data import load
from hwlab.train import TrainConfig, evaluate, fit

FAST = {"rates": (1e-4, 1e-3, 3e-3), "maps": 4, "rounds": 2, "min_rounds": 2, "eval_size": 300}
SITES = ["relu()", "block1.relu", "block1.relu@2", "relu()@2", "block2.relu", "block2.relu@2",
         "clamp()"]


class Block(nn.Module):
    """Residual block with one in-place ReLU module called twice; projection when widths differ."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.proj = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.proj is None else self.proj(x)
        return self.relu(out + short)  # residual add, second call of the same module


class DigitsNet(nn.Module):
    def __init__(self, c: int = 16, hidden: int = 64):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.block1 = Block(c, c)
        self.side = nn.Conv2d(c, c, 1)
        self.block2 = Block(2 * c, c)
        self.fc1 = nn.Linear(c * 16, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))  # B x c x 8 x 8
        h = self.block1(h)
        h = torch.cat([h, self.side(h).relu()], 1)  # B x 2c x 8 x 8
        h = self.block2(h)  # B x c x 8 x 8
        h = F.avg_pool2d(h, 2).flatten(1)  # B x 16c
        h = torch.clamp(self.fc1(h), min=0)  # B x hidden
        return self.fc2(h)  # B x 10


def reference_maxima(model: DigitsNet, x: torch.Tensor) -> dict[str, float]:
    """The forward written out by hand, recording the max at every activation call."""
    out = {}

    def rec(name, t):
        out[name] = max(float(t.max()), 0.0)
        return t

    with torch.no_grad():
        h = rec("relu()", F.relu(model.bn(model.stem(x))))
        b = model.block1
        o = rec("block1.relu", F.relu(b.bn1(b.conv1(h))))
        h = rec("block1.relu@2", F.relu(b.bn2(b.conv2(o)) + h))
        h = torch.cat([h, rec("relu()@2", F.relu(model.side(h)))], 1)
        b = model.block2
        o = rec("block2.relu", F.relu(b.bn1(b.conv1(h))))
        h = rec("block2.relu@2", F.relu(b.bn2(b.conv2(o)) + b.proj(h)))
        rec("clamp()", F.relu(model.fc1(F.avg_pool2d(h, 2).flatten(1))))
    return out


def flip_bits(models, rate: float, rng: np.random.Generator) -> int:
    """Independent injector: flip each bit of every float32 weight (conv/linear, not bias / BN)
    with probability ``rate``, at the SAME positions in each model (matched by parameter name)."""
    total = 0
    for name, p in models[0].named_parameters():
        if p.dim() < 2:
            continue
        n_bits = p.numel() * 32
        k = int(rng.binomial(n_bits, rate))
        pos = rng.choice(n_bits, size=k, replace=False) if k else np.zeros(0, np.int64)
        idx, bit = pos // 32, (pos % 32).astype(np.uint32)
        for m in models:
            words = m.get_parameter(name).detach().numpy().reshape(-1).view(np.uint32)
            np.bitwise_xor.at(words, idx, np.left_shift(np.uint32(1), bit))
        total += k
    return total


@pytest.fixture(scope="module")
def trained():
    train, test = load("digits", "train"), load("digits", "test")
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(0)
        model = DigitsNet()
    fit(model, train, TrainConfig(epochs=6, lr=3e-3, seed=0))
    return model.eval(), train, test


@pytest.fixture(scope="module")
def protected(trained):
    model, train, _ = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    search = clipact.search_thresholds(model, train, mode="zero", seed=0, **FAST)
    prot = clipact.clip(model, search.thresholds, mode="zero").eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return search, prot


def test_every_call_site_is_found_with_its_own_producers(trained):
    model, _, test = trained
    assert clipact.activation_sites(model) == SITES
    feeders = clipact.feeding_layers(model)
    assert feeders == {"relu()": ["stem"], "block1.relu": ["block1.conv1"],
                       # identity shortcut: it ends at the stem's activation, another site
                       "block1.relu@2": ["block1.conv2"], "relu()@2": ["side"],
                       "block2.relu": ["block2.conv1"],
                       "block2.relu@2": ["block2.conv2", "block2.proj"],  # both branches
                       "clamp()": ["fc1"]}
    maxima = clipact.profile(model, test)
    assert maxima == pytest.approx(reference_maxima(model, test.x), rel=0, abs=0)
    assert maxima["block1.relu"] != maxima["block1.relu@2"]  # the reused module is not merged


def test_profile_and_search_accept_a_dataloader(trained):
    model, train, _ = trained
    x, y = train.x[:400], train.y[:400]
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    assert clipact.profile(model, loader) == clipact.profile(model, (x, y))
    opts = {"rates": (1e-3, 3e-3), "rounds": 1, "min_rounds": 1, "maps": 1, "eval_size": 100}
    a = clipact.search_thresholds(model, loader, **opts)
    b = clipact.search_thresholds(model, (x, y), **opts)
    assert a.thresholds == b.thresholds and list(a.thresholds) == SITES


def test_search_faults_all_of_a_sites_own_producers(trained, monkeypatch):
    model, train, _ = trained
    seen = {}
    real = faultlab._sample.sample_faults

    def spy(m, fault_model, seed=0, layers=None, **kw):
        seen.setdefault(tuple(layers), 0)
        seen[tuple(layers)] += 1
        return real(m, fault_model, seed=seed, layers=layers, **kw)

    monkeypatch.setattr(faultlab._sample, "sample_faults", spy)
    clipact.search_thresholds(model, train, rates=(1e-3, 3e-3), maps=1, rounds=1, min_rounds=1,
                              eval_size=100)
    assert set(seen) == {("stem",), ("block1.conv1",), ("block1.conv2",), ("side",),
                         ("block2.conv1",), ("block2.conv2", "block2.proj"), ("fc1",)}


def test_protect_gives_every_call_site_its_own_threshold(trained, protected):
    model, train, _ = trained
    search, prot = protected
    assert list(search.thresholds) == SITES and clipact.thresholds(prot) == search.thresholds
    clipped = [m for m in prot.modules() if isinstance(m, clipact.ClippedReLU)]
    assert len(clipped) == len(SITES)  # the twice-called ReLU module became two sites
    assert sorted(m.site for m in clipped) == sorted(SITES)
    # the input is untouched: still one shared in-place ReLU, functional calls, no clipping
    assert isinstance(model.block1.relu, nn.ReLU) and model.block1.relu.inplace
    assert not any(isinstance(m, clipact.ClippedReLU) for m in model.modules())
    # parameter names preserved; the new thresholds are buffers beside them
    assert set(model.state_dict()) < set(prot.state_dict())
    assert {k for k in prot.state_dict() if k.endswith("threshold")} == {
        "relu_fn1.threshold", "block1.relu_call1.threshold", "block1.relu_call2.threshold",
        "relu_fn2.threshold", "block2.relu_call1.threshold", "block2.relu_call2.threshold",
        "clamp_fn1.threshold"}
    # re-tracing the protected model finds the same sites, under the same names (re-tuning)
    assert clipact.activation_sites(prot) == SITES
    again = clipact.profile(prot, train)  # read before each clipping
    assert list(again) == SITES and again["relu()"] == search.profiled["relu()"]
    halved = clipact.clip(prot, {"block1.relu@2": 1.0})
    assert clipact.thresholds(halved)["block1.relu@2"] == 1.0
    assert clipact.thresholds(halved)["block1.relu"] == search.thresholds["block1.relu"]


def test_ranger_caps_each_site_at_its_profiled_max(trained):
    model, train, _ = trained
    maxima = clipact.profile(model, train)
    ranger = clipact.clip(model, maxima, mode="cap")
    assert clipact.thresholds(ranger) == maxima
    assert clipact.profile(ranger, train) == maxima  # profiled before its clipping, per site
    with torch.no_grad():  # capping at the profiled maxima changes nothing on the profiled data
        assert torch.equal(ranger(train.x), model(train.x))
        low = clipact.clip(model, {"block1.relu@2": maxima["block1.relu@2"] / 4}, mode="cap")
        assert not torch.equal(low(train.x), model(train.x))


def test_a_fault_map_of_the_model_replays_on_the_protected_model(trained, protected):
    model, _, _ = trained
    _, prot = protected
    fmap = fl.sample_faults(model, fl.BitFlip(rate=1e-3), seed=4)
    assert len(fmap) > 10
    with fl.inject(model, fmap), fl.inject(prot, fmap):
        faulty = dict(prot.named_parameters())
        assert all(torch.equal(p, faulty[n]) for n, p in model.named_parameters())
    with torch.no_grad():
        x = torch.rand(4, 1, 8, 8)
        assert torch.equal(prot(x), clipact.clip(model, clipact.thresholds(prot))(x))


def test_protected_model_keeps_accuracy_under_independent_bit_flips(trained, protected):
    model, _, test = trained
    _, prot = protected
    unprot = copy.deepcopy(model)
    xy = (test.x, test.y)
    clean_u, clean_p = evaluate(unprot, xy), evaluate(prot, xy)
    assert clean_u > 0.95 and abs(clean_p - clean_u) <= 0.01
    s_u, s_p = copy.deepcopy(unprot.state_dict()), copy.deepcopy(prot.state_dict())
    rng = np.random.default_rng(2026)
    acc_u, acc_p = [], []
    for _ in range(40):
        assert flip_bits([unprot, prot], 6e-5, rng) > 0
        acc_u.append(evaluate(unprot, xy))
        acc_p.append(evaluate(prot, xy))
        unprot.load_state_dict(s_u)
        prot.load_state_dict(s_p)
    mean_u, mean_p = np.mean(acc_u), np.mean(acc_p)
    assert 0.3 * clean_u <= mean_u <= 0.7 * clean_u, mean_u  # the rate about halves it
    assert mean_p >= 1.5 * mean_u, (mean_u, mean_p)


def test_vulnerability_is_identical_with_and_without_prefix_caching(trained):
    model, _, test = trained
    kw = {"bits": (22, 29, 30, 31), "trials": 2, "seed": 1}
    fast = fl.vulnerability(model, test, **kw)
    slow = fl.vulnerability(model, test, prefix=False, **kw)
    assert fast.attrs["prefix_cached"] and not slow.attrs["prefix_cached"]
    assert fast.drop(columns="seconds").equals(slow.drop(columns="seconds"))
    assert set(fast.layer) == {"stem", "block1.conv1", "block1.conv2", "side", "block2.conv1",
                               "block2.conv2", "block2.proj", "fc1", "fc2"}
    assert fast[fast.bit == 30].accuracy_drop.max() > 0.2  # real faults were evaluated


def test_prefix_caching_runs_only_the_head_for_faults_in_the_two_head_layers(trained):
    """What makes it faster, counted (the speed itself is benchmarks/
    faultlab_vulnerability_prefix.py's claim): with faults only in fc1 / fc2, the stem runs
    once per batch for the cached prefix, not once per fault map."""
    model, train, _ = trained
    kw = {"layers": ["fc1", "fc2"], "bits": (23, 30), "trials": 2, "seed": 0, "eval_size": 200}
    calls = {True: 0, False: 0}
    tables = {}
    for prefix in (False, True):
        def count(*_, prefix=prefix):
            calls[prefix] += 1

        handle = model.stem.register_forward_hook(count)
        try:
            tables[prefix] = fl.vulnerability(model, train, prefix=prefix, batch_size=100, **kw)
        finally:
            handle.remove()
    assert tables[True].drop(columns="seconds").equals(tables[False].drop(columns="seconds"))
    maps, batches = 2 * 2 * 2, 2  # layers x bits x trials, 200 images in batches of 100
    assert calls[False] == batches * (1 + maps)  # the fault-free pass, then every map
    assert calls[True] == batches * 2  # the fault-free pass and the one cached prefix


def test_untraceable_model_runs_full_inference_with_a_flag(caplog):
    class Gate(nn.Module):  # data-dependent branch: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 16), nn.Linear(16, 10)

        def forward(self, x):
            h = F.relu(self.fc1(x.flatten(1)))
            return self.fc2(h) if h.mean() > 0 else self.fc2(-h)

    model = Gate().eval()
    x, y = torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,))
    with caplog.at_level("WARNING"):
        df = fl.vulnerability(model, (x, y), layers=["fc2"], bits=[30], trials=2)
    assert df.attrs["prefix_cached"] is False and "Gate" in df.attrs["prefix_fallback"]
    assert "delayed start off for Gate" in caplog.text  # the campaign engine's warning
    caplog.clear()
    ev = Evaluator(model, CampaignData((x, y), 500, "test", model), None, (), True, CACHE_BYTES)
    with caplog.at_level("WARNING", logger="faultlab._evaluator"):
        assert not ev.cached  # the search's evaluator is the same one: the same, loudly
    assert "prefix caching is off" in caplog.text
    slow = fl.vulnerability(model, (x, y), layers=["fc2"], bits=[30], trials=2, prefix=False)
    assert df.drop(columns="seconds").equals(slow.drop(columns="seconds"))
    with pytest.raises(ValueError, match=r"model of hwlab.graph.trace must be traceable by "
                                         r"torch.fx.*Gate"):
        clipact.profile(model, (x, y))


@pytest.mark.parametrize("first", ["block1.relu@2", "block1.relu", "relu()@2", "relu()"])
def test_partly_clipped_models_keep_the_original_site_names(first):
    model = DigitsNet().eval()
    part = clipact.clip(model, {first: 1.5})
    assert clipact.activation_sites(part) == SITES  # later calls are not renumbered
    assert clipact.thresholds(part) == {first: 1.5}
    other = next(s for s in SITES if s != first)
    both = clipact.clip(part, {other: 0.5, first: 2.0})  # re-tuning the clipped one too
    th = clipact.thresholds(both)
    assert th == {first: 2.0, other: 0.5} and list(th) == [s for s in SITES if s in th]
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # the same function as clipping both at once on the original
        assert torch.equal(both(x), clipact.clip(model, {first: 2.0, other: 0.5})(x))


def test_every_form_of_an_unbounded_activation_is_a_site_and_clips():
    class Forms(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)
            self.act6 = nn.ReLU6()

        def forward(self, x):
            h = torch.relu(self.a(x))  # torch.relu
            h = self.b(h).relu_()  # in-place method
            h = F.leaky_relu(h - 0.5, 0.2, True)  # in-place functional with a positional slope
            h = F.gelu(h, approximate="tanh") + self.act6(h)  # ReLU6: bounded, not a site
            h = torch.clamp(h, min=0, max=6) + F.relu(h, inplace=True)  # clamp(0, 6): bounded
            return self.c(h)

    model = Forms().eval()
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(7))
    data = (x, torch.zeros(64, dtype=torch.long))
    assert clipact.activation_sites(model) == ["relu()", "relu()@2", "leaky_relu()", "gelu()",
                                               "relu()@3"]
    maxima = clipact.profile(model, data)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(clipact.clip(model, maxima, mode="cap")(x), ref)
        low = {**maxima, "leaky_relu()": maxima["leaky_relu()"] / 3}
        got = clipact.clip(model, {"leaky_relu()": low["leaky_relu()"]}, mode="zero")(x)
        h = torch.relu(model.b(torch.relu(model.a(x))))
        h = F.leaky_relu(h - 0.5, 0.2)
        h = torch.where(h <= torch.tensor(low["leaky_relu()"]), h, torch.zeros(()))
        h = F.gelu(h, approximate="tanh") + F.relu6(h)
        assert torch.equal(got, model.c(torch.clamp(h, 0, 6) + F.relu(h)))
