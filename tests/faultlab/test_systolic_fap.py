"""FAP / FAP+T (Zhang et al. VTS'18) on a LeNet trained briefly on digits, the exact pruning map,
the output-stationary bypass, campaign points with PE faults, and a residual user model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from faultlab.systolic import (
    PEFault,
    SystolicArray,
    fap,
    fap_masks,
    fap_t,
    inject,
    sample_pe_faults,
)
from hwlab.train import TrainConfig, evaluate, fit


@pytest.fixture(scope="module")
def lenet(digits):
    from hwlab.models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("lenet5", (1, 8, 8), 10)
    fit(model, digits[0], TrainConfig(epochs=12, batch_size=64, lr=3e-3, device="cpu"))
    return model.eval()


def _unmitigated(model, fmap, test):
    with torch.no_grad(), inject(model, fmap):
        return evaluate(model, test)


@pytest.mark.parametrize("dataflow", ["weight-stationary", "output-stationary"])
def test_fap_beats_unmitigated_at_one_percent_on_fresh_maps(lenet, digits, dataflow):
    test = digits[1]
    clean = evaluate(lenet, test)
    assert clean > 0.9
    array = SystolicArray(32, 32, dataflow)
    un, pruned = [], []
    for seed in range(100, 108):  # fresh maps, never seen before
        fmap = sample_pe_faults(PEFault("stuck1", rate=0.01, array=array), seed=seed)
        un.append(_unmitigated(lenet, fmap, test))
        pruned.append(evaluate(fap(lenet, fmap), test))
    un, pruned = np.array(un), np.array(pruned)
    assert (pruned >= un - 0.02).all()  # a harmless low-bit fault can beat pruning by a sample
    assert pruned.mean() > un.mean() + 0.05
    hit = un < clean - 0.1  # maps whose faults hurt (output-stationary: many hit idle PEs)
    assert hit.sum() >= 1 and (pruned[hit] > un[hit] + 0.1).all()
    # WS: 1 % of the weights pruned costs little; OS: a bypassed PE in row 0 silences a whole
    # logit of the last layer (one output position), which costs more
    assert pruned.min() > clean - (0.05 if dataflow == "weight-stationary" else 0.15)


def test_fap_t_beats_fap(lenet, digits):
    train, test = digits
    array = SystolicArray(32, 32, "weight-stationary")
    gains = []
    for seed in range(3):
        fmap = sample_pe_faults(PEFault("stuck1", rate=0.3, array=array), seed=seed)
        pruned = evaluate(fap(lenet, fmap), test)
        tuned_model = fap_t(lenet, fmap, train)
        masks = fap_masks(tuned_model, fmap)
        params = dict(tuned_model.named_parameters())
        assert all(bool((params[n][m] == 0).all()) for n, m in masks.items())  # held at zero
        gains.append(evaluate(tuned_model, test) - pruned)
    assert min(gains) > 0.03 and np.mean(gains) > 0.1


def test_fap_zeroes_exactly_the_weights_of_faulty_pes(lenet):
    array = SystolicArray(4, 8, "weight-stationary")
    fmap = sample_pe_faults(PEFault(rate=0.2, array=array), seed=1)
    bad = {(int(r), int(c)) for r, c in fmap.pes}
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    pruned = fap(lenet, fmap)
    for k, v in lenet.state_dict().items():  # input untouched
        assert torch.equal(v, before[k])
    for name, p in pruned.named_parameters():
        orig = dict(lenet.named_parameters())[name]
        if not name.endswith("weight"):
            assert torch.equal(p, orig)
            continue
        w = p.detach().reshape(p.shape[0], -1)
        o = orig.detach().reshape(p.shape[0], -1)
        for m in range(w.shape[0]):  # independent mapping: weight[m, k] sits in PE (k%R, m%C)
            for k in range(w.shape[1]):
                if (k % 4, m % 8) in bad:
                    assert w[m, k] == 0
                else:
                    assert w[m, k].view(torch.int32) == o[m, k].view(torch.int32)


def test_output_stationary_bypass_reads_bias(lenet, digits):
    x = digits[1].x[:3]
    array = SystolicArray(4, 4, "output-stationary")
    fmap = sample_pe_faults(PEFault(pes=((1, 2),), array=array))
    model = fap(lenet, fmap)
    conv, conv_b = lenet[0], model[0]
    with torch.no_grad():
        y, yb = conv(x), conv_b(x)  # 3 x 6 x 8 x 8
    assert fap_masks(lenet, fmap) == {}
    owned = torch.zeros_like(y, dtype=torch.bool)
    for m in range(6):
        for p in range(64):
            owned[:, m, p // 8, p % 8] = p % 4 == 1 and m % 4 == 2
    assert torch.equal(yb[owned], conv.bias.detach()[None, :, None, None].expand_as(y)[owned])
    assert torch.equal(yb[~owned], y[~owned])


def test_campaign_accepts_pe_fault_points(lenet, digits):
    array = SystolicArray(16, 16)
    points = [PEFault(rate=0.01, array=array), PEFault(rate=0.05, array=array)]
    df = fl.campaign(lenet, digits[1], points, trials=3, seed=0)
    rows = df[df["fault_model"] == "pe-stuck1-output"]
    assert len(rows) == 6 and sorted(set(rows["fault_rate"])) == [0.01, 0.05]
    again = fl.campaign(lenet, digits[1], points, trials=3, seed=0)
    assert again["accuracy"].tolist() == df["accuracy"].tolist()  # replayable from the seed
    assert rows["accuracy"].max() <= df.loc[df["fault_model"] == "none", "accuracy"].iloc[0]
    with pytest.raises(ValueError, match="fault_models of campaign must be points with at most "
                                         "one PEFault"):
        fl.campaign(lenet, digits[1], [(points[0], points[1])], trials=2)


class _ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.ModuleDict({"conv": nn.Conv2d(8, 8, 3, padding=1)})
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = self.body["conv"](h).relu() + h
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_fap_and_fap_t_on_residual_user_model(digits):
    train, test = digits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _ResNetLike()
    fit(model, train, TrainConfig(epochs=4, batch_size=64, lr=3e-3, device="cpu"))
    model.eval()
    fmap = sample_pe_faults(PEFault(rate=0.25, array=SystolicArray(8, 8)), seed=0)
    masks = fap_masks(model, fmap)
    assert set(masks) == {"stem.weight", "body.conv.weight", "fc.weight"}
    assert all(0 < m.float().mean() < 0.6 for m in masks.values())
    pruned, tuned = fap(model, fmap), fap_t(model, fmap, train)
    assert evaluate(tuned, test) >= evaluate(pruned, test)
    assert _unmitigated(model, fmap, test) < evaluate(pruned, test)


def test_assert_resilient_with_pe_faults(lenet, digits):
    big = SystolicArray(256, 256, "output-stationary")  # lenet: <= 120 channels, <= 64 positions
    ok = fl.assert_resilient(lenet, digits[1], PEFault(pes=((255, 255),), array=big), 0.9,
                             trials=2)  # an idle PE changes nothing
    array = SystolicArray(16, 16, "output-stationary")
    assert ok.passed and ok.mean == pytest.approx(evaluate(lenet, digits[1]))
    with pytest.raises(AssertionError, match="not resilient to pe-stuck1-output"):
        fl.assert_resilient(lenet, digits[1], PEFault(rate=0.2, array=array), 0.9, trials=2)
