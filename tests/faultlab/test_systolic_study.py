"""The faultlab.systolic study on a tiny config: rows per mitigation, nested maps, resume."""

from __future__ import annotations

import json

import pytest

from hwlab.store import Store
from hwlab.studies import get_study, run_study


@pytest.fixture(scope="module")
def study_rows(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("systolic") / "s.sqlite")
    kw = {"models": ("lenet5",), "rows": 64, "cols": 64, "fractions": (0.01, 0.25), "trials": 1,
          "eval_size": 200, "retrain_epochs": 1}
    run_id = run_study("faultlab.systolic", store=store, **kw)
    return store, run_id, kw


def test_quick_study_rows(study_rows, same_rows_as_reference):
    store, run_id, _ = study_rows
    df = store.results(run_id=run_id)
    same_rows_as_reference(df, "systolic_study_reference")  # as the study's own loop gave them
    clean = df[df.fault_model == "none"]
    assert len(clean) == 1 and clean.accuracy.iloc[0] > 0.9  # zoo lenet5 on mnist5k
    faulty = df[df.fault_model != "none"]
    # 2 dataflows x (1 % x 3 mitigations + 25 % x 2 mitigations: unmitigated only <= 1 %)
    assert len(faulty) == 10 and set(faulty.variant) == {"unmitigated", "fap", "fap-t"}
    assert faulty[faulty.variant == "unmitigated"].fault_rate.max() == 0.01
    extra = faulty.extra.map(json.loads)
    assert set(extra.map(lambda e: e["array"])) == {"64x64-ws", "64x64-os"}
    # the three mitigations of one (dataflow, fraction) share one PE map
    maps = faulty.assign(m=extra.map(lambda e: e["map"])).groupby(["key"]).m.first()
    for df_ in ("weight-stationary", "output-stationary"):
        same = {maps[k] for k in maps.index if k.startswith(f"lenet5|{df_}|0.01|")}
        assert len(same) == 1
    ws = faulty[faulty.key.str.contains("weight-stationary")].set_index("variant")
    ws01 = ws[ws.fault_rate == 0.01]
    assert ws01.loc["fap", "accuracy"] > ws01.loc["unmitigated", "accuracy"]
    ws25 = ws[ws.fault_rate == 0.25]
    assert ws25.loc["fap-t", "accuracy"] > ws25.loc["fap", "accuracy"]
    pruned = json.loads(ws25.loc["fap", "extra"])["pruned_fraction"]
    assert 0.15 < pruned < 0.35  # about a quarter of the weights sit in faulty PEs


def test_resume_runs_nothing_new(study_rows):
    store, run_id, kw = study_rows
    before = len(store.results(run_id=run_id))
    assert run_study("faultlab.systolic", store=store, **kw) == run_id
    assert len(store.results(run_id=run_id)) == before


def test_bad_option_is_pinned():
    with pytest.raises(ValueError, match="dataflows of study faultlab.systolic must be"):
        get_study("faultlab.systolic").make_config(dataflows=("row-stationary",))
