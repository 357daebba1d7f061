"""Gradient checkpointing as a rule: exact E2E gradients and BN statistics, less memory."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import localtrain as lt
from hwlab.meters import live_memory


class Block(nn.Module):
    """A user's residual block (not from the zoo): conv-BN-ReLU-conv-BN + identity, dropout."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.drop = nn.Dropout(0.2)

    def forward(self, x):
        out = self.drop(F.relu(self.bn1(self.conv1(x))))
        return F.relu(x + self.bn2(self.conv2(out)))


class UserNet(nn.Module):
    """Not an nn.Sequential: localtrain traces it and cuts between the residual blocks."""

    def __init__(self, c: int = 8, blocks: int = 6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.ModuleList(Block(c) for _ in range(blocks))
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.fc(x.mean((2, 3)))


def _batch(n=16, shape=(3, 12, 12), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def _user_model(seed=0):
    torch.manual_seed(seed)
    return UserNet()


def _grads_and_buffers(model):
    return ([p.grad.clone() for p in model.parameters()],
            [b.clone() for b in model.buffers()])


@pytest.mark.parametrize("K", [2, 4])
def test_checkpoint_gradients_and_bn_statistics_equal_plain_backprop(K):
    torch.set_num_threads(1)
    x, y = _batch()
    ref = _user_model()
    net = copy.deepcopy(ref)
    # independent reference: the user's model called directly, ordinary backward
    torch.manual_seed(5)  # dropout masks
    F.cross_entropy(ref(x), y).backward()
    rule = lt.make_rule("checkpoint", net, K=K, sample=x, balance="layers")
    assert len(rule.modules_) == K
    torch.manual_seed(5)
    rule.backward(x, y)
    g_ref, b_ref = _grads_and_buffers(ref)
    g, b = _grads_and_buffers(net)
    for a, c in zip(g_ref, g):
        torch.testing.assert_close(c, a, rtol=0, atol=1e-6)
    for a, c in zip(b_ref, b):  # running stats and num_batches_tracked updated exactly once
        torch.testing.assert_close(c, a, rtol=0, atol=1e-7)
    assert int(net.stem[1].num_batches_tracked) == 1


def test_without_keeping_buffers_bn_would_count_twice():
    # the BN check above can fail: torch.utils.checkpoint recomputes BN in train mode
    from torch.utils.checkpoint import checkpoint

    net = _user_model()
    x, y = _batch()
    h = checkpoint(net.stem, x, use_reentrant=False)
    F.cross_entropy(net.fc(h.mean((2, 3))), y).backward()
    assert int(net.stem[1].num_batches_tracked) == 2


def test_checkpoint_cuts_are_those_of_split_and_save_memory():
    torch.set_num_threads(1)
    x, y = _batch(32)
    model = UserNet()
    for balance in ("layers", "memory"):
        rule = lt.make_rule("checkpoint", copy.deepcopy(model), K=3, sample=x, balance=balance)
        part = lt.partition(model, 3, balance, sample=x)
        assert rule.partition.bounds == part.bounds
    torch.manual_seed(0)
    e2e = lt.make_rule("e2e", copy.deepcopy(model), sample=x)
    ck = lt.make_rule("checkpoint", copy.deepcopy(model), K=3, sample=x, balance="layers")
    peak = {n: live_memory(lambda r=r: r.backward(x, y)).peak_bytes
            for n, r in (("e2e", e2e), ("ck", ck))}
    # every block output of 32 x 8 x 12 x 12 floats the E2E graph keeps is 18 KiB; checkpointing
    # keeps the 2 segment inputs and one segment's activations
    assert peak["ck"] < 0.75 * peak["e2e"], peak
    m = {n: lt.measure_step(r, x, y, repeats=0) for n, r in (("e2e", e2e), ("ck", ck))}
    assert m["ck"]["live_memory_bytes"] < m["e2e"]["live_memory_bytes"]
    # the saved-tensor meter cannot see inside checkpointed segments: it reads even lower
    assert m["ck"]["saved_peak_bytes"] < m["ck"]["live_peak_bytes"]
    assert m["ck"]["latency_ms"] is None


def test_checkpoint_with_one_module_is_e2e():
    x, y = _batch()
    a, b = _user_model(), _user_model()
    e2e, ck = lt.make_rule("e2e", a, sample=x), lt.make_rule("checkpoint", b, K=1, sample=x)
    for rule in (e2e, ck):
        torch.manual_seed(0)  # the same dropout masks
        rule.backward(x, y)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_keep_buffers_restores_every_buffer():
    bn = nn.BatchNorm1d(3)
    before = [b.clone() for b in bn.buffers()]
    with lt.KeepBuffers(bn):
        bn(torch.randn(4, 3))
        assert not torch.equal(bn.running_mean, before[0])
    for a, b in zip(before, bn.buffers()):
        assert torch.equal(a, b)
