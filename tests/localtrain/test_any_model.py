"""Researchers' models the local-learning split must handle: tuple-valued nodes, mode branches."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import localtrain as lt

SHAPE = (1, 8, 8)


# -- a tuple-valued node is never a cut point (ShuffleNetV2's channel split) ------------------
class ChannelSplit(nn.Module):
    """ShuffleNetV2's split as a leaf: one call, two tensors."""

    _hwlab_leaf = True

    def forward(self, x):
        c = int(x.size(1) * 0.5)
        return x[:, :c], x[:, c:]


class PlainSplit(ChannelSplit):
    """The same split, a leaf only when the caller names it in ``leaf_modules``."""

    _hwlab_leaf = False


def shuffle(x, groups: int = 2):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """split -> conv-BN-ReLU one half -> cat -> channel shuffle (ShuffleNetV2's basic unit)."""

    def __init__(self, c: int, split: type[nn.Module] | None):
        super().__init__()
        self.split = split() if split is not None else None  # None: x.chunk(2, 1), traced
        self.conv = nn.Conv2d(c // 2, c // 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c // 2)

    def forward(self, x):
        a, b = self.split(x) if self.split is not None else x.chunk(2, 1)
        b = F.relu(self.bn(self.conv(b)))
        return shuffle(torch.cat([a, b], 1))


class TinyShuffleNet(nn.Module):
    def __init__(self, split=ChannelSplit, c: int = 16, n: int = 4, classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.units = nn.ModuleList(ShuffleUnit(c, split) for _ in range(n))
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        for unit in self.units:
            x = unit(x)
        return self.fc(x.mean(dim=(2, 3)))


def _task(n: int = 64, classes: int = 4, seed: int = 0):
    """A seeded task a small CNN learns in a few dozen steps: class = bright quadrant."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    x = 0.3 * torch.rand(n, *SHAPE, generator=gen)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * s:4 * s + 4] += 0.7
    return x, y


@pytest.mark.parametrize("split, leaves", [(ChannelSplit, ()), (PlainSplit, (PlainSplit,)),
                                           (None, ())], ids=["leaf", "leaf_modules", "chunk"])
def test_a_tuple_returning_split_is_never_cut_and_the_chain_composes(split, leaves):
    torch.manual_seed(0)
    model = TinyShuffleNet(split).eval()
    chain = lt.as_chain(model, leaf_modules=leaves)
    x = torch.rand(5, *SHAPE)
    h, outputs = x, []
    for child in chain.children():
        h = child(h)
        outputs.append(h)
    assert all(isinstance(o, torch.Tensor) for o in outputs)  # no segment hands on a tuple
    assert torch.equal(h, model(x))  # the chain computes the model
    part = lt.partition(chain, 4)
    assert len(part.units) == 5  # the stem and the 4 shuffle units (fc is the tail)


@pytest.mark.parametrize("name", ["infopro", "dgl"])
def test_make_rule_trains_a_shufflenet_like_model(name):
    x, y = _task()
    torch.manual_seed(0)
    model = TinyShuffleNet()
    rule = lt.make_rule(name, model, K=2, sample=x, lr=1e-2)
    assert len(rule.modules_) == 2 and all(s is not None for s in rule.out_shapes)
    first = rule.step(x, y)["loss"]
    for _ in range(40):
        last = rule.step(x, y)["loss"]
    rule.train(False)
    accuracy = (rule.predict(x).argmax(1) == y).float().mean().item()
    # seeded: the last module's loss falls from ~1.39 (chance, 4 classes) to < 0.3 in 41 steps
    assert first > 1.2 and last < 0.5 * first
    assert accuracy >= 0.9


class SplitMerge(nn.Module):
    """An ``nn.Sequential`` child that hands a tuple to the next child."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(x), x


class Merge(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, pair):
        a, b = pair
        return F.relu(self.conv(a) + b)


def test_a_sequential_child_returning_a_tuple_is_joined_with_the_next():
    torch.manual_seed(0)
    c = 4
    model = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), SplitMerge(c), Merge(c),
                          SplitMerge(c), Merge(c), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(c, 4))
    part = lt.partition(model, 3, "layers", sample=SHAPE)
    assert part.units == ((0, 2), (2, 4), (4, 6))  # never a cut between SplitMerge and Merge
    x, y = _task(16)
    rule = lt.make_rule("infopro", model, K=3, sample=x)
    assert rule.partition.bounds == ((0, 2), (2, 4), (4, 9))
    losses = rule.step(x, y)
    assert {"local0", "local1", "loss"} <= set(losses)


# -- a forward that reads self.training: traced in train mode, with a warning ----------------
class DropConnectBlock(nn.Module):
    """A residual block with EfficientNet-style drop-connect, written on ``self.training``."""

    def __init__(self, c: int, p: float = 0.5):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.p = p

    def forward(self, x):
        out = F.relu(self.conv(x))
        if self.training:  # fx bakes one branch into the graph
            keep = torch.ones_like(out[:, :1, :1, :1]).bernoulli_(1 - self.p)
            out = out * keep / (1 - self.p)
        return x + out


class DropConnectNet(nn.Module):
    def __init__(self, c: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.blocks = nn.Sequential(DropConnectBlock(c), DropConnectBlock(c))
        self.fc = nn.Linear(c, 4)

    def forward(self, x):
        return self.fc(self.blocks(F.relu(self.stem(x))).mean(dim=(2, 3)))


def test_a_forward_reading_self_training_warns_and_is_traced_in_train_mode():
    torch.manual_seed(0)
    model = DropConnectNet().eval()
    with pytest.warns(UserWarning, match=r"as_chain: the forward of 'blocks.0', 'blocks.1' reads "
                      r"self.training .* traced in train mode and keeps the train-mode branch"):
        chain = lt.as_chain(model)
    assert not any(m.training for m in model.modules())  # the model's modes are restored
    code = "\n".join(child.code for child in chain.children())
    assert "bernoulli_" in code  # the train-mode branch, whatever the mode at split time
    with pytest.warns(UserWarning, match=r"make_rule\('dgl'\): the forward of 'blocks.0'"):
        rule = lt.make_rule("dgl", model, K=2, in_shape=SHAPE)
    rule.train(False)  # evaluation runs the model itself: no drop-connect at eval
    x = torch.rand(6, *SHAPE)
    assert torch.equal(rule.predict(x), rule.predict(x))


def test_a_mode_independent_model_gives_no_warning():
    class Plain(DropConnectNet):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Dropout(0.5))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nn.Dropout is a leaf: it still reads its own mode
        chain = lt.as_chain(Plain().train())
        lt.as_chain(TinyShuffleNet())
    assert any(isinstance(m, nn.Dropout) for m in chain.modules())
