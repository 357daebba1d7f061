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
        "fault_rates": (1e-3,), "fault_trials": 2}


def test_study_is_registered():
    assert get_study("quantum.creep") is CREEP_STUDY
    cfg = CREEP_STUDY.make_config(quick=True)
    assert cfg.seeds == (0,) and cfg.epochs == 4 and cfg.levels == (0, 1, 2)


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
