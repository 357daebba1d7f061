"""Parameter-matched classical controls: counts, shapes, exactness against plain torch layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import quantum as q
from hwlab.errors import HwlabError


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (1, 8, 8)])
@pytest.mark.parametrize("level", [1, 2])
def test_creep_controls_match_every_quantum_layer_within_one_percent(in_shape, level):
    torch.manual_seed(0)
    hybrid = q.creep_model(in_shape, level=level)
    matched = q.control(hybrid)
    counts = q.parameter_counts(hybrid, matched)
    assert len(counts) == level + 1  # two convs, then also the linear layer
    for name, (nq, nc) in counts.items():
        assert abs(nc - nq) <= 0.01 * nq, (name, nq, nc)
        assert not any("Quantum" in type(m).__name__ for m in matched.modules())
    x = torch.rand(4, *in_shape)
    assert matched(x).shape == hybrid(x).shape == (4, 10)
    assert _n(matched) == _n(hybrid)  # every layer exact here
    # the classical layers the hybrid kept are copied, not re-drawn (same recipe, same start)
    if level == 1:
        assert torch.equal(matched[4].weight, hybrid[4].weight)


def test_control_of_a_model_written_here_keeps_shapes_and_counts():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
            self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7))

        def forward(self, x):
            return self.head(self.conv(x))

    torch.manual_seed(1)
    net = Net()
    hybrid = q.swap(net, layers=["conv", "head.2"], reps=2)
    matched = q.control(hybrid)
    x = torch.rand(2, 3, 8, 8)
    assert matched(x).shape == hybrid(x).shape == net(x).shape == (2, 7)
    counts = q.parameter_counts(hybrid, matched)
    assert counts["conv"] == (5 * 3 * 15 + 5,) * 2
    nq, nc = counts["head.2"]  # 80 -> 7 on 4 qubits, 2 reps: 2 * 255 + 7 = 517
    assert nq == 517 and abs(nc - nq) <= 0.01 * nq
    assert type(hybrid.conv).__name__ == "QuantumConv2d"  # the hybrid itself is untouched


def test_control_conv_is_a_plain_convolution_that_reaches_any_kernel():
    torch.manual_seed(2)
    layer = q.ControlConv2d(2, 3, 3, stride=2, padding=1).double()
    basis = layer.basis  # 15 x 9 with orthonormal columns
    assert basis.shape == (15, 9)
    assert torch.allclose(basis.T @ basis, torch.eye(9, dtype=basis.dtype), atol=1e-6)
    ref = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    with torch.no_grad():  # any kernel: theta = W P^T
        layer.theta.copy_(ref.weight.reshape(3, 2, 9) @ basis.T.double())
        layer.bias.copy_(ref.bias)
    x = torch.rand(2, 2, 7, 6, dtype=torch.float64)
    assert (layer(x) - ref(x)).abs().max().item() < 1e-6
    assert ref(x).abs().max().item() > 0.05
    # initialised like nn.Conv2d: every entry inside U(-1/sqrt(fan_in), +)
    fresh = q.ControlConv2d(4, 6, 3)
    assert fresh.kernel().abs().max().item() <= 1 / 6 + 1e-6
    # kernel 2 (one qubit, 3 coordinates < 4 entries): a 3-dimensional subspace of kernels
    small = q.ControlConv2d(1, 1, 2)
    assert small.theta.shape == (1, 1, 3) and small.kernel().shape == (1, 1, 2, 2)


def test_control_linear_equals_an_explicit_masked_mlp():
    torch.manual_seed(3)
    layer = q.ControlLinear(6, 3, n_params=40).double()
    # 40 - 3 bias = 37 = 3 full units (10 each) + a partial unit: j = 7 - 3 - 1 = 3 inputs
    assert _n(layer) == 40 and layer.hidden == 4 and layer.partial == 3
    w1 = torch.zeros(4, 6, dtype=torch.float64)
    w1[:3] = layer.w1.detach()
    w1[3, :3] = layer.w1_partial.detach()
    x = torch.randn(5, 6, dtype=torch.float64)
    ref = torch.tanh(x @ w1.T + layer.b1.detach()) @ layer.w2.detach().T + layer.bias.detach()
    assert (layer(x) - ref).abs().max().item() < 1e-12
    assert layer(x.reshape(5, 1, 6)).shape == (5, 1, 3)
    # a remainder too small for a partial unit leaves at most out + 1 parameters out
    short = q.ControlLinear(6, 3, n_params=3 + 10 * 2 + 4)
    assert short.partial == 0 and _n(short) == 23
    loss = F.cross_entropy(layer(x), torch.tensor([0, 1, 2, 0, 1]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_control_linear_skip_adds_the_plain_linear_map_from_the_same_budget():
    torch.manual_seed(4)
    hybrid = q.creep_model((1, 8, 8), level=2)
    matched = q.control(hybrid, linear="skip")
    nq, nc = q.parameter_counts(hybrid, matched)["4"]
    assert nq == nc == 2560  # 1,290 for W0 x + b, the rest 9 full hidden units and one of 8 inputs
    layer = matched[4].double()
    assert layer.skip.shape == (10, 128) and layer.hidden == 10 and layer.partial == 8
    x = torch.randn(3, 128, dtype=torch.float64)
    w1 = torch.zeros(10, 128, dtype=torch.float64)
    w1[:9], w1[9, :8] = layer.w1.detach(), layer.w1_partial.detach()
    ref = (torch.tanh(x @ w1.T + layer.b1.detach()) @ layer.w2.detach().T
           + layer.bias.detach() + x @ layer.skip.detach().T)
    assert (layer(x) - ref).abs().max().item() < 1e-12
    small = q.QuantumLinear(32, 4, reps=2)  # 2 * 63 + 4 = 130 < 32 * 4 + 4 + 6: MLP alone
    assert q.control_layer(small, "skip").skip is None
    assert sum(p.numel() for p in q.control_layer(small, "skip").parameters()) == 130
    with pytest.raises(HwlabError, match=r"linear of control must be one of mlp, skip"):
        q.control(hybrid, linear="wide")
    with pytest.raises(HwlabError, match=r"n_params of ControlLinear must be .*>= 142"):
        q.ControlLinear(12, 10, n_params=140, skip=True)  # W0 120 + b 10 + one 12-unit


def test_control_errors():
    with pytest.raises(TypeError, match="layer of control_layer must be a QuantumConv2d or "
                                        "QuantumLinear, got Linear"):
        q.control_layer(nn.Linear(3, 2))
    with pytest.raises(HwlabError, match=r"n_params of ControlLinear must be .*>= 8.*got 5"):
        q.ControlLinear(6, 3, n_params=5)
    with pytest.raises(HwlabError, match="model of control must be an nn.Module, got 'str'"):
        q.control("net")
    with pytest.raises(HwlabError, match=r"x of ControlConv2d must be a B x 2 x H x W tensor"):
        q.ControlConv2d(2, 3)(torch.rand(1, 3, 5, 5))
