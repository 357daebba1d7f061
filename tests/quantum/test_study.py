"""The quantum.creep study: rows, columns, resume, validation (tiny synthetic config)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from hwlab.store import Store
from hwlab.studies import get_study
from quantum._study import CREEP_STUDY

TINY = {"datasets": ("synthetic",), "levels": (0, 2), "seeds": (0, 1), "epochs": 1,
        "batch_size": 64, "reps": 2, "channels": (2, 2), "train_limit": 128, "test_limit": 64,
        "latency_batch": 8, "latency_repeats": 1, "fault_dataset": "synthetic",
        "fault_rates": (1e-3,), "fault_trials": 2, "controls": False, "noise_aware": 0.0,
        "noise_kinds": ()}


def test_study_is_registered():
    assert get_study("quantum.creep") is CREEP_STUDY
    cfg = CREEP_STUDY.make_config(quick=True)
    assert cfg.seeds == (0,) and cfg.epochs == 4 and cfg.levels == (0, 1, 2)
    full = CREEP_STUDY.make_config()
    assert len(full.seeds) >= 5 and full.controls and full.noise_aware > 0


def test_study_rows_and_resume(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    cfg = CREEP_STUDY.make_config(**TINY)
    run_id = CREEP_STUDY.run(cfg, store)
    df = store.results(run_id=run_id)
    df["extra"] = [json.loads(e) if isinstance(e, str) else e for e in df["extra"]]
    train = df[df["method"] == "creep"]
    assert sorted(train["variant"]) == ["level-0", "level-0", "level-2", "level-2"]
    assert set(train["module"]) == {"quantum"} and set(train["seed"]) == {0, 1}
    assert train["accuracy"].between(0, 1).all() and (train["latency_ms"] > 0).all()
    assert train["fault_rate"].isna().all()  # NULL, never 0
    lvl2 = train[train["variant"] == "level-2"].iloc[0]
    assert lvl2["extra"]["qubits"] == {"1": 2, "2": 2, "4": 3}  # 2*4*4 = 32 features: 3 qubits
    assert lvl2["extra"]["train_seconds"] > 0 and lvl2["params"] > 0
    means = df[df["method"] == "creep-mean"]
    assert len(means) == 2 and means["seed"].isna().all()
    m0 = means[means["variant"] == "level-0"].iloc[0]
    expect = train[train["variant"] == "level-0"]["accuracy"].mean()
    assert math.isclose(m0["accuracy"], expect, abs_tol=1e-12)
    faults = df[df["method"] == "creep-faults"]
    # level 0: classical weights; level 2: quantum gates only; 1 rate x 2 trials each
    assert sorted(f["target"] for f in faults["extra"]) == ["classical"] * 2 + ["quantum"] * 2
    assert (faults["fault_rate"] == 1e-3).all() and set(faults["fault_model"]) == {"bitflip"}
    assert all(f["n_faults"] >= 0 for f in faults["extra"])
    # on the one trial engine: the rows the study's own loop gave (stored before the move)
    ref = pd.read_csv(Path(__file__).parent / "data" / "quantum_faults_reference.csv")
    got = faults.set_index("key").loc[ref.key]
    assert got.accuracy.tolist() == pytest.approx(ref.accuracy.tolist(), abs=1e-12)
    assert [f["n_faults"] for f in got.extra] == ref.n_faults.tolist()
    assert [f["fault_seed"] for f in got.extra] == ref.fault_seed.tolist()
    assert got.seed.tolist() == ref.seed.tolist() and got.trial.tolist() == ref.trial.tolist()
    # resume: same config -> same run, nothing new, checkpoints reused
    again = CREEP_STUDY.run(cfg, store)
    assert again == run_id and len(store.results(run_id=run_id)) == len(df)
    assert len(list((tmp_path / "quantum-creep").glob("*.pt"))) == 4


def test_study_validation():
    with pytest.raises(ValueError, match=r"levels of study quantum.creep must be a non-empty "
                                         r"tuple of integers in \[0, 2\]"):
        CREEP_STUDY.run(CREEP_STUDY.make_config(levels=(3,)), store=None)
    with pytest.raises(ValueError, match="option of study quantum.creep must be one of"):
        CREEP_STUDY.make_config(nope=3)


ARMS = {**TINY, "levels": (0, 2), "fault_trials": 0, "controls": True, "noise_aware": 0.05,
        "noise_dataset": "synthetic",
        "noise_kinds": ("depolarizing", "shots"), "noise_levels": (0.5,), "noise_shots": (10,)}


def test_study_control_and_noise_arms_are_paired_per_seed(tmp_path):
    from scipy import stats

    store = Store(tmp_path / "s.sqlite")
    run_id = CREEP_STUDY.run(CREEP_STUDY.make_config(**ARMS), store)
    df = store.results(run_id=run_id)
    df["extra"] = [json.loads(e) if isinstance(e, str) else e for e in df["extra"]]
    train = df[df["method"] == "creep"]
    assert sorted(train["variant"]) == sorted(
        ["level-0", "level-2", "control-2", "noisy-2"] * 2)
    by = {(r.variant, r.seed): r for r in train.itertuples()}
    for s in (0, 1):  # same size: the control's count is the hybrid's (within 1 %)
        hyb, ctl = by[("level-2", s)], by[("control-2", s)]
        assert abs(ctl.params - hyb.params) <= 0.01 * hyb.params
        assert ctl.extra["quantum_params"] == 0 and hyb.extra["quantum_params"] > 0
    paired = df[df["method"] == "creep-paired-mean"]
    assert len(paired) == 1
    extra = paired.iloc[0]["extra"]
    diffs = [100 * (by[("level-2", s)].accuracy - by[("control-2", s)].accuracy) for s in (0, 1)]
    got = extra["hybrid_minus_control"]
    assert got["diffs"] == pytest.approx(diffs, abs=1e-9)
    assert got["higher"] == sum(d > 0 for d in diffs)
    half = stats.t.ppf(0.975, 1) * stats.tstd(diffs) / math.sqrt(2)
    if half > 0:
        assert (got["lo"], got["hi"]) == pytest.approx(
            (sum(diffs) / 2 - half, sum(diffs) / 2 + half), abs=1e-9)
    base = [100 * (by[("level-2", s)].accuracy - by[("level-0", s)].accuracy) for s in (0, 1)]
    assert extra["hybrid_minus_level0"]["diffs"] == pytest.approx(base, abs=1e-9)
    assert extra["verdict"].startswith("synthetic: the paper's trend (level 2 above level 0)")
    assert "parameter-matched classical control" in extra["verdict"]
    noise = df[df["method"] == "creep-noise"]
    # hybrid and noise-aware arm x level 2 x 2 seeds x (depolarizing 0.5, 10 shots)
    assert len(noise) == 8 and set(noise["variant"]) == {"level-2", "noisy-2"}
    assert sorted(set(zip(noise["fault_model"], noise["fault_rate"]))) == [
        ("depolarizing", 0.5), ("shots", 0.1)]
    assert noise["accuracy"].between(0, 1).all()
    means = df[df["method"] == "creep-mean"]
    assert set(means["variant"]) == {"level-0", "level-2", "control-2", "noisy-2"}


def test_verdict_words_follow_the_paired_intervals():
    from quantum._study_arms import verdict

    def row(level, d_ctl, d_base):
        def d(v):
            return {"diffs": [], "mean": sum(v) / 2, "lo": min(v), "hi": max(v), "n": 5}
        return {"dataset": "mnist5k", "extra": {"level": level, "hybrid_minus_control": d(d_ctl),
                                                 "hybrid_minus_level0": d(d_base)}}

    text = verdict([row(2, (-3.0, -1.0), (-1.0, 2.0)), row(1, (0.5, 1.5), (1.0, 2.0))])
    assert text == (
        "mnist5k: the paper's trend (level 2 above level 0) does not hold (no significant "
        "rise): +0.50 points, 95% CI [-1.00, +2.00], 5 seeds; at level 1 the hybrid beats its "
        "parameter-matched classical control (+1.00 points, 95% CI [+0.50, +1.50], 5 seeds); "
        "at level 2 the hybrid loses to its parameter-matched classical control (-2.00 points, "
        "95% CI [-3.00, -1.00], 5 seeds).")
    assert verdict([]) == ""
    one = row(1, (2.0, 2.0), (1.0, 1.0))
    for k in ("hybrid_minus_control", "hybrid_minus_level0"):
        one["extra"][k].update(n=1, lo=math.nan, hi=math.nan, higher=1)
    assert verdict([one]) == (
        "mnist5k: the paper's trend (level 1 above level 0) cannot be judged with fewer than 2 "
        "paired seeds: +1.00 points, 1 seed, hybrid ahead in 1; at level 1 hybrid vs its "
        "parameter-matched classical control cannot be judged with fewer than 2 paired seeds "
        "(+2.00 points, 1 seed, hybrid ahead in 1).")


def test_noise_aware_arm_and_sweep_only_on_the_noise_dataset(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    cfg = CREEP_STUDY.make_config(**{**ARMS, "seeds": (0,), "noise_dataset": "digits"})
    df = store.results(run_id=CREEP_STUDY.run(cfg, store))
    assert sorted(df[df["method"] == "creep"]["variant"]) == ["control-2", "level-0", "level-2"]
    assert not (df["method"] == "creep-noise").any()
