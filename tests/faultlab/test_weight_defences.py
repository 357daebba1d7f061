"""Saturating weight functions and weight scaling: the checks of the paper notes
(shared/papers/newer-defences.md), on a residual CNN written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl


class _Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        return self.fc(F.relu(h + self.conv(h)).mean((2, 3)))


def _model():
    torch.manual_seed(0)
    return _Res().eval()


X = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fn", ["tanh", "arctan", "softsign"])
def test_saturated_model_computes_the_same_and_keeps_the_names(fn):
    m = _model()
    s = fl.saturate(m, fn)
    assert [n for n, _ in s.named_parameters()] == [n for n, _ in m.named_parameters()]
    with torch.no_grad():
        torch.testing.assert_close(s(X), m(X), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(_model().parameters(), m.parameters()))


def test_no_effective_weight_exceeds_the_bound_under_faults_and_nan_reads_zero():
    s = fl.saturate(_model(), "tanh")
    fmap = fl.sample_faults(s, fl.BitFlip(rate=0.02), seed=3)
    with fl.inject(s, fmap):
        raw = torch.cat([p.detach().reshape(-1) for n, p in s.named_parameters()
                         if n.endswith("weight")])
        eff = torch.cat([m.effective_weight().detach().reshape(-1) for m in s.modules()
                         if isinstance(m, fl.WeightTransformed)])
        assert raw.abs().max() > 1e3 or torch.isnan(raw).any()  # the flips made some huge
        assert eff.abs().max() <= 1.0 and not torch.isnan(eff).any()
        assert int(torch.isnan(raw).sum()) == int(((eff == 0) & torch.isnan(raw)).sum())


def test_faults_into_raw_weights_differ_from_faults_into_tau_of_them():
    """The order of operations: memory holds W, the layer reads tanh(W)."""
    m, s = _model(), fl.saturate(_model(), "tanh")
    fmap = fl.sample_faults(m, fl.BitFlip(count=40, bits=(30,)), seed=0)  # same sites, both
    with torch.no_grad(), fl.inject(s, fmap), fl.inject(m, fmap):
        assert not torch.allclose(s(X), m(X), atol=1e-3)
        raw = m(X)  # the unprotected model explodes: inf / NaN logits
        assert torch.isfinite(s(X)).all() and s(X).abs().max() < 1e3
        assert not torch.isfinite(raw).all() or raw.abs().max() > 1e3


def test_weight_scaling_c1_is_the_baseline_and_mantissa_errors_scale_free():
    m = _model()
    one = fl.scale_weights(m, 1.0)
    fmap = fl.sample_faults(m, fl.BitFlip(rate=1e-3), seed=5)
    with torch.no_grad(), fl.inject(m, fmap), fl.inject(one, fmap):
        assert torch.equal(one(X), m(X))  # same map, same seed: the baseline exactly
    for k in (-3, 4):
        scaled = fl.scale_weights(m, 2.0 ** k)
        mant = fl.sample_faults(m, fl.BitFlip(count=30, bits=tuple(range(23))), seed=1)
        rel = []
        for model in (one, scaled):
            layer = model.fc
            before = layer.effective_weight().detach().clone()
            with fl.inject(model, mant):
                after = layer.effective_weight().detach().clone()
            moved = before != after
            rel.append(((after - before)[moved] / before[moved]).numpy())
        np.testing.assert_allclose(rel[0], rel[1], rtol=1e-6)  # identical relative errors


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"fn of saturate must be one of tanh, arctan, softsign"):
        fl.saturate(_model(), "relu")
    big = nn.Linear(2, 2)
    with torch.no_grad():
        big.weight.fill_(1.5)
    with pytest.raises(ValueError, match=r"model of saturate must be weights inside \(-1, 1\) "
                                         r"for tanh, got .max \|w\| 1.5 in ''"):
        fl.saturate(big, "tanh")
    with pytest.raises(ValueError, match=r"model of scale_weights must be a model with float "
                                         r"weights .*got \"parameter '0.weight' of dtype int8\""):
        fl.scale_weights(fl.quantize_int8(nn.Sequential(nn.Linear(2, 2))), 4.0)
    with pytest.raises(ValueError, match=r"c of scale_weights must be"):
        fl.scale_weights(_model(), 0.0)
    with torch.no_grad():
        eff = fl.saturate(_model(), "arctan").fc.effective_weight().abs().max()
        assert math.isclose(float(eff), float(_model().fc.weight.abs().max()), rel_tol=1e-5)
