"""Selective hardening: exact filtering (TMR / SEC-DED), the greedy chain, target met on fresh maps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

import faultlab as fl
from faultlab._faults import KINDS, FaultMap
from faultlab._harden import COSTS, Plan, harden, plan_hardening, survival
from hwlab.train import TrainConfig, fit


def _map(entries, names=("a.weight", "b.weight"), dtypes=("int8", "int8")):
    p, i, b = (np.array(v) for v in zip(*entries))
    return FaultMap(tuple(names), tuple(dtypes), p.astype(np.int32), i.astype(np.int64),
                    b.astype(np.uint8), np.full(len(p), KINDS.index("flip"), np.int8), 10_000)


def test_secded_corrects_single_errors_per_codeword_only():
    word = tuple(range(8))  # int8 whole words: 8 weights per 64-bit codeword
    plan = Plan((("a.weight", word, "secded", "word"),), 0.125 * 0.5, 0.0)
    fmap = _map([(0, 0, 3),  # codeword 0: alone -> corrected
                 (0, 8, 1), (0, 15, 7),  # codeword 1: two errors -> both stay
                 (0, 16, 7),  # codeword 2: alone -> corrected
                 (1, 0, 7)])  # unprotected parameter -> stays
    out = plan.filter(fmap, rate=1e-12, seed=0)  # no check-bit errors at this rate
    assert list(zip(out.param, out.index, out.bit)) == [(0, 8, 1), (0, 15, 7), (1, 0, 7)]
    # sign+msb only: bits 6, 7 of 32 words share one codeword; bit 3 is not protected.
    plan = Plan((("a.weight", (6, 7), "secded", "sign+msb"),), 0.0, 0.0)
    out = plan.filter(_map([(0, 0, 3), (0, 1, 7), (0, 31, 6), (0, 32, 6)]), 1e-12)
    assert list(zip(out.index, out.bit)) == [(0, 3), (1, 7), (31, 6)]


def test_tmr_survival_is_binomial_and_nested_subset():
    rate = 0.05
    n = 20_000
    fmap = _map([(0, i, 7) for i in range(n)], names=("a.weight",), dtypes=("int8",))
    plan = Plan((("a.weight", (7,), "tmr", "sign"),), 0.0, 0.0)
    out = plan.filter(fmap, rate, seed=4)
    expected = survival("tmr", rate)  # 1 - 0.95^2 = 0.0975
    assert expected == pytest.approx(0.0975)
    assert stats.binomtest(len(out), n, expected).pvalue > 1e-3
    assert set(out.index) <= set(fmap.index)
    assert plan.filter(fmap, rate, seed=4) == out  # deterministic for the seed


class _Res(nn.Module):
    """Not in the zoo: residual add, F.relu, x.relu(), a ReLU module called twice."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(64, 48)
        self.mid = nn.Linear(48, 48)
        self.act = nn.ReLU()
        self.out = nn.Linear(48, 10)

    def forward(self, x):
        h = self.act(self.inp(x.flatten(1)))
        h = self.act(h + F.relu(self.mid(h)))
        return self.out(h.relu())


@pytest.fixture(scope="module")
def int8_res(digits):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _Res()
    fit(net, digits[0], TrainConfig(epochs=10, batch_size=64, lr=3e-3, device="cpu"))
    return fl.quantize_int8(net.eval())


def test_candidates_ordered_from_nothing_to_everything(int8_res, digits):
    table = fl.vulnerability(int8_res, digits[1], fault=0.02, trials=2)
    chain = plan_hardening(int8_res, table, 0.02)
    assert chain[0].label() == "none" and chain[0].overhead == 0.0
    assert all(a.overhead <= b.overhead for a, b in itertools.pairwise(chain))
    assert chain[-1].overhead == pytest.approx(COSTS["tmr"])  # every word triplicated
    assert {s for _, _, s, f in chain[-1].protect} == {"tmr"}
    labels = [p.label() for p in chain]
    assert "inp.weight:word/secded; mid.weight:word/secded; out.weight:word/secded" in labels
    assert len(set(labels)) == len(labels)
    with pytest.raises(ValueError, match=r"rate of plan_hardening must be a bit error rate in "
                       r"\(0, 1\), got 0"):
        plan_hardening(int8_res, table, 0)
    with pytest.raises(ValueError, match=r"costs\['tmr'\] of plan_hardening must be a finite "
                       r"number > 0, got -1"):
        plan_hardening(int8_res, table, 0.02, costs={"secded": 0.125, "tmr": -1})
    with pytest.raises(ValueError, match=r"table of plan_hardening must be layers of this model"):
        plan_hardening(int8_res, table.assign(layer="nope"), 0.02)


def test_harden_meets_target_on_fresh_maps_cheaper_than_everything(int8_res, digits):
    data = digits[0]  # 1,437 images: the 180 test images make 1-point targets map noise
    rate, target = 0.01, 0.015
    res = harden(int8_res, data, rate, target=target, trials=12, table_trials=3, seed=0)
    assert res.plan is not None, res.verified
    assert res.verified.accuracy.iloc[0] < res.clean_accuracy - target  # unprotected fails
    # A fresh campaign (another seed, more trials) for the chosen plan and for everything.
    everything = [Plan(tuple((n, tuple(range(8)), s, "word") for n, _ in
                             fl.eligible_parameters(int8_res)), COSTS[s], 0.0)
                  for s in ("secded", "tmr")]
    plans = [res.plan, *everything]
    rows = fl.campaign(int8_res, data, [p.fault_model(rate) for p in plans], trials=16, seed=99)
    clean = float(rows[rows.fault_model == "none"].accuracy.iloc[0])
    faulty = rows[rows.fault_model == "bitflip@harden"]
    keys = faulty.key.str.rsplit("|trial=", n=1).str[0]
    fresh = faulty.groupby(keys, sort=False).accuracy.mean().to_numpy()  # in plan order
    assert len(fresh) == 3 and fresh[0] >= clean - target, fresh
    meeting = [p.overhead for p, a in zip(everything, fresh[1:]) if a >= clean - target]
    assert meeting and res.plan.overhead < min(meeting), (res.plan.overhead, fresh)
    fm = res.plan.fault_model(rate)
    assert fm.label == "bitflip@harden" and fm.to_dict()["plan"] == res.plan.label()
    pareto = res.pareto
    assert pareto.overhead.is_monotonic_increasing and pareto.accuracy.is_monotonic_increasing
    assert res.plan.label() in set(pareto.plan)
