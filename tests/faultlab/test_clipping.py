"""Weight clipping during training (Stutz w_max): range, which tensors, any Task, robustness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from faultlab._clipping import ClippedTask, clip_weights
from hwlab.train import ClassificationTask, TrainConfig, evaluate, fit


class _Net(nn.Module):
    """Not in the zoo: a conv with BatchNorm, F.relu, a residual add, x.relu()."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        h = (h + self.conv2(h)).relu()
        return self.fc(h.flatten(1))


def _net():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _Net()
    with torch.no_grad():
        net.bn.weight.fill_(1.5)  # a norm scale above w_max: must not be clipped
        net.conv.bias.fill_(0.4)
    return net


def test_clip_weights_exact_counts_and_scope():
    net = _net()
    w = net.conv.weight.detach().clone()
    outside = sum(int((p.detach().abs() > 0.1).sum())
                  for p in (net.conv.weight, net.conv2.weight, net.fc.weight))
    assert clip_weights(net, 0.1) == outside > 0
    assert torch.equal(net.conv.weight, w.clamp(-0.1, 0.1))
    assert float(net.bn.weight.detach()[0]) == 1.5 and float(net.conv.bias.detach()[0]) == pytest.approx(0.4)
    assert clip_weights(net, 0.1) == 0  # idempotent
    assert clip_weights(net, 0.1, include_bias=True) == 4  # the four conv biases at 0.4
    q = fl.quantize_int8(_net())
    assert clip_weights(q, 0.1) == 0  # int8 words are not float weights: left alone
    with pytest.raises(ValueError, match=r"w_max of clip_weights must be a finite number > 0, "
                       r"got 0"):
        clip_weights(net, 0)
    with pytest.raises(ValueError, match=r"w_max of ClippedTask must be a finite number > 0"):
        ClippedTask(net, float("inf"))


def test_clipped_task_clips_before_first_forward_and_after_last_step(digits):
    train, _ = digits
    net = _net()
    seen = []

    class Spy(ClassificationTask):
        def backward(self, x, y):
            seen.append(float(self.model.fc.weight.detach().abs().max()))
            return super().backward(x, y)

    task = ClippedTask(Spy(net), w_max=0.05)
    fit(task, train, TrainConfig(epochs=2, batch_size=128, lr=1e-2, device="cpu"))
    assert max(seen) <= np.float32(0.05) and len(seen) == 2 * int(np.ceil(len(train) / 128))
    for p in (net.conv.weight, net.conv2.weight, net.fc.weight):
        assert float(p.detach().abs().max()) <= np.float32(0.05)
    assert float(net.bn.weight.detach().abs().max()) > 0.05  # BatchNorm scale free to move
    assert task.last_clipped > 0  # the optimiser kept pushing weights out; they were clipped


def test_clipping_alone_improves_int8_robustness(digits):
    """Small seeded check: lenet5 on digits, 40 epochs; w_max = 0.15 vs plain, int8, BER 5 %,
    10 fresh maps (measured: plain 96.6 % clean / 29.2 %, clipped 97.8 % / 81.2 %; w_max = 0.1
    costs this 8x8 model 10 points of clean accuracy, 86.6 %)."""
    from hwlab.models import create_model

    train, test = digits
    cfg = TrainConfig(epochs=40, batch_size=64, lr=3e-3, device="cpu")

    def lenet():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return create_model("lenet5", in_shape=train.in_shape, num_classes=10)

    plain, clipped = lenet(), lenet()
    fit(plain, train, cfg)
    fit(ClippedTask(clipped, 0.15), train, cfg)
    accs = {}
    for name, m in (("plain", plain), ("clipped", clipped)):
        q = fl.quantize_int8(m.eval())
        runs = []
        for t in range(10):
            with fl.inject(q, fl.BitFlip(rate=0.05), seed=20_000 + t):
                runs.append(evaluate(q, test))
        accs[name] = (evaluate(q, test), float(np.mean(runs)))
    assert accs["clipped"][0] >= accs["plain"][0] - 0.015, accs
    assert accs["clipped"][1] >= accs["plain"][1] + 0.3, accs
