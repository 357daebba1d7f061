"""Models written here that the zoo does not contain, at the edges public architectures reach:
parameters of the model itself (a ViT's class token), a leaf module returning a tuple
(ShuffleNetV2's channel split) and a submodule fx cannot trace (the ``leaf_modules`` fix)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
import hwlab.graph as hg
from faultlab import clipact
from faultlab._vulnerability import weight_layers
from hwlab.seeds import derive_seed


class _TinyViT(nn.Module):
    """Patch embedding, a class token and position embedding of its own, one MLP block."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 4, stride=4)  # 8x8 -> 2x2 patches
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 5, 8) * 0.1)
        self.mlp = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # B x 4 x 8
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], 1) + self.pos
        t = t + F.gelu(self.mlp(t))
        return self.head(t[:, 0])


def _seeded(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


def _data(n=64, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


# -- parameters of the model itself --------------------------------------------------------------
def test_root_parameters_are_layers_of_their_own():
    m = _seeded(_TinyViT())
    assert hg.trace(m).weight_layers == ["embed", "cls", "pos", "mlp", "head"]
    assert weight_layers(m) == ["embed", "cls", "pos", "mlp", "head"]


def test_the_empty_layer_name_is_refused_not_every_parameter():
    m = _seeded(_TinyViT())
    with pytest.raises(ValueError, match=r"layers of sample_faults must be .*'' would be the "
                                         r"whole model.*got ''"):
        fl.sample_faults(m, fl.BitFlip(count=20), layers=[""])
    fmap = fl.sample_faults(m, fl.BitFlip(count=20), layers=["cls"], seed=3)
    assert len(fmap) == 20 and {fmap.names[i] for i in fmap.param} == {"cls"}


def test_vulnerability_row_of_a_root_parameter_faults_only_it():
    m = _seeded(_TinyViT())
    x, y = _data()
    df = fl.vulnerability(m, (x, y), fault=2, bits=[30], trials=3, seed=5)
    assert df.layer.tolist() == ["embed", "cls", "pos", "mlp", "head"]
    # reference: the same seeded maps, drawn over the class token only, injected by hand
    accs = []
    for t in range(3):
        fmap = fl.sample_faults(m, fl.BitFlip(count=2, bits=(30,)), layers=["cls"],
                                seed=derive_seed(5, f"cls|30|{t}"))
        assert {fmap.names[i] for i in fmap.param} == {"cls"}
        with fl.inject(m, fmap), torch.no_grad():
            accs.append((m(x).argmax(1) == y).float().mean().item())
    row = df[df.layer == "cls"].iloc[0]
    assert row.accuracy == pytest.approx(np.mean(accs), abs=1e-9)
    assert row.n_faults == 2


# -- a leaf module returning a tuple -------------------------------------------------------------
class _Split(nn.Module):
    _hwlab_leaf = True  # ShuffleNetV2's split, kept opaque as the docs advise

    def forward(self, x):
        c = int(x.size(1) * 0.5)
        return x[:, :c], x[:, c:]


class _ShuffleNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.split = _Split()
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        a, b = self.split(x)
        x = torch.cat([a, F.relu(self.branch(b))], 1)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("sample", [None, (1, 8, 8)])
def test_a_tuple_valued_node_is_not_a_cut_point(sample):
    g = hg.trace(_ShuffleNetLike(), sample=sample)
    values = {c.node for c in g.cuts}
    assert "split" not in values and {"stem", "relu", "cat", "flatten"} <= values


def test_campaign_and_vulnerability_with_a_tuple_leaf_equal_full_inference():
    m = _seeded(_ShuffleNetLike())
    x, y = _data()
    faults = [fl.BitFlip(count=3), fl.BitFlip(count=1, bits=(30,))]
    cached = fl.campaign(m, (x, y), faults, trials=4, seed=0, metrics=("accuracy", "sdc"))
    full = fl.campaign(m, (x, y), faults, trials=4, seed=0, metrics=("accuracy", "sdc"),
                       delayed_start=False)
    assert cached.accuracy.tolist() == full.accuracy.tolist()
    assert cached.sdc.tolist() == full.sdc.tolist()
    assert cached.accuracy.nunique() > 1  # the faults changed something
    v1 = fl.vulnerability(m, (x, y), bits=[30, 22], trials=2)
    v2 = fl.vulnerability(m, (x, y), bits=[30, 22], trials=2, prefix=False)
    assert v1.attrs["prefix_cached"] and v1.accuracy.tolist() == v2.accuracy.tolist()


def test_protect_runs_on_a_model_with_a_tuple_leaf():
    m = _seeded(_ShuffleNetLike())
    x, y = _data(128)
    opts = {"rates": (1e-4, 1e-3), "maps": 2, "rounds": 1, "min_rounds": 1, "eval_size": 64}
    result = clipact.search_thresholds(m, (x, y), **opts)
    prot = clipact.protect(m, (x, y), **opts)
    assert list(result.thresholds) == ["relu()", "relu()@2"]
    assert clipact.thresholds(prot) == result.thresholds
    with torch.no_grad():  # clipping at the profiled maxima or below keeps the split's output
        assert prot(x).shape == m(x).shape


# -- a submodule fx cannot trace: the advised fix is an argument of every traced entry point ------
class _Gate(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x  # data-dependent control flow


class _Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.gate, self.fc2 = nn.Linear(64, 16), _Gate(), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(self.gate(F.relu(self.fc1(x.flatten(1)))))


def test_campaign_follows_its_own_advice(caplog):
    m = _seeded(_Gated())
    x, y = _data()
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        plain = fl.campaign(m, (x, y), [fl.BitFlip(count=2)], trials=3, seed=0)
    advice = [r.getMessage() for r in caplog.records if "delayed start off" in r.getMessage()]
    assert advice and "leaf_modules=['gate']" in advice[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        fixed = fl.campaign(m, (x, y), [fl.BitFlip(count=2)], trials=3, seed=0,
                            leaf_modules=["gate"])
    assert not [r for r in caplog.records if "delayed start off" in r.getMessage()]
    assert fixed.accuracy.tolist() == plain.accuracy.tolist()
    v = fl.vulnerability(m, (x, y), bits=[30], trials=2, leaf_modules=["gate"])
    assert v.attrs["prefix_cached"] and v.layer.tolist() == ["fc1", "fc2"]


def test_leaf_modules_of_campaign_are_checked():
    m = _seeded(_Gated())
    with pytest.raises(ValueError, match=r"leaf_modules of campaign must be names of submodules "
                                         r"of the model .*got 'nope'"):
        fl.campaign(m, _data(), [fl.BitFlip(count=2)], trials=1, leaf_modules=["nope"])
    with pytest.raises(ValueError, match=r"leaf_modules of vulnerability must be .*got 3"):
        fl.vulnerability(m, _data(), trials=1, leaf_modules=[3])
