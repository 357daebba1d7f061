"""quantize_int8: schemes (symmetric / asymmetric unsigned), granularity, rounding, any model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl


def _linear(weight):
    m = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(weight, dtype=torch.float32))
    return m


W = [[0.5, -0.25, 0.1, 0.0], [2.0, 1.0, 1.5, 1.2]]  # row 1 is all positive (asymmetric helps)


def test_symmetric_default_is_unchanged_formula():
    q = fl.quantize_int8(_linear(W))
    amax = 2.0
    expected = np.clip(np.round(np.array(W, dtype=np.float32) / np.float32(amax / 127)), -127, 127)
    assert q.weight.dtype == torch.int8 and q.scale.shape == ()
    assert np.array_equal(q.weight.numpy(), expected.astype(np.int8))
    assert not hasattr(q, "offset") and set(q.state_dict()) == {"weight", "scale"}


def test_asymmetric_unsigned_words_exact():
    q = fl.quantize_int8(_linear(W), scheme="asymmetric")
    lo, hi = -0.25, 2.0
    scale, mid = np.float32((hi - lo) / 254), np.float32((hi + lo) / 2)
    u = np.clip(np.round((np.array(W, np.float32) - mid) / scale) + 127, 0, 254).astype(np.uint8)
    assert np.array_equal(q.weight.numpy().view(np.uint8), u)
    assert int(q.weight.numpy().view(np.uint8).min()) == 0  # min maps to 0, max to 254
    assert int(q.weight.numpy().view(np.uint8).max()) == 254
    deq = q.dequantized(torch.float32)
    assert float((deq - torch.tensor(W)).abs().max()) <= float(scale) / 2 + 1e-7
    # A flip of bit 7 of an unsigned word moves the weight by exactly 128 steps.
    with fl.inject(q, fl.FaultMap(("weight",), ("int8",), np.zeros(1, np.int32),
                                  np.array([0]), np.array([7], np.uint8), np.zeros(1, np.int8))):
        moved = float(q.dequantized(torch.float32)[0, 0] - deq[0, 0])
    assert moved == pytest.approx(128 * float(scale), rel=1e-5)  # 0.5 < mid: u < 128, bit 7 set


def test_per_channel_scale_and_floor():
    q = fl.quantize_int8(_linear(W), granularity="channel")
    assert q.scale.shape == (2, 1)
    assert q.scale[0, 0].item() == pytest.approx(0.5 / 127) and q.scale[1, 0].item() == \
        pytest.approx(2.0 / 127)
    assert int(q.weight[0].abs().max()) == 127 and int(q.weight[1].abs().max()) == 127
    fl_ = fl.quantize_int8(_linear(W), rounding="floor")
    x = np.array(W, np.float32) / np.float32(2.0 / 127)
    assert np.array_equal(fl_.weight.numpy(), np.clip(np.floor(x), -127, 127).astype(np.int8))
    conv = nn.Conv2d(3, 4, 3, padding=1)
    qc = fl.quantize_int8(conv, scheme="asymmetric", granularity="channel")
    assert qc.scale.shape == (4, 1, 1, 1) and qc.offset.shape == (4, 1, 1, 1)
    xin = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((qc(xin) - conv(xin)).abs().max()) < 0.05


def test_float64_model_is_an_error_and_input_untouched():
    m = nn.Sequential(nn.Linear(4, 3)).double()
    before = m[0].weight.detach().clone()
    with pytest.raises(ValueError, match=r"model of quantize_int8 must be a model whose "
                       r"floating-point parameters .* got '0.weight of dtype float64'"):
        fl.quantize_int8(m)
    assert torch.equal(m[0].weight, before)
    with pytest.raises(ValueError, match=r"scheme of quantize_int8 must be one of symmetric, "
                       r"asymmetric, got 'unsigned'"):
        fl.quantize_int8(nn.Linear(2, 2), scheme="unsigned")
    with pytest.raises(ValueError, match=r"rounding of quantize_int8 must be one of nearest, floor"):
        fl.quantize_int8(nn.Linear(2, 2), rounding="up")
    with pytest.raises(ValueError, match=r"granularity of quantize_int8 must be one of tensor"):
        fl.quantize_int8(nn.Linear(2, 2), granularity="row")


class _Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + x)  # residual add


class _UserNet(nn.Module):
    """Not in the zoo: residual block, F.relu, x.relu(), a Linear used twice, BatchNorm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.blocks = nn.ModuleList([_Block(4), _Block(4)])
        self.shared = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for b in self.blocks:
            x = b(x)
        x = F.adaptive_avg_pool2d(x, 2).flatten(1)
        x = self.shared(x).relu()
        x = F.relu(self.shared(x))  # the same layer twice
        return self.head(x)


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_any_model_residual_shared_layer(scheme):
    torch.manual_seed(0)
    net = _UserNet().eval()
    q = fl.quantize_int8(net, scheme=scheme, granularity="channel")
    kinds = {n: type(m).__name__ for n, m in q.named_modules()}
    assert kinds["stem"] == "Int8Conv2d" and kinds["blocks.0.conv"] == "Int8Conv2d"
    assert kinds["blocks.1.conv"] == "Int8Conv2d" and kinds["shared"] == "Int8Linear"
    assert kinds["blocks.0.bn"] == "BatchNorm2d"
    assert isinstance(net.shared, nn.Linear)  # input untouched
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = float((q(x) - net(x)).abs().max())
    assert err < 0.02 * float(net(x).detach().abs().max()) + 1e-3
    names = [n for n, _ in fl.eligible_parameters(q)]
    assert names == ["stem.weight", "blocks.0.conv.weight", "blocks.1.conv.weight",
                     "shared.weight", "head.weight"]
    before = {n: p.detach().clone() for n, p in q.named_parameters()}
    with fl.inject(q, fl.BitFlip(rate=0.05), seed=3) as fmap:
        assert len(fmap) > 0
        with torch.no_grad():
            q(x)
    assert all(torch.equal(p, before[n]) for n, p in q.named_parameters())


def test_shared_layer_stays_shared():
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    q = fl.quantize_int8(net)
    assert q[0] is q[2] and len(list(q.parameters())) == 2  # one weight, one bias


def test_int8_layers_are_graph_leaves_that_rewrites_keep():
    """hwlab.graph keeps an int8 layer one opaque call (as the docs promise): a clipped int8
    model still holds Int8Conv2d / Int8Linear modules, not an inlined dequantisation."""
    import hwlab.graph as hg
    from faultlab import clipact
    from faultlab._quant import Int8Conv2d, Int8Linear

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(2 * 4 * 4, 3)).eval()
    q = fl.quantize_int8(m)
    calls = [n.target for n in hg.trace(q).module.graph.nodes if n.op == "call_module"]
    assert calls == ["0", "1", "2", "3"]
    clipped = clipact.clip(q, {"1": 1.0})
    kinds = {n: type(mod) for n, mod in clipped.named_modules()}
    assert kinds["0"] is Int8Conv2d and kinds["3"] is Int8Linear
    x = torch.rand(4, 1, 6, 6)
    with torch.no_grad():  # the same function as clipping the dequantised activations by hand
        ref = q[3](torch.flatten(torch.clamp(q[0](x), 0, 1.0) * (q[0](x) <= 1.0), 1))
        assert torch.allclose(clipped(x), ref, atol=1e-6)
