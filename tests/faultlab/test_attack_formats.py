"""The progressive bit search on ``faultlab.quantize`` int8 / int4 / mxint8 element codes: the
per-bit gain against the format's own decode, the first step against a brute-force reference,
a monotone loss, exact replay over the uint8 words and the random baseline on the same words."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from faultlab._attack_formats import byte_gains

FORMATS = ("int8", "int4", "mxint8")


class _Net(nn.Module):  # written here: a conv, a residual add, a linear with 35 inputs (int4:
    def __init__(self):  # odd element counts leave a padding nibble; mxint8: a short block)
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(35, 3)

    def forward(self, x):
        h = F.relu(self.conv(x)) + x
        return self.fc(h.mean(1).reshape(len(x), -1)[:, :35])


def _model(fmt):
    torch.manual_seed(0)
    return fl.quantize(_Net().eval(), fmt)


def _data(n=64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 6, 6, generator=g)


def _loss(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def _float_grad(model, name, x, y):
    """dL/dW of layer ``name``'s decoded weight (autograd on a float copy, not the attack's)."""
    layer = model.get_submodule(name)
    w = layer.dequantized(torch.float32).detach().requires_grad_(True)
    mod = copy.deepcopy(layer)
    mod.dequantized = lambda dtype: w.to(dtype)
    swapped = copy.copy(model)
    swapped._modules = dict(model._modules, **{name: mod})
    g, = torch.autograd.grad(F.cross_entropy(swapped(x), y), w)
    return g


@pytest.mark.parametrize("fmt", FORMATS)
def test_byte_gains_equal_the_decoded_change_of_every_flip(fmt):
    """g . (W after the flip - W before), with W decoded by the format itself, for every bit of
    every stored byte of both layers (padding nibbles: no change, no gain)."""
    q = _model(fmt)
    for name in ("conv", "fc"):
        layer = q.get_submodule(name)
        g = torch.randn(layer.dequantized().shape, generator=torch.Generator().manual_seed(2))
        gains = byte_gains(layer, g)
        w0 = layer.dequantized()
        words = layer.weight.view(-1)
        expect = torch.zeros_like(gains)
        with torch.no_grad():
            for j in range(words.numel()):
                for b in range(8):
                    words[j] ^= 1 << b
                    expect[j, b] = (g * (layer.dequantized() - w0)).sum()
                    words[j] ^= 1 << b
        torch.testing.assert_close(gains, expect, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fmt", FORMATS)
def test_first_step_is_the_brute_force_best_first_order_flip(fmt):
    q = _model(fmt)
    x = _data()
    with torch.no_grad():
        y = q(x).argmax(1)
    res = fl.bit_flip_attack(q, (x, y), flips=1, attack_size=64, target_accuracy=0.0)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    xa, ya = x[perm], y[perm]
    losses = {}
    for name in ("conv", "fc"):
        g = _float_grad(q, name, xa, ya)
        layer = q.get_submodule(name)
        w0 = layer.dequantized()
        words = layer.weight.view(-1)
        best, where = 0.0, None
        with torch.no_grad():
            for j in range(words.numel()):
                for b in range(8):
                    words[j] ^= 1 << b
                    gain = float((g * (layer.dequantized() - w0)).sum())
                    words[j] ^= 1 << b
                    if gain > best:
                        best, where = gain, (j, b)
            words[where[0]] ^= 1 << where[1]
            losses[name] = _loss(q, xa, ya)
            words[where[0]] ^= 1 << where[1]
    assert res.history.loss.iloc[0] == pytest.approx(max(losses.values()), rel=1e-5)
    assert res.history.layer.iloc[0] == max(losses, key=losses.get)


@pytest.mark.parametrize("fmt", FORMATS)
def test_attack_raises_the_loss_every_step_and_replays_over_the_uint8_words(fmt):
    q = _model(fmt)
    x = _data(96)
    before = {n: p.detach().clone() for n, p in q.named_parameters()}
    res = fl.bit_flip_attack(q, (x, torch.zeros(96, dtype=torch.long)), flips=8,
                             target_accuracy=0.0, attack_size=96)
    assert len(res.history) > 0 and (np.diff(res.history.loss.to_numpy()) > 0).all()
    assert all(torch.equal(p, before[n]) for n, p in q.named_parameters())
    assert {res.fmap.names[p] for p in res.fmap.param} <= {"conv.weight", "fc.weight"}
    assert {res.fmap.dtypes[p] for p in res.fmap.param} == {"uint8"}
    assert res.fmap.eligible_bits == 8 * (q.conv.weight.numel() + q.fc.weight.numel())
    perm = torch.randperm(96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = q(x[perm]).argmax(1)
    with fl.inject(q, res.fmap):
        assert _loss(q, x[perm], y) == pytest.approx(res.history.loss.iloc[-1], rel=1e-5)
    if fmt == "int4":  # the padding nibble of fc (105 codes in 53 bytes) is never chosen
        last = q.fc.weight.numel() - 1
        pf = res.fmap.names.index("fc.weight")
        assert not ((res.fmap.param == pf) & (res.fmap.index == last) & (res.fmap.bit >= 4)).any()
    base = fl.random_flips(q, 20, seed=1)  # the baseline draws from the same words
    assert len(base) == 20 and {base.names[p] for p in base.param} <= {"conv.weight", "fc.weight"}
    assert fl.random_flips(q, 20, seed=1) == base


def test_bit_uniform_baseline_draws_element_codes_only():
    """mode="bit" on mxint8: 400 flips over the element codes, none in a block's scale byte
    (the scales are not attacked, so the baseline must not hit them either)."""
    q = _model("mxint8")
    assert {n for n, _ in q.named_parameters()} >= {"conv.weight_scale", "fc.weight_scale"}
    m = fl.random_flips(q, 400, seed=2, mode="bit")
    assert len(m) == 400 and {m.names[p] for p in m.param} == {"conv.weight", "fc.weight"}
    assert m.eligible_bits == 8 * (q.conv.weight.numel() + q.fc.weight.numel())


def test_formats_without_integer_codes_and_radar_are_refused():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"model of bit_flip_attack must be a model with integer "
                                         r"weight codes \(faultlab.quantize_int8\(model\) or "
                                         r"faultlab.quantize\(model, 'int8' \| 'int4' \| "
                                         r"'mxint8'\)\), got 'Sequential'"):
        fl.bit_flip_attack(fl.quantize(nn.Sequential(nn.Linear(4, 2)), "mxfp8_e4m3"),
                           (torch.zeros(4, 4), torch.zeros(4).long()))
    with pytest.raises(ValueError, match=r"model of radar must be a model with "
                                         r"faultlab.quantize_int8 layers"):
        fl.radar(_model("int4"))
