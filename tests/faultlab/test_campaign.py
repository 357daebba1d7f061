"""campaign: seeds per key, executor independence, resume guard, early stop, statistics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import faultlab as fl
from hwlab.store import Store
from hwlab.studies import derive_seed
from hwlab.train import evaluate

FAULTS = [fl.BitFlip(rate=1e-3), fl.StuckAt(1, rate=1e-2, bits=(30,))]
SAME = ["key", "fault_model", "fault_rate", "trial", "seed", "accuracy", "n_faults"]


def _table(df):
    extra = df["extra"].map(json.loads)
    return df.assign(n_faults=extra.map(lambda e: e["n_faults"]))[SAME].reset_index(drop=True)


def _words(model):
    return [p.detach().clone().view(torch.int32) for p in model.parameters()]


def test_rows_replay_and_model_untouched(digits_mlp, digits):
    before = _words(digits_mlp)
    df = fl.campaign(digits_mlp, digits[1], FAULTS, trials=4, seed=3, model_name="mlp")
    assert all(torch.equal(a, b) for a, b in zip(before, _words(digits_mlp)))
    assert len(df) == 1 + 2 * 4 and df["key"].is_unique
    clean = df.iloc[0]
    assert clean["fault_model"] == "none" and clean["fault_rate"] == 0.0
    assert clean["accuracy"] == pytest.approx(evaluate(digits_mlp, digits[1]))
    assert set(df["module"]) == {"faultlab"} and set(df["model"]) == {"mlp"}
    assert df["dataset"].iloc[0] == digits[1].name
    # A row is replayable: its map comes from derive_seed(row seed, "weights0").
    row = df[df["key"] == "bitflip|rate=0.001|trial=2"].iloc[0]
    assert row["seed"] == derive_seed(3, row["key"])
    fmap = fl.sample_faults(digits_mlp, FAULTS[0], seed=derive_seed(int(row["seed"]), "weights0"))
    assert json.loads(row["extra"])["n_faults"] == len(fmap) > 0
    with fl.inject(digits_mlp, fmap):
        acc = evaluate(digits_mlp, digits[1])
    assert row["accuracy"] == pytest.approx(acc)
    # stuck-at-1 on exponent bit 30 is effective on about every weight below 2 in magnitude
    stuck = df[df["fault_model"] == "stuck1"]["extra"].map(json.loads)
    assert all(e["n_changed"] <= e["n_faults"] and e["eligible_bits"] == 64 * 32 + 32 * 10 for e in stuck)
    assert df[df["fault_model"] == "stuck1"]["accuracy"].max() < 0.5


def test_same_table_serial_process_dask(digits_mlp, digits):
    kw = dict(trials=3, seed=1, batch_size=64)  # noqa: C408
    serial = _table(fl.campaign(digits_mlp, digits[1], FAULTS, **kw))
    process = _table(fl.campaign(digits_mlp, digits[1], FAULTS, executor="process:2", **kw))
    dask = _table(fl.campaign(digits_mlp, digits[1], FAULTS, executor="dask-local:2", **kw))
    pd.testing.assert_frame_equal(serial, process)
    pd.testing.assert_frame_equal(serial, dask)


def test_resume_skips_done_and_refuses_other_weights(digits_mlp, digits, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    first = fl.campaign(digits_mlp, digits[1], FAULTS[:1], trials=3, store=store)
    calls = []
    again = fl.campaign(digits_mlp, digits[1], FAULTS[:1], trials=3, store=store,
                        progress=lambda d, t, k="": calls.append((d, t)))
    pd.testing.assert_frame_equal(_table(first), _table(again))
    assert calls == [(3, 3)]  # nothing left to run
    assert len(store.runs()) == 1
    other = [p.detach().clone() for p in digits_mlp.parameters()]
    with torch.no_grad():
        digits_mlp[-1].weight[0, 0] += 1.0
    try:
        with pytest.raises(ValueError, match=r"model of campaign must be the same weights as when "
                                             r"run .* was started"):
            fl.campaign(digits_mlp, digits[1], FAULTS[:1], trials=3, store=store)
    finally:
        with torch.no_grad():
            for p, o in zip(digits_mlp.parameters(), other):
                p.copy_(o)
    x, y = digits[1].x[:50], digits[1].y[:50]
    with pytest.raises(ValueError, match=r"data of campaign must be the same data"):
        fl.campaign(digits_mlp, (x, y), FAULTS[:1], trials=3, store=store,
                    dataset_name=digits[1].name)
    assert len(store.results()) == 4  # nothing was added by the refused runs


def test_margin_stops_points_early(digits_mlp, digits):
    wide = fl.campaign(digits_mlp, digits[1], [fl.BitFlip(rate=1e-5)], trials=12, margin=0.2,
                       min_trials=3, clean=False)
    assert len(wide) == 3  # at 1e-5 (about 24 faults) the interval is narrow at once
    tight = fl.campaign(digits_mlp, digits[1], [fl.BitFlip(rate=1e-3)], trials=6, margin=1e-6,
                        min_trials=3, clean=False)
    assert len(tight) == 6


def test_summarize_and_intervals(digits_mlp, digits):
    from scipy import stats

    df = fl.campaign(digits_mlp, digits[1], FAULTS, trials=5, seed=2)
    s = fl.summarize(df)
    row = s[s["fault_model"] == "bitflip"].iloc[0]
    acc = df[df["fault_model"] == "bitflip"]["accuracy"].to_numpy()
    n = len(digits[1])
    # Wilson on the pooled trials with Kish's effective size and a t quantile (4 df), by hand
    p, m = acc.mean(), 5
    size = p * (1 - p) * m / acc.var(ddof=1)
    assert size < m * n  # the maps disagree far beyond sampling: the t quantile applies
    z = stats.t.ppf(0.975, m - 1)
    centre = (p + z**2 / (2 * size)) / (1 + z**2 / size)
    half = z * np.sqrt(p * (1 - p) / size + z**2 / (4 * size**2)) / (1 + z**2 / size)
    assert row["n"] == 5 and row["mean"] == pytest.approx(p)
    assert row["ci_low"] == pytest.approx(centre - half) and 0 <= row["ci_low"] < p
    assert row["ci_high"] == pytest.approx(centre + half) and p < row["ci_high"] <= 1
    # the single fault-free row: the Wilson interval of its n samples, finite, inside [0, 1]
    clean = s[s["fault_model"] == "none"].iloc[0]
    q = df["accuracy"].iloc[0]
    z = stats.norm.ppf(0.975)
    centre = (q + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(q * (1 - q) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert clean["n"] == 1 and clean["ci_low"] == pytest.approx(centre - half)
    assert clean["ci_high"] == pytest.approx(centre + half) and clean["ci_high"] < 1
    # a non-proportion (latency) keeps the Student-t interval of the mean
    lat = fl.summarize(df, metric="latency_ms")
    vals = df[df["fault_model"] == "bitflip"]["latency_ms"].to_numpy()
    t_half = stats.t.ppf(0.975, 4) * vals.std(ddof=1) / np.sqrt(5)
    assert lat[lat["fault_model"] == "bitflip"]["half_width"].iloc[0] == pytest.approx(t_half)


def test_proportion_ci_stays_in_unit_interval():
    for vals in ([1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0], [0.99, 1.0, 0.2], [0.5]):
        p, low, high = fl.proportion_ci(vals, [50] * len(vals))
        assert 0.0 <= low <= p <= high <= 1.0
    p, low, high = fl.proportion_ci([1.0, 1.0], [100, 100])  # all correct: still below 1
    assert p == 1.0 and high == 1.0 and 0.5 < low < 1.0
    assert fl.mean_ci([0.7])[1:] != (-np.inf, np.inf) and np.isnan(fl.mean_ci([0.7])[1])
    with pytest.raises(ValueError, match=r"values of proportion_ci must be proportions in"):
        fl.proportion_ci([1.2, 0.3])


def test_leveugle_sample_size():
    assert fl.leveugle_sample_size(10**12) == 9604  # 1.96^2 * 0.25 / 0.01^2, infinite population
    assert fl.leveugle_sample_size(1000, margin=0.05) == 278
    assert fl.leveugle_sample_size(1000, margin=0.01, confidence=0.99, p=0.1) == 857
    assert fl.leveugle_sample_size(1) == 1
    with pytest.raises(ValueError, match=r"margin of leveugle_sample_size must be a number in "
                                         r"\(0, 1\), got 0"):
        fl.leveugle_sample_size(100, margin=0)
    with pytest.raises(ValueError, match=r"population of leveugle_sample_size must be an integer"):
        fl.leveugle_sample_size(0)


@pytest.mark.parametrize("kw, match", [
    ({"data": (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))},
     r"data of campaign must be a non-empty dataset"),
    ({"fault_models": []}, r"fault_models of campaign must be a non-empty list"),
    ({"fault_models": ["bitflip"]}, r"fault_models of campaign must be BitFlip, StuckAt"),
    ({"trials": 0}, r"trials of campaign must be an integer >= 1, got 0"),
    ({"layers": ["9"]}, r"layers of campaign must be module or parameter names"),
    ({"fault_models": [fl.BitFlip(rate=0.1, bits=[31])], "layers": ["2"]},
     r"model of campaign must be a model with parameters eligible"),
    ({"metrics": ("f1",)}, (r"metrics of campaign must be names among accuracy, sdc, "
                            r"critical_sdc, top5, loss or callables, got 'f1'")),
    ({"metrics": (lambda lg, y, c: 0.0,)}, r"metrics of campaign must be callables whose name"),
    ({"executor": "bogus"}, r"executor of campaign must be None, an Executor or one of"),
    ({"delayed_start": 1}, r"delayed_start of campaign must be True or False, got 1"),
    ({"fault_models": [fl.BitFlip(rate=0.1), fl.BitFlip(rate=0.1)]},
     r"fault_models of campaign must be distinct fault models"),
])
def test_bad_input(digits_mlp, digits, kw, match):
    args = {"data": digits[1], "fault_models": FAULTS, "trials": 2, **kw}
    before = _words(digits_mlp)
    with pytest.raises(ValueError, match=match):
        fl.campaign(digits_mlp, **args)
    assert all(torch.equal(a, b) for a, b in zip(before, _words(digits_mlp)))


@pytest.mark.parametrize("fm", [fl.BitFlip(rate=1e-3), fl.BitFlip(count=7, bits=(30, 2)),
                                fl.StuckAt(0, rate=1e-2, bits=(31,)), fl.StuckAt(1, count=3)])
def test_cached_sampler_draws_the_maps_of_sample_faults(digits_mlp, fm):
    import copy
    import gc
    import weakref

    from faultlab._plain import Sampler, sampler
    from faultlab._words import model_views

    model = copy.deepcopy(digits_mlp)
    for layers, bias in ((None, False), (("3",), True)):
        fresh = Sampler(model, fm, layers, bias, False, "test")  # uncached
        for seed in (0, 1, 2**40 + 3):
            want = fresh.draw(fm, seed, "test")
            got = fl.sample_faults(model, fm, seed=seed, layers=layers, include_bias=bias)
            assert got.fingerprint() == want.fingerprint() and got.names == want.names
            assert got.eligible_bits == want.eligible_bits == fresh.total
            with fl.inject(model, fm, seed=seed, layers=layers, include_bias=bias) as used:
                assert used.fingerprint() == want.fingerprint()
        # one set-up per (bits, parameter choice), shared by every rate / count and seed
        cached = sampler(model, fm, layers, bias, False)
        assert sampler(model, fm.with_rate(0.5) if fm.rate is not None else fm, list(layers or [])
                       or None, bias, False) is cached
        assert any(v is cached for v in model_views(model).cache.values())
    with torch.no_grad():  # a replaced parameter drops the views and their samplers
        model[1].weight = torch.nn.Parameter(model[1].weight.clone())
    assert sampler(model, fm, ("3",), True, False) is not cached
    assert len(model_views(model).cache) == 1
    ref = weakref.ref(model)
    del model, cached
    gc.collect()
    assert ref() is None  # the cache keeps no model alive


def test_trials_are_small_and_the_payload_is_shared_once(digits_mlp, digits, monkeypatch):
    """The model travels once per worker (hwlab.executors.share), never inside a Trial."""
    import pickle

    import faultlab._engine as engine_module
    from faultlab._trial import Trial, build_evaluator
    from hwlab.executors import Shared

    calls, plain = [], engine_module.run_items

    def spy(store, run_id, items, fn, *args, shared=None, **kw):
        calls.append((items, shared))
        return plain(store, run_id, items, fn, *args, shared=shared, **kw)

    monkeypatch.setattr(engine_module, "run_items", spy)
    df = fl.campaign(digits_mlp, digits[1], FAULTS, trials=2, seed=1, batch_size=64)
    assert len(df) == 1 + 2 * len(FAULTS)
    refs = {id(ref) for _, ref in calls}
    assert len(refs) == 1 and all(isinstance(ref, Shared) for _, ref in calls)
    assert calls[0][1].setup is build_evaluator
    model_bytes = len(pickle.dumps(digits_mlp))
    for items, _ in calls:
        for item in items.values():
            assert isinstance(item, Trial) and len(pickle.dumps(item)) < 600 < model_bytes
