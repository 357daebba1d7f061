"""The spiking.faults study on a tiny config: accuracy and mean steps per rule and fault rate, on
paired neuron maps."""

from __future__ import annotations

import json

import pytest

from hwlab.store import Store
from hwlab.studies import get_study, run_study

RULES = {"fixed-T*", "fixed-T16", "dynamic-confidence", "entropy", "margin", "oracle-any"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("nf") / "s.sqlite")
    kw = {"rates": (0.02, 0.2), "trials": 1}
    run_id = run_study("spiking.faults", store=store, quick=True, **kw)
    return store, run_id, kw


def test_rows_per_rule_and_rate_on_paired_maps(study):
    store, run_id, _ = study
    df = store.results(run_id=run_id)
    df["extra"] = df["extra"].map(json.loads)
    faults = {"dead", "saturated", "threshold-up", "threshold-down", "leak"}
    for method in ("converted", "direct"):
        m = df[df.method == method]
        clean = m[m.fault_model == "none"]
        assert set(clean.variant) == RULES
        faulty = m[m.fault_model != "none"]
        assert set(faulty.fault_model) == faults and set(faulty.fault_rate) == {0.02, 0.2}
        # every (fault, rate, trial) has one row per rule, all from the same neuron map
        groups = faulty.groupby(["fault_model", "fault_rate", "trial"])
        assert len(groups) == 5 * 2
        for _, g in groups:
            assert set(g.variant) == RULES and g.accuracy.notna().all()
            assert g.timesteps.notna().all() and (g.timesteps >= 1).all()
            assert len({e["map"] for e in g.extra}) == 1
            by = g.set_index("variant")
            assert all(by.loc["oracle-any", "accuracy"] >= by.loc[r, "accuracy"] for r in RULES)
        # paired across fault kinds: the same neurons are faulty at one (rate, trial)
        n = faulty.assign(n=faulty.extra.map(lambda e: e["n_faulty"]))
        assert (n.groupby(["fault_rate", "trial"]).n.nunique() == 1).all()
        # nested across rates: more faulty neurons at the higher rate
        per = n.groupby(["fault_rate", "trial"]).n.first().unstack("fault_rate")
        assert (per[0.2] > per[0.02]).all()
        # saturating 20 % of the neurons moves the predictions
        sat = faulty[(faulty.fault_model == "saturated") & (faulty.fault_rate == 0.2)]
        assert sat.extra.map(lambda e: e["correct_to_wrong"] + e["wrong_to_correct"]).max() > 0


def test_resume_and_bad_option(study):
    store, run_id, kw = study
    before = len(store.results(run_id=run_id))
    assert run_study("spiking.faults", store=store, quick=True, **kw) == run_id
    assert len(store.results(run_id=run_id)) == before
    with pytest.raises(ValueError, match="faults of study spiking.faults must be a non-empty tuple from dead, saturated"):
        run_study("spiking.faults", store=store, quick=True, faults=("zombie",))
    assert get_study("spiking.faults").Config().rates == (0.001, 0.01, 0.05, 0.1)
