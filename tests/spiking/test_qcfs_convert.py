"""QCFS activation values and gradients; conversion to an integrate-and-fire SNN."""

from __future__ import annotations

import copy

import pytest
import snntorch as snn
import torch
from torch import nn

import spiking as sp


def test_qcfs_values_are_clip_floor_shift():
    q = sp.QCFS(levels=4, scale=2.0)
    x = torch.tensor([-1.0, 0.0, 0.24, 0.26, 1.0, 1.3, 3.0])
    # lambda * clip(floor(x * 4 / 2 + 0.5) / 4, 0, 1)
    assert q(x).tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0]


def test_qcfs_straight_through_gradient_and_scale_gradient():
    q = sp.QCFS(levels=4, scale=2.0)
    x = torch.tensor([-1.0, 0.3, 0.9, 5.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # identity inside the clip range, else 0
    assert q.scale.grad is not None and q.scale.grad.item() != 0.0


@pytest.mark.parametrize("kw, msg", [
    ({"levels": 0}, "levels of QCFS must be an integer >= 1, got 0"),
    ({"scale": -1.0}, "scale of QCFS must be a number > 0, got -1.0"),
])
def test_qcfs_rejects_bad_parameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        sp.QCFS(**kw)


def test_qcfs_net_rejects_unknown_arch():
    with pytest.raises(ValueError, match="arch of qcfs_net must be one of mlp, lenet, got 'vgg'"):
        sp.qcfs_net("vgg")


def test_convert_builds_integrate_and_fire_neurons_with_learned_thresholds(converted):
    ann, net = converted
    scales = [m.scale.item() for m in ann if isinstance(m, sp.QCFS)]
    neurons = net.neurons
    assert len(neurons) == len(scales) == 2
    for lif, lam in zip(neurons, scales):
        assert isinstance(lif, snn.Leaky)
        assert float(lif.beta) == 1.0 and lif.reset_mechanism == "subtract"
        assert float(lif.threshold) == pytest.approx(lam, rel=1e-6)
    assert net.mem_init == 0.5 and net.encoding == "direct"


def test_convert_leaves_the_ann_untouched(digits):
    ann = sp.qcfs_net("lenet", digits["train"].in_shape, 10, levels=4)
    before = copy.deepcopy(ann.state_dict())
    structure = repr(ann)
    net = sp.convert(ann)
    with torch.no_grad():  # changing the SNN must not reach the ANN either
        for p in net.parameters():
            p.add_(1.0)
    after = ann.state_dict()
    assert repr(ann) == structure
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_membrane_starts_at_half_threshold():
    ann = nn.Sequential(nn.Linear(3, 4), sp.QCFS(4, 1.6), nn.Linear(4, 2))
    nn.init.zeros_(ann[0].weight), nn.init.zeros_(ann[0].bias)
    net = sp.convert(ann)
    _, state = net.step(torch.zeros(5, 3), net.initial_state())
    assert torch.allclose(state[0], torch.full((5, 4), 0.8))


def test_one_hidden_layer_snn_equals_the_ann_after_L_steps():
    # IF with U0 = theta/2 and reset by subtraction fires floor(T*I/theta + 1/2) times in T steps
    # (capped at T): with T = L that is exactly QCFS, so the mean output equals the ANN's.
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(5, 7), sp.QCFS(4, 1.5), nn.Linear(7, 3))
    x = torch.rand(64, 5)
    net = sp.convert(ann)
    out = net(x, 4)  # N x T x C
    assert out.shape == (64, 4, 3)
    assert torch.allclose(out.mean(dim=1), ann(x), atol=1e-5)
    assert not torch.allclose(net(x, 3).mean(dim=1), ann(x), atol=1e-2)  # fewer steps: not yet


def test_convert_rejects_what_it_cannot_convert():
    with pytest.raises(ValueError, match="layers of convert must be one of QCFS, Linear.*got 'ReLU at module 1'"):
        sp.convert(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), sp.QCFS(), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="ann of convert must be a network with at least one QCFS"):
        sp.convert(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="ann of convert must be a network with at least one QCFS"):
        sp.convert(nn.Linear(2, 2))  # any module is traced; a single layer has no QCFS site
    with pytest.raises(ValueError, match="layers of convert must be one of QCFS, Linear.*got 'MaxPool2d at module 2'"):
        sp.convert(nn.Sequential(nn.Conv2d(1, 2, 3), sp.QCFS(), nn.MaxPool2d(2)))


def test_with_qcfs_swaps_relu_and_maxpool_in_a_copy():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    new = sp.with_qcfs(model, levels=8)
    assert isinstance(model[1], nn.ReLU) and isinstance(model[2], nn.MaxPool2d)
    assert isinstance(new[1], sp.QCFS) and new[1].levels == 8
    assert isinstance(new[2], nn.AvgPool2d) and isinstance(new[4][1], sp.QCFS)
    assert torch.equal(new[0].weight, model[0].weight)
    assert len(sp.convert(new).neurons) == 2  # nested Sequentials are flattened
