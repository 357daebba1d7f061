"""ProAct / HyReLU: the activation's shape, the parameter count and the acceptance rule, on a
residual model written here; the checks of shared/papers/newer-defences.md."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from faultlab.clipact import HyReLU, proact
from hwlab.train import TrainConfig, evaluate, fit


def test_hyrelu_passes_below_and_zeroes_above_with_a_gradient_at_the_threshold():
    act = HyReLU(torch.tensor(2.0))
    x = torch.linspace(-3, 6, 901)
    y = act(x)
    low, high = x <= 2.0 - 0.7, x >= 2.0 + 0.5
    assert torch.allclose(y[low & (x > 0)], x[low & (x > 0)], rtol=1e-6, atol=0)
    assert (y[x <= 0] == 0).all()
    assert (y[high] < 1e-4 * x[high]).all()
    near = torch.tensor([1.9, 2.0, 2.1])
    act(near).sum().backward()
    assert act.threshold.grad.abs() > 0.1


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc1, self.fc2 = nn.Linear(8 * 4 * 4, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(h + self.bn(self.conv(h)))  # residual
        h = F.max_pool2d(h, 2).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


@pytest.fixture(scope="module")
def trained(digits):
    train, test = digits
    torch.manual_seed(0)
    net = _Net()
    fit(net, train, TrainConfig(epochs=6, batch_size=64, lr=3e-3, seed=0))
    return net.eval(), train, test


def test_proact_keeps_weights_and_clean_accuracy_and_stores_few_thresholds(trained):
    net, train, test = trained
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    val = train.subset(300)
    prot = proact(net, train.subset(600), val, epochs=2, weight_decays=(4e-5, 4e-6))
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())  # input untouched
    weights = {n: p for n, p in prot.named_parameters() if not n.endswith("threshold")}
    assert all(torch.equal(p, before[n]) for n, p in weights.items())  # bit for bit
    hy = [m for m in prot.modules() if isinstance(m, HyReLU)]
    assert [tuple(m.threshold.shape) for m in hy] == [(), (), (32,)]  # last: neuron-wise
    thresholds = sum(m.threshold.numel() for m in hy)
    assert thresholds == (3 - 1) + 32  # (sites - 1) scalars + the last site's neurons
    assert evaluate(prot, val) >= evaluate(net, val) - 0.002  # the acceptance rule
    profiled = fl.clipact.profile(net, train.subset(600))
    for m in hy:  # near the profiled maxima: at most the sigmoid's width 5 / k above them (the
        # distillation raises a threshold that halves the largest activations; measured +0.06)
        assert float(m.threshold.max()) <= profiled[m.site] + 5 / m.k
    # the thresholds are weights in memory: a fault map over the protected model reaches them
    fmap = fl.sample_faults(prot, fl.BitFlip(count=500), seed=0)
    assert any(fmap.names[i].endswith("threshold") for i in set(fmap.param.tolist()))
    # and they bound what a fault produces: an exponent flip of fc1 no longer explodes
    big = fl.sample_faults(net, fl.BitFlip(count=3, bits=(30,)), layers=["fc1"], seed=4)
    with torch.no_grad(), fl.inject(net, big), fl.inject(prot, big):
        x = test.x[:64]
        assert prot(x).abs().max() < net(x).abs().max()
