"""Nested maps (one uniform per bit across rates), asymmetric thinning, BER curve and energy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import faultlab as fl
from faultlab.memory import CODES, ECC, BERCurve, MemoryLayout, RowFault, relative_energy


def _entries(fmap):
    return set(zip(fmap.param.tolist(), fmap.index.tolist(), fmap.bit.tolist()))


def _model():
    g = torch.Generator().manual_seed(0)
    m = nn.Linear(64, 32)
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=g))
    return m  # 2048 float32 weights = 65,536 bits


def _ones(m) -> int:
    w = m.weight.detach().reshape(-1).view(torch.int32).numpy().view(np.uint32)
    return int(np.bitwise_count(w).sum())


def _binomial_ok(counts, n, p):
    """Mean and variance of ``counts`` consistent with Binomial(n, p) (4-sigma / chi2 bounds)."""
    counts = np.asarray(counts, dtype=float)
    t = counts.size
    mean, var = n * p, n * p * (1 - p)
    assert abs(counts.mean() - mean) < 4 * np.sqrt(var / t), (counts.mean(), mean)
    lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], t - 1) / (t - 1)
    assert lo < counts.var(ddof=1) / var < hi, (counts.var(ddof=1), var)


def test_nested_maps_are_subsets_with_binomial_counts():
    m = _model()
    rates = [1e-4, 1e-3, 3e-3, 1e-2]
    per_rate = {r: [] for r in rates}
    for seed in range(150):
        maps = fl.sample_faults(m, fl.BitFlip(rate=0.5), seed=seed, nested_rates=rates)
        for small, big in itertools.pairwise(maps):
            assert _entries(small) <= _entries(big)
        for r, fmap in zip(rates, maps):
            per_rate[r].append(len(fmap))
        if seed < 3:  # the top member is the ordinary map at that rate
            assert maps[-1] == fl.sample_faults(m, fl.BitFlip(rate=1e-2), seed=seed)
    for r in rates:
        _binomial_ok(per_rate[r], 2048 * 32, r)


def test_nested_memory_models_and_ecc_raw_faults():
    m = _model()
    lay = MemoryLayout(row_bits=64 * 4)
    for seed in range(5):
        maps = fl.sample_faults(m, RowFault(rate=0.5, kind="stuck1", layout=lay), seed=seed,
                                nested_rates=[0.05, 0.2, 0.6])
        assert all(_entries(a) <= _entries(b) for a, b in itertools.pairwise(maps))
        assert [x.extra["units"] for x in maps] == sorted(x.extra["units"] for x in maps)
        ecc = fl.sample_faults(m, ECC("secded72_64", fl.BitFlip(rate=1e-3)), seed=seed,
                               nested_rates=[1e-4, 1e-3, 1e-2])
        raw = [x.extra["faulty_bits"] for x in ecc]
        assert raw == sorted(raw) and raw[-1] > raw[0]
    with pytest.raises(ValueError, match=r"fault_model of sample_faults must be a fault model "
                                         r"with a rate"):
        fl.sample_faults(m, fl.BitFlip(count=3), nested_rates=[1e-3])
    with pytest.raises(ValueError, match=r"nested_rates of sample_faults must be a non-empty"):
        fl.sample_faults(m, fl.BitFlip(rate=1e-3), nested_rates=[])


def test_asymmetric_1to0_hits_only_stored_ones_binomially():
    m = _model()
    ones = _ones(m)
    counts = []
    for seed in range(150):
        fmap = fl.sample_faults(m, fl.BitFlip(rate_1to0=2e-3), seed=seed)
        w = m.weight.detach().reshape(-1).view(torch.int32).numpy().view(np.uint32)
        stored = (w[fmap.index] >> fmap.bit.astype(np.uint32)) & 1
        assert stored.all() and set(fmap.kind.tolist()) <= {0}
        counts.append(len(fmap))
    _binomial_ok(counts, ones, 2e-3)


def test_asymmetric_stuck_at_and_under_ecc():
    m = _model()
    ones = _ones(m)
    zeros = 2048 * 32 - ones
    c10, c01 = [], []
    for seed in range(100):
        fmap = fl.sample_faults(m, fl.StuckAt(rate_1to0=3e-3, rate_0to1=1e-3), seed=seed)
        w = m.weight.detach().reshape(-1).view(torch.int32).numpy().view(np.uint32)
        stored = (w[fmap.index] >> fmap.bit.astype(np.uint32)) & 1
        assert np.array_equal(fmap.kind == 1, stored == 1)  # stored 1 -> stuck0
        c10.append(int((stored == 1).sum()))
        c01.append(int((stored == 0).sum()))
    _binomial_ok(c10, ones, 3e-3)
    _binomial_ok(c01, zeros, 1e-3)
    # under ECC the thinning reads the stored codeword, check bits included
    words = m.weight.detach().reshape(-1).view(torch.int32).numpy().view(np.uint32)
    data = words[0::2].astype(np.uint64) | (words[1::2].astype(np.uint64) << np.uint64(32))
    ones72 = int(np.bitwise_count(data).sum() + np.bitwise_count(
        CODES["secded72_64"].encode(data)).sum())
    raw = [fl.sample_faults(m, ECC("secded72_64", fl.BitFlip(rate_1to0=2e-3)), seed=s)
           .extra["faulty_bits"] for s in range(120)]
    _binomial_ok(raw, ones72, 2e-3)


def test_campaign_nested_uses_one_draw_per_trial(tiny):
    x = torch.randn(64, 8)
    y = tiny(x).argmax(1)
    fms = [ECC("secded72_64", fl.BitFlip(rate=r)) for r in (1e-3, 1e-2, 5e-2)]
    df = fl.campaign(tiny, (x, y), fms, trials=4, nested=True, clean=False)
    import json

    ex = df.extra.map(json.loads)
    df = df.assign(raw=ex.map(lambda e: e["faulty_bits"]))
    for t, g in df.groupby("trial"):
        g = g.sort_values("fault_rate")
        assert g.seed.nunique() == 1  # the family's seed, not the rate's
        assert g.raw.is_monotonic_increasing
    assert {"corrected_words", "detected_words", "miscorrected_words", "silent_words",
            "code_overhead"} <= set(ex.iloc[0])
    plain = fl.campaign(tiny, (x, y), fms, trials=4, clean=False)
    assert plain.groupby("trial").seed.nunique().min() == 3  # without nesting: seeds per rate
    asym = [fl.BitFlip(rate_1to0=r, rate_0to1=r / 10) for r in (1e-3, 1e-2)]
    rows = fl.campaign(tiny, (x, y), asym, trials=2, nested=True, clean=False)
    assert rows.fault_rate.tolist() == [1e-3, 1e-3, 1e-2, 1e-2]
    assert set(rows.fault_model) == {"bitflip-asym"}


def test_ber_curve_log_linear_and_monotone(tmp_path):
    curve = BERCurve(((0.9, 1e-8), (0.8, 1e-6), (0.7, 1e-4)))
    assert curve.ber(0.85) == pytest.approx(1e-7, rel=1e-12)
    assert curve.ber(0.75) == pytest.approx(1e-5, rel=1e-12)
    assert curve.ber(0.9) == pytest.approx(1e-8)
    assert curve.voltage(1e-7) == pytest.approx(0.85)
    with pytest.raises(ValueError, match=r"points of BERCurve must be BERs that do not increase "
                                         r"with voltage \(monotone\)"):
        BERCurve(((0.9, 1e-6), (0.8, 1e-8)))
    with pytest.raises(ValueError, match=r"voltage of BERCurve.ber must be a voltage within the "
                                         r"measured range \[0.7, 0.9\], got 0.6"):
        curve.ber(0.6)
    (tmp_path / "c.csv").write_text("voltage,ber\n0.9,1e-8\n0.7,1e-4\n")
    assert BERCurve.load(tmp_path / "c.csv").ber(0.8) == pytest.approx(1e-6)
    assert relative_energy(0.8, 1.0) == pytest.approx(0.64)
    with pytest.raises(ValueError, match=r"voltage of relative_energy must be a voltage > 0"):
        relative_energy(0, 1.0)


def test_memory_models_pickle_and_run_in_assert_resilient_and_campaign(digits, digits_mlp):
    import pickle

    from faultlab.memory import Burst, ChipMap

    _, test = digits
    models = [ECC("secded72_64", fl.BitFlip(rate=1e-3)), Burst(rate=1e-4, length=3),
              fl.BitFlip(rate_1to0=1e-3), ChipMap(np.array([0]), np.array([5]), np.array([1]),
                                                  (4, 64))]
    for fm in models:  # executors pickle the fault models: the map must not change
        back = pickle.loads(pickle.dumps(fm))
        assert fl.sample_faults(digits_mlp, back, seed=2) == \
            fl.sample_faults(digits_mlp, fm, seed=2)
    res = fl.assert_resilient(digits_mlp, test, ECC("secded72_64", fl.BitFlip(rate=1e-4)),
                              min_accuracy=0.8, trials=5)
    assert res is not None
    with pytest.raises(AssertionError):  # unprotected at 1e-2: the check bites
        fl.assert_resilient(digits_mlp, test, fl.BitFlip(rate=1e-2), min_accuracy=0.8, trials=5)
    df = fl.campaign(digits_mlp, test, models[1:], trials=2, clean=False)
    assert list(df.fault_model.unique()) == ["burst3", "bitflip-asym", "chipmap"]
