"""The faultlab.clipact study: rows, NULLs, stored thresholds, paired fresh maps, resume."""

from __future__ import annotations

import json

import pytest

from faultlab import clipact
from faultlab._clipact_study import CLIPACT_STUDY, summarize
from hwlab.store import Store

TINY = {"model": "mlp", "dataset": "digits", "fault_models": ("bitflip", "stuck1"),
        "rates": (3e-4,), "trials": 3, "eval_size": 120, "search_rates": (1e-4, 1e-3),
        "search_maps": 2, "search_rounds": 1, "search_min_rounds": 1, "search_size": 100,
        "profile_size": 300, "latency_batch": 8, "latency_repeats": 1}


def test_study_rows_thresholds_and_resume(tmp_path, monkeypatch, same_rows_as_reference):
    store = Store(tmp_path / "s.sqlite")
    config = CLIPACT_STUDY.make_config(**TINY)
    run_id = CLIPACT_STUDY.run(config, store)
    df = store.results(run_id=run_id)
    assert len(df) == 4 + 4 * 2 * 1 * 3
    same_rows_as_reference(df, "clipact_study_reference")  # as the study's own loop gave them
    clean = df[df.fault_model.isna()].set_index("variant")
    assert sorted(clean.index) == sorted(["unprotected", "clipact-zero", "clipact-cap", "ranger"])
    assert (clean.fault_rate == 0).all() and (clean.latency_ms > 0).all()
    assert clean.trial.isna().all() and clean.timesteps.isna().all()
    extra = {v: json.loads(e) for v, e in clean.extra.items()}
    assert extra["unprotected"]["thresholds"] == {}
    assert set(extra["clipact-zero"]["thresholds"]) == {"2", "4"}
    assert extra["clipact-zero"]["search"]["mode"] == "zero"
    assert extra["clipact-cap"]["search"]["config"]["maps"] == 2
    assert extra["ranger"]["thresholds"] == pytest.approx(
        extra["clipact-zero"]["search"]["profiled"])  # Ranger = the profiled maxima
    faulty = df[df.fault_model.notna()]
    assert faulty.latency_ms.isna().all() and set(faulty.trial) == {0, 1, 2}
    assert faulty.accuracy.between(0, 1).all() and (faulty.fault_rate == 3e-4).all()
    maps = faulty.assign(m=[json.loads(e)["map"] for e in faulty.extra])
    per_point = maps.groupby(["fault_model", "trial"]).m.nunique()
    assert (per_point == 1).all()  # every variant sees the same fresh fault map
    assert maps.m.nunique() == 2 * 3

    def no_search(*a, **k):
        raise AssertionError("the thresholds must be read back, not searched again")

    monkeypatch.setattr(clipact, "search_thresholds", no_search)
    assert CLIPACT_STUDY.run(config, store) == run_id
    again = store.results(run_id=run_id)
    assert len(again) == len(df)
    table = summarize(again)
    assert {"clipact-zero/unprotected", "clean"} <= set(table.columns) and len(table) == 2


def test_study_rejects_bad_config():
    with pytest.raises(ValueError, match="variants of study faultlab.clipact must be a non-empty "
                                         "tuple from unprotected, clipact-zero"):
        CLIPACT_STUDY.run(CLIPACT_STUDY.make_config(variants=("fitact",)), None)
    with pytest.raises(ValueError, match=r"rates of study faultlab.clipact must be a non-empty "
                                         r"tuple of numbers in \(0, 1\], got \(0.0,\)"):
        CLIPACT_STUDY.run(CLIPACT_STUDY.make_config(rates=(0.0,)), None)
