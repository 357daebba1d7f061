"""with_qcfs + convert on models the zoo does not contain: residual adds, torch.cat, F.relu,
x.relu(), an in-place ReLU module called twice, BatchNorm, functional max pooling; never
nn.Sequential. Record, stopping rules and the live runner on top of the graph SNN."""

from __future__ import annotations

import copy

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

import spiking as sp
from hwlab.train import TrainConfig, evaluate, fit


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=True)  # called twice

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + x)  # residual add


class UserNet(nn.Module):
    """stem (F.relu) - residual block - concat with the stem - max pool - x.relu() head."""

    def __init__(self, c: int = 12, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.block = ResBlock(c)
        self.fc1 = nn.Linear(2 * c * 4 * 4, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.stem(x))  # B x c x 8 x 8
        y = torch.cat([self.block(x), x], dim=1)  # B x 2c x 8 x 8
        y = F.max_pool2d(y, 2)  # B x 2c x 4 x 4
        h = self.fc1(torch.flatten(y, 1)).relu()
        return self.fc2(h)


@pytest.fixture(scope="module")
def trained(digits):
    """The user net made QCFS (8 levels) and trained 12 epochs on digits (~4 s)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UserNet()
    ann = sp.with_qcfs(model, levels=8)
    fit(ann, digits["train"], TrainConfig(epochs=12, batch_size=64, lr=3e-3, seed=0))
    return model, ann.eval()


def test_with_qcfs_replaces_every_relu_call_site_and_the_functional_max_pool():
    import hwlab.graph as hg

    model = UserNet()
    before = copy.deepcopy(model.state_dict())
    ann = sp.with_qcfs(model, levels=4)
    sites = hg.trace(ann).sites
    # F.relu, the in-place module called twice (two QCFS, two scales), x.relu()
    assert [s.name for s in hg.trace(model).sites] == ["relu()", "block.act", "block.act@2",
                                                         "relu()@2"]
    assert [s.name for s in sites] == ["relu_fn1", "block.act_call1", "block.act_call2",
                                       "relu_fn2"]
    assert all(s.op == "qcfs" for s in sites)
    qcfs = [m for m in ann.modules() if isinstance(m, sp.QCFS)]
    assert len(qcfs) == 4 and len({id(q.scale) for q in qcfs}) == 4 and qcfs[0].levels == 4
    pools = [n.target for n in ann.graph.nodes if "pool" in getattr(n.target, "__name__", "")]
    assert pools == [F.avg_pool2d]
    # parameter names of the original model are kept; the input model is untouched
    assert set(model.state_dict()) <= set(ann.state_dict())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.ReLU) for m in model.modules())


def test_with_qcfs_keeps_the_class_when_modules_suffice():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.pool = nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)
            self.fc = nn.Linear(2 * 3 * 3, 3)

        def forward(self, x):
            return self.fc(self.pool(self.act(self.conv(x))).flatten(1))

    new = sp.with_qcfs(Plain(), levels=2)
    assert type(new).__name__ == "Plain"
    assert isinstance(new.act, sp.QCFS) and isinstance(new.pool, nn.AvgPool2d)

    class ReadsAgain(nn.Module):  # relu_ writes x, and the add reads the rectified x
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(3, 3), nn.ReLU(inplace=True)

        def forward(self, x):
            x = self.fc(x)
            y = self.act(x)
            return y + x  # == 2 * relu(fc(x)) in the original

    model = ReadsAgain()
    q = sp.with_qcfs(model, levels=2, scale=1.0)
    x = torch.randn(16, 3)
    h = model.fc(x)
    assert torch.equal(q(x), 2 * sp.QCFS(2, 1.0)(h))  # rewired: the add reads the QCFS output


def test_residual_snn_after_64_steps_within_2_points_of_its_qcfs_ann(trained, digits):
    _, ann = trained
    acc_ann = evaluate(ann, digits["test"])
    assert acc_ann >= 0.90  # the QCFS ANN learned digits
    net = sp.convert(ann)
    assert isinstance(net, sp.GraphSpikingNet) and isinstance(net, sp.SpikingNet)
    assert len(net.neurons) == 4 and all(isinstance(n, snn.Leaky) for n in net.neurons)
    scales = sorted(float(m.scale.detach().abs()) for m in ann.modules() if isinstance(m, sp.QCFS))
    assert sorted(float(n.threshold) for n in net.neurons) == pytest.approx(scales, rel=1e-6)
    rec = sp.record(net, digits["test"], steps=64)
    curve = rec.accuracy_curve()
    assert abs(float(curve[63]) - acc_ann) <= 0.02
    assert float(curve[0]) < float(curve[63])  # accuracy builds up over time
    # the live runner on the graph SNN equals the offline rule on the recording
    live = sp.run_live(net, digits["test"].x, "dynamic-confidence", 0.6, steps=64, batch_size=64)
    rec64 = sp.record(net, digits["test"], steps=64, batch_size=64)
    off = sp.apply_rule(rec64, "dynamic-confidence", 0.6)
    assert torch.equal(live.predictions, off.predictions)
    assert torch.equal(live.steps, off.steps) and live.mean_steps < 64


def test_convert_leaves_the_residual_ann_untouched(trained, digits):
    _, ann = trained
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    net = sp.convert(ann)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())
    # membranes start at theta/2, one per QCFS site, with that site's shape
    _, state = net.step(torch.zeros(3, 1, 8, 8), net.initial_state())
    assert [tuple(s.shape) for s in state] == [(3, 12, 8, 8)] * 3 + [(3, 64)]


def test_convert_names_what_it_cannot_convert():
    with pytest.raises(ValueError, match=r"operations of convert must be QCFS activations \(use "
                       r"spiking.with_qcfs first\) or operations linear .*got 'relu\(\)'"):
        sp.convert(UserNet())  # a functional relu left
    with pytest.raises(ValueError, match="ann of convert must be a network with at least one QCFS"):
        sp.convert(nn.Linear(2, 2))

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.q = nn.Linear(3, 3), nn.Linear(3, 3), sp.QCFS()

        def forward(self, x):
            return self.q(self.a(x)) * self.b(x)  # a product of two signals: not linear

    with pytest.raises(ValueError, match=r"operations of convert must be .*got 'mul in the "
                                         r"model itself'"):
        sp.convert(Gated())

    class WithMaxPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 2, 3), sp.QCFS(), nn.MaxPool2d(2))

        def forward(self, x):
            return self.body(x).flatten(1)

    with pytest.raises(ValueError, match=r"layers of convert must be one of QCFS, .*got "
                                         r"'MaxPool2d at module body.2'"):
        sp.convert(WithMaxPool())


class _Shuffle(nn.Module):
    """conv -> QCFS -> ShuffleNet's channel shuffle (integer arithmetic on sizes) -> linear."""

    def __init__(self):
        super().__init__()
        self.conv, self.q, self.fc = nn.Conv2d(1, 4, 3, padding=1), sp.QCFS(4, 1.5), \
            nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = self.q(self.conv(x))
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(x.flatten(1))


def test_channel_shuffle_converts_and_equals_the_ann_after_L_steps():
    torch.manual_seed(0)
    ann = _Shuffle().eval()
    x = torch.rand(32, 1, 4, 4)
    net = sp.convert(ann)
    with torch.no_grad():
        out = net(x, 4)  # L = 4 levels, one QCFS layer: exact after L steps
        assert torch.allclose(out.mean(dim=1), ann(x), atol=1e-5)
        assert not torch.allclose(net(x, 3).mean(dim=1), ann(x), atol=1e-2)
