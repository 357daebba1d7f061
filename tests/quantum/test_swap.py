"""swap / creep_model: shapes, input untouched, orders, errors; a short training keeps gates unitary."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import quantum as q
from hwlab.data import load
from hwlab.train import TrainConfig, evaluate, fit


def _snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("in_shape,features,qubits", [((1, 28, 28), 800, 5), ((1, 8, 8), 128, 4)])
def test_creep_model_levels_keep_shapes_and_leave_input_untouched(in_shape, features, qubits):
    torch.manual_seed(0)
    base = q.creep_model(in_shape)
    assert [type(m).__name__ for m in base] == ["Preprocess", "Conv2d", "Conv2d", "Flatten",
                                                "Linear"]
    assert base[4].in_features == features
    before = _snapshot(base)
    x = torch.rand(3, *in_shape)
    y0 = base(x)
    kinds = {1: (q.QuantumConv2d, q.QuantumConv2d, nn.Linear),
             2: (q.QuantumConv2d, q.QuantumConv2d, q.QuantumLinear)}
    for level in (0, 1, 2):
        new = q.swap(base, level)
        assert new is not base and new(x).shape == y0.shape == (3, 10)
        if level:
            assert tuple(type(new[i]) for i in (1, 2, 4)) == kinds[level]
    assert new[4].n_qubits == qubits and new[4].reps == 10
    # the input model: same modules, bit-identical parameters, same outputs
    assert [type(m).__name__ for m in base][1:3] == ["Conv2d", "Conv2d"]
    after = base.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(base(x), y0)


def test_swap_copies_untouched_layers_and_keeps_existing_quantum_layers():
    torch.manual_seed(1)
    base = q.creep_model((1, 8, 8))
    lvl1 = q.swap(base, 1)
    assert torch.equal(lvl1[4].weight, base[4].weight)  # the classical linear layer is copied
    lvl2 = q.swap(lvl1, 2)
    assert torch.equal(lvl2[1].theta, lvl1[1].theta)  # already quantum: kept, not re-drawn
    assert lvl2[1].theta is not lvl1[1].theta
    assert isinstance(lvl1[4], nn.Linear)


def test_swap_layer_order_is_finer():
    base = q.creep_model((1, 8, 8))
    assert q.swappable_layers(base) == [["1", "2"], ["4"]]
    assert q.swappable_layers(base, "layer") == [["1"], ["2"], ["4"]]
    assert q.max_level(base, "layer") == 3
    one = q.swap(base, 1, order="layer")
    assert isinstance(one[1], q.QuantumConv2d) and isinstance(one[2], nn.Conv2d)
    assert one(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_swap_nested_and_padded_convs_keep_shapes():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU()),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    x = torch.rand(2, 3, 8, 8)
    new = q.swap(model, 2, reps=2)
    assert isinstance(new[0][0], q.QuantumConv2d) and new[0][0].stride == (2, 2)
    assert new(x).shape == model(x).shape == (2, 5)
    assert q.quantum_parameters(new) == ["0.0.theta", "2.theta"]
    assert q.classical_parameters(model) == ["0.0.weight", "2.weight"]


def test_swap_errors():
    base = q.creep_model((1, 8, 8))
    with pytest.raises(ValueError, match=r"level of swap must be an integer in \[0, 2\], got 3"):
        q.swap(base, 3)
    with pytest.raises(ValueError, match="order of swap must be one of paper, layer, got 'x'"):
        q.swap(base, 1, order="x")
    with pytest.raises(ValueError, match="model of swap must be an nn.Module, got 'str'"):
        q.swap("model", 1)
    dilated = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2))
    with pytest.raises(ValueError, match="layer '0' of swap must be a Conv2d with a square kernel"):
        q.swap(dilated, 1)
    with pytest.raises(ValueError, match=r"in_shape of creep_model must be at least 5x5 pixels"):
        q.creep_model((1, 4, 4))
    with pytest.raises(ValueError, match=r"channels of creep_model must be a pair of positive"):
        q.creep_model((1, 8, 8), channels=(4,))


def test_training_level2_learns_and_keeps_gates_unitary():
    """A few seeded epochs through hwlab.train.fit: real parameters stay real, gates unitary."""
    train = load("digits", "train").subset(300)
    test = load("digits", "test")
    torch.manual_seed(0)
    model = q.creep_model(train.in_shape, channels=(4, 4), level=2, reps=2)
    thetas = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("theta")}
    fit(model, train, TrainConfig(epochs=4, batch_size=25, lr=5e-2, schedule="none", seed=0))
    acc = evaluate(model, test)
    assert acc > 0.5  # chance is 0.1; 0.715 measured
    for name, p in model.named_parameters():
        if name.endswith("theta"):
            assert p.dtype == torch.float32 and not torch.equal(p.detach(), thetas[name])
    for layer in (model[1], model[2], model[4]):
        u = layer.gate_matrices()
        eye = torch.eye(u.shape[-1], dtype=u.dtype)
        assert (u @ u.conj().transpose(-1, -2) - eye).abs().max().item() < 1e-10
        assert (torch.linalg.det(u) - 1).abs().max().item() < 1e-8  # special unitary


class _Res(nn.Module):
    """Not Sequential: residual add, F.relu, a reused in-place ReLU, BatchNorm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.conv_a = nn.Conv2d(2, 2, 3, padding=1)
        self.conv_b = nn.Conv2d(2, 2, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        x = torch.nn.functional.relu(self.bn(self.stem(x)))
        h = self.act(self.conv_a(x))
        h = self.act(self.conv_b(h) + x)
        return self.fc(h.flatten(1))


def test_swap_by_name_replaces_exactly_the_named_layers_of_a_non_sequential_model():
    torch.manual_seed(1)  # seed 0 leaves every stem ReLU nearly dead at init
    model = _Res().eval()
    before = _snapshot(model)
    x = torch.rand(2, 1, 8, 8)
    new = q.swap(model, layers=["conv_b"])
    kinds = {n: type(m).__name__ for n, m in new.named_modules() if n}
    assert kinds["conv_b"] == "QuantumConv2d"
    assert [n for n, k in kinds.items() if k.startswith("Quantum")] == ["conv_b"]
    for name in ("stem", "conv_a", "fc"):  # every other layer copied bit for bit
        assert torch.equal(new.get_submodule(name).weight, model.get_submodule(name).weight)
    assert new(x).shape == model(x).shape == (2, 3)
    assert not torch.allclose(new(x), model(x))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.conv_b, nn.Conv2d)
    # glob patterns; an already quantum layer is kept as is
    both = q.swap(new, layers=["conv_?", "fc"], reps=2)
    assert q.quantum_parameters(both) == ["conv_a.theta", "conv_b.theta", "fc.theta"]
    assert torch.equal(both.conv_b.theta, new.conv_b.theta)
    assert q.match_layers(model, "conv*") == ["conv_a", "conv_b"]


def test_swap_by_name_errors():
    model = _Res()
    with pytest.raises(ValueError, match=r"layers of swap must be names or glob patterns of "
                       r"swappable layers \(stem, conv_a, conv_b, fc\), got 'bn'"):
        q.swap(model, layers=["conv_a", "bn"])
    with pytest.raises(ValueError, match="layers of swap must be a non-empty list of layer names"):
        q.swap(model, layers=[])
    with pytest.raises(ValueError, match="level and layers of swap must be exactly one of level "
                       "or layers"):
        q.swap(model, 1, layers=["fc"])
    with pytest.raises(ValueError, match="level and layers of swap must be exactly one of"):
        q.swap(model)
