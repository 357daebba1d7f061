"""faultlab._batched: B fault maps in one forward pass agree with one map at a time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from faultlab._batched import BatchedMaps, choose_maps_per_pass, map_accuracies
from faultlab._inject import apply_fault_map, restore


class _Residual(nn.Module):
    """Not in the zoo: conv -> BatchNorm -> F.relu, residual add, x.relu(), a ReLU used twice."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.conv1(x)))
        h = self.act(self.conv2(h) + h)
        h = F.max_pool2d(self.act(h), 2).relu()
        return self.fc(h.flatten(1))


class _InPlaceAdd(nn.Module):
    """``h += branch(x)``: in place into the unbatched tensor when only ``b`` is faulty."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(64, 16), nn.Linear(64, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = x.flatten(1)
        h = self.a(x)
        h += self.b(x)
        return self.out(F.relu(h))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        if out.sum() > 0:  # data-dependent Python control flow
            return out
        return -out


def _one_at_a_time(model, fmaps, x):
    """Logits and changed bits of each map through inject (the reference path)."""
    logits, changed = [], []
    with torch.no_grad():
        for fmap in fmaps:
            recs = apply_fault_map(model, fmap)
            try:
                logits.append(model(x))
            finally:
                restore(recs)
            changed.append(sum(r.changed for r in recs))
    return torch.stack(logits), changed  # B x n x C


def _check_equal(model, x, y, fault, n_maps=6, layers=None):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fmaps = [fl.sample_faults(model, fault, seed=s, layers=layers) for s in range(n_maps)]
    assert sum(len(f) for f in fmaps) > 0
    ref, ref_changed = _one_at_a_time(model, fmaps, x)
    group = BatchedMaps(model, fmaps)
    got = group.logits(x)
    assert got.shape == ref.shape
    assert group.changed == ref_changed
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(got))  # same non-finite outputs
    scale = float(ref[finite].abs().max()) if bool(finite.any()) else 1.0
    torch.testing.assert_close(got[finite], ref[finite], rtol=1e-5, atol=1e-5 * scale)
    assert torch.equal(got.argmax(dim=2), ref.argmax(dim=2))  # the same predictions ...
    acc = map_accuracies(model, fmaps, x, y, batch_size=64, maps_per_pass=4)
    assert acc == [int((r.argmax(1) == y).sum()) / len(y) for r in ref]  # ... so accuracies
    for n, p in model.named_parameters():  # the model itself was never modified
        assert torch.equal(p.detach().view(torch.uint8), before[n].view(torch.uint8))
    return acc, group


@pytest.fixture(scope="module")
def mnist():
    from hwlab import zoo
    from hwlab.data import load

    test = load("mnist5k", "test")
    return zoo.pretrained("lenet5", "mnist5k"), test.x[:200], test.y[:200]


def test_lenet5_batched_maps_equal_one_map_at_a_time(mnist):
    model, x, y = mnist
    acc, group = _check_equal(model, x, y, fl.BitFlip(rate=2e-5))
    assert max(acc) > 0.9 and not group._expand  # mostly unharmed; the prefix was shared
    acc, _ = _check_equal(model, x, y, fl.StuckAt(1, count=3, bits=[30]))  # exponent bits
    assert min(acc) < 0.5
    _check_equal(model, x, y, fl.BitFlip(count=40), layers=["11"])  # the last layer only


def test_residual_user_model_with_functional_relu_and_batchnorm():
    torch.manual_seed(0)
    model = _Residual().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(48, 1, 8, 8)
    y = model(x).argmax(1)
    acc, group = _check_equal(model, x, y, fl.BitFlip(rate=3e-3))
    assert min(acc) < 1.0 and not group._expand  # the faults do change predictions
    _check_equal(model, x, y, fl.StuckAt(0, rate=0.01), layers=["fc"])  # late faults only
    q = fl.quantize_int8(model)
    _check_equal(q, x, q(x).argmax(1), fl.BitFlip(rate=5e-3))  # int8 words


def test_in_place_add_into_unbatched_prefix_falls_back_to_expanded_input():
    torch.manual_seed(1)
    model = _InPlaceAdd().eval()
    x = torch.randn(32, 1, 8, 8)
    _, group = _check_equal(model, x, model(x).argmax(1), fl.BitFlip(count=5), layers=["b"])
    assert group._expand  # the shared-prefix form raised; the expanded input gave equal rows


def test_empty_maps_give_the_clean_model_and_bad_models_a_clear_error(tiny):
    x = torch.randn(10, 8)
    empty = fl.sample_faults(tiny, fl.BitFlip(rate=0.0))
    group = BatchedMaps(tiny, [empty, empty])
    assert group.names == [] and group.changed == [0, 0]
    assert torch.equal(group.logits(x), torch.stack([tiny(x), tiny(x)]).detach())
    branchy = _Branchy().eval()
    fmaps = [fl.sample_faults(branchy, fl.BitFlip(count=2), seed=s) for s in range(2)]
    with pytest.raises(ValueError, match=r"model of BatchedMaps must be a model that "
                                         r"torch.func.vmap can run .*use maps_per_pass=1"):
        BatchedMaps(branchy, fmaps).logits(torch.randn(4, 64))
    with pytest.raises(ValueError, match=r"fmaps of BatchedMaps must be a non-empty list"):
        BatchedMaps(tiny, [])
    other = fl.sample_faults(branchy, fl.BitFlip(count=2))
    with pytest.raises(ValueError, match=r"a map naming unknown parameter 'fc.weight'"):
        BatchedMaps(tiny, [empty, other])


def test_maps_per_pass_is_one_on_cpu_unless_measured(mnist):
    model, x, _ = mnist
    assert choose_maps_per_pass(model, x[:64]) == 1
    chosen = choose_maps_per_pass(model, x[:64], candidates=(1, 2, 4), repeats=1,
                                  measure_on_cpu=True)  # the measuring branch a GPU takes
    assert chosen in (1, 2, 4)


def test_fault_free_prefix_runs_once_unbatched(mnist):
    model, x, _ = mnist
    batched = {}

    def hook(name):
        def record(module, inp, out):
            batched[name] = torch._C._functorch.is_batchedtensor(out)
        return record

    handles = [model[i].register_forward_hook(hook(i)) for i in (0, 9, 11)]
    try:
        fmaps = [fl.sample_faults(model, fl.BitFlip(count=3), seed=s, layers=["11"])
                 for s in range(4)]
        BatchedMaps(model, fmaps).logits(x[:16])
    finally:
        for h in handles:
            h.remove()
    assert batched == {0: False, 9: False, 11: True}  # only the faulty last layer is batched


def _campaign_table(model, data, faults, batched, monkeypatch, **kw):
    """fl.campaign rows without wall times; ``batched``: ``maps_per_pass=4`` (checked to run)."""
    import json

    import faultlab._batched as batched_module

    groups = []
    plain = batched_module.run_trials

    def counted(ev, items):
        groups.append(len(items))
        return plain(ev, items)

    with monkeypatch.context() as m:
        m.setattr(batched_module, "run_trials", counted)
        df = fl.campaign(model, data, faults, maps_per_pass=4 if batched else "auto", **kw)
    assert (max(groups, default=0) == 4) == batched  # the batched path ran in groups of 4
    extra = df["extra"].map(json.loads)
    extra.map(lambda e: e.pop("inject_ms", None))
    return df.drop(columns=["run_id", "latency_ms", "extra"]).assign(extra=extra.map(json.dumps))


@pytest.mark.parametrize("delayed_start", [True, False])
def test_campaign_rows_with_batched_maps_equal_the_plain_path(mnist, monkeypatch,
                                                              delayed_start):
    model, x, y = mnist
    faults = [fl.BitFlip(rate=1e-5), fl.StuckAt(1, count=2, bits=[30]), fl.BitFlip(rate=1e-7)]
    kw = dict(trials=6, seed=4, metrics=("accuracy", "sdc"), delayed_start=delayed_start)  # noqa: C408
    plain = _campaign_table(model, (x, y), faults, False, monkeypatch, **kw)
    batched = _campaign_table(model, (x, y), faults, True, monkeypatch, **kw)
    import pandas as pd

    pd.testing.assert_frame_equal(plain, batched)
    assert plain["accuracy"].nunique() > 3  # the faults do change results


def test_campaign_rows_with_batched_maps_on_a_residual_model(monkeypatch):
    torch.manual_seed(2)
    model = _Residual().eval()
    x = torch.randn(64, 1, 8, 8)
    y = model(x).argmax(1)
    faults = [fl.BitFlip(rate=2e-3), (fl.BitFlip(rate=1e-3), fl.NeuronFault(count=2))]
    kw = dict(trials=5, seed=1, metrics=("accuracy", "critical_sdc"))  # noqa: C408
    plain = _campaign_table(model, (x, y), faults, False, monkeypatch, **kw)
    batched = _campaign_table(model, (x, y), faults, True, monkeypatch, **kw)
    import pandas as pd

    pd.testing.assert_frame_equal(plain, batched)


def test_maps_per_pass_is_checked_before_anything_runs(tiny):
    x = torch.randn(8, 8)
    with pytest.raises(ValueError, match=r"maps_per_pass of campaign must be 'auto' or an "
                                         r"integer >= 1, got 0"):
        fl.campaign(tiny, (x, torch.zeros(8, dtype=torch.long)), [fl.BitFlip(rate=0.1)],
                    maps_per_pass=0)
