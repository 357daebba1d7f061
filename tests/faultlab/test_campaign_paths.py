"""Delayed start and fault dropping give the full path's rows, on lenet5 and on a user's ResNet."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from hwlab.data import load

METRICS = ("accuracy", "sdc", "critical_sdc", "top5", "loss")
SAME = ["key", "fault_model", "fault_rate", "trial", "seed", *METRICS, "n_faults", "n_changed"]


def _table(df):
    extra = df["extra"].map(json.loads)
    return df.assign(n_faults=extra.map(lambda e: e["n_faults"]),
                     n_changed=extra.map(lambda e: e["n_changed"]))[SAME]


class _Counter:
    """Counts the samples that pass through a module (forward hook)."""

    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(self)

    def __call__(self, module, args, out):
        self.n += args[0].shape[0]


@pytest.fixture(scope="module")
def lenet():
    """The zoo's LeNet-5 on mnist5k (trained once per test cache) and 200 test images."""
    from hwlab import zoo

    return zoo.pretrained("lenet5", "mnist5k").eval(), load("mnist5k", "test").subset(200)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.ReLU(inplace=True)  # called twice

    def forward(self, x):
        h = self.act(self.bn(self.conv1(x)))
        return self.act(x + self.conv2(h))  # residual add


class TinyResNet(nn.Module):
    """Not a Sequential: stem, two residual blocks, F.relu, x.relu(), a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block1, self.block2 = Block(4), Block(4)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = self.block2(self.block1(h))
        h = F.max_pool2d(h, 2).relu()
        return self.fc(torch.flatten(h, 1))


@pytest.fixture(scope="module")
def resnet():
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyResNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(4, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(4, generator=g) + 0.5)
    model.eval()
    x = torch.randn(96, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, (x, y)


@pytest.mark.parametrize("which", ["lenet", "resnet"])
def test_delayed_start_and_dropping_give_the_full_rows(which, lenet, resnet):
    model, data = lenet if which == "lenet" else resnet
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    faults = [fl.BitFlip(rate=1e-5), fl.BitFlip(rate=3e-4), fl.StuckAt(1, rate=1e-3, bits=(30,)),
              fl.StuckAt(0, count=3, bits=(0,)), fl.BitFlip(count=1, bits=(30,))]
    kw = {"trials": 6, "seed": 4, "metrics": METRICS, "batch_size": 40}
    stem = _Counter(first)
    full = fl.campaign(model, data, faults, delayed_start=False, **kw)
    full_samples, stem.n = stem.n, 0
    fast = fl.campaign(model, data, faults, **kw)
    pd.testing.assert_frame_equal(_table(fast), _table(full))
    n = len(data[1]) if isinstance(data, tuple) else len(data)
    assert full_samples == n * (1 + len(faults) * 6)  # fault-free pass + every trial in full
    # the fast path ran the first convolution far less: trials whose faults change nothing or
    # lie after a cut point skip it (bit-0 stuck-at-0 of 3 words rarely changes a bit)
    assert stem.n < full_samples / 2, (stem.n, full_samples)
    changed = _table(fast)["n_changed"]
    assert (changed == 0).any() and (changed > 0).any()
    assert full["accuracy"].iloc[0] > (0.8 if which == "lenet" else 0.99)


def test_dropped_trial_reuses_the_fault_free_result(resnet):
    model, data = resnet
    # stuck-at-1 on the sign bit of weights that are already negative changes nothing
    saved = model.fc.weight.detach().clone()
    with torch.no_grad():
        model.fc.weight.abs_().neg_()
    try:
        df = fl.campaign(model, data, [fl.StuckAt(1, count=5, bits=(31,))], trials=3,
                         layers=["fc.weight"], metrics=METRICS)
    finally:
        with torch.no_grad():
            model.fc.weight.copy_(saved)
    extra = df["extra"].map(json.loads)
    assert (extra.iloc[1:].map(lambda e: e["n_changed"]) == 0).all()
    for m in METRICS:
        assert (df[m].iloc[1:] == df[m].iloc[0]).all()
    assert (df["sdc"] == 0).all() and (df["latency_ms"].iloc[1:] == 0).all()


@pytest.mark.parametrize("layer", ["fc.weight", "block2.conv1.weight"])
def test_late_faults_start_from_the_cached_activation(resnet, layer):
    model, data = resnet
    stem, block1 = _Counter(model.stem), _Counter(model.block1.conv1)
    fm = [fl.BitFlip(count=1, bits=(30,))]  # one exponent flip: always changes its word
    kw = {"trials": 5, "seed": 1, "layers": [layer], "metrics": METRICS}
    fast = fl.campaign(model, data, fm, **kw)
    n = len(data[1])
    # the fault-free pass and one prefix pass to fill the cache: never once per trial
    assert stem.n == 2 * n and block1.n == 2 * n
    assert (_table(fast)["n_changed"].iloc[1:] == 1).all()
    full = fl.campaign(model, data, fm, delayed_start=False, **kw)
    pd.testing.assert_frame_equal(_table(fast), _table(full))
    assert stem.n == 2 * n + n * (1 + 5)


@pytest.mark.parametrize("cache_bytes", [0, 150_000])
def test_a_small_cache_budget_keeps_the_rows(resnet, cache_bytes):
    model, data = resnet  # ~98 kB of activations per cut: 150 kB holds one cut, 0 none
    faults = [fl.BitFlip(rate=3e-4), fl.BitFlip(count=1, bits=(30,))]
    kw = {"trials": 4, "seed": 2, "metrics": METRICS}
    small = fl.campaign(model, data, faults, cache_bytes=cache_bytes, **kw)
    full = fl.campaign(model, data, faults, delayed_start=False, **kw)
    pd.testing.assert_frame_equal(_table(small), _table(full))


def test_without_fault_free_results_the_shape_check_runs_two_samples():
    g = torch.Generator().manual_seed(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = TinyResNet().eval()
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)
    seen = _Counter(model.fc)
    fl.campaign(model, (x, y), [fl.BitFlip(rate=1e-3)], trials=3, clean=False,
                delayed_start=False, batch_size=16)
    assert seen.n == 2 + 3 * 40  # the check, then each trial over all samples
    seen.n = 0
    fl.campaign(model, (x, y), [fl.BitFlip(rate=1e-3)], trials=3, clean=True,
                delayed_start=False, batch_size=16)
    assert seen.n == 40 + 3 * 40  # a clean row needs the whole fault-free pass
    with pytest.raises(ValueError, match=r"data of campaign must be inputs that model TinyResNet "
                                         r"accepts \(it raised RuntimeError: .*\), got 'inputs "
                                         r"of shape \(40, 1, 7, 7\)'"):
        fl.campaign(model, (x[:, :, :7, :7], y), [fl.BitFlip(rate=1e-3)], trials=1,
                    clean=False, delayed_start=False, batch_size=64)


def test_residual_model_gives_the_serial_rows_on_process_and_dask(resnet):
    """Per-point set-up, guided chunks and Dask placement on a non-Sequential model."""
    model, data = resnet
    faults = [fl.BitFlip(rate=1e-4), fl.StuckAt(1, count=3), fl.BitFlip(rate=1e-3, bits=(30,))]
    kw = dict(trials=12, metrics=("accuracy", "sdc"), batch_size=32)  # noqa: C408
    serial = _table(fl.campaign(model, data, faults, **kw))
    assert serial["n_changed"].gt(0).any() and serial["accuracy"].nunique() > 1
    for ex in ("process:2", "dask-local:2"):
        pd.testing.assert_frame_equal(_table(fl.campaign(model, data, faults, executor=ex, **kw)),
                                      serial, check_exact=True)
