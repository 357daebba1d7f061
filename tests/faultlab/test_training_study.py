"""The faultlab.training study: rows, outcome classes, paired fault maps across policies."""

from __future__ import annotations

import json

import pytest

from faultlab._training_study import OUTCOMES, outcome
from hwlab.store import Store
from hwlab.studies import get_study


def test_outcome_classes_follow_the_reference():
    ref = 0.90
    assert outcome(True, True, False, False, 0.90, ref, 0.02) == "masked"
    assert outcome(False, True, False, False, 0.89, ref, 0.02) == "drift"
    assert outcome(False, True, True, False, 0.89, ref, 0.02) == "drift"  # seen, not acted on
    assert outcome(True, True, True, True, 0.90, ref, 0.02) == "recovered"
    assert outcome(False, True, True, True, 0.85, ref, 0.02) == "degraded"
    assert outcome(False, False, True, True, 0.10, ref, 0.02) == "nan"


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("training") / "s.sqlite")
    study = get_study("faultlab.training")
    cfg = study.make_config(model="mlp", dataset="digits", targets=("exp_avg",),
                            rates=(1e-5,), trials=2, policies=("none", "recompute"), epochs=1,
                            eval_size=200)
    run_id = study.run(cfg, store)
    again = study.run(cfg, store)  # resumed: nothing new
    df = store.results(run_id=run_id)
    assert again == run_id and len(store.results(run_id=run_id)) == len(df)
    return store, df


@pytest.fixture(scope="module")
def rows(stored):
    return stored[1]


def test_rows_one_reference_and_one_per_trial_and_policy(rows):
    assert len(rows) == 1 + 2 * 2
    clean = rows[rows["key"] == "clean"].iloc[0]
    assert clean["variant"] == "clean" and clean["fault_rate"] == 0 and clean["accuracy"] > 0.3
    faulty = rows[rows["key"] != "clean"]
    extras = [json.loads(e) for e in faulty["extra"]]
    assert {e["outcome"] for e in extras} <= set(OUTCOMES)
    assert all(e["target"] == "exp_avg" and e["n_faults"] > 0 for e in extras)
    assert set(faulty["fault_model"]) == {"bitflip-exp_avg"}
    # the policies of one trial meet the same faults (the maps come from the same seed)
    by = {(r.trial, r.variant): json.loads(r.extra) for r in faulty.itertuples()}
    for t in (0, 1):
        assert by[(t, "none")]["first_fault"] == by[(t, "recompute")]["first_fault"]
    assert all(r.latency_ms > 0 for r in rows.itertuples())


def test_key_figure_from_the_studys_own_rows(stored, tmp_path):
    import xml.etree.ElementTree as ET

    from hwlab.cli import main

    store, df = stored
    svg = tmp_path / "f.svg"
    assert main(["figure", "faultlab.training", "--store", str(store.path), "--out",
                 str(svg)]) == 0
    texts = " ".join(t.text or "" for t in ET.parse(svg).getroot().iter()
                     if t.tag.endswith("text"))
    assert "faultlab.training" in texts and "share of runs" in texts
    outcomes = {json.loads(e)["outcome"] for e in df[df["key"] != "clean"]["extra"]}
    assert all(o in texts for o in outcomes)  # the legend names every class that occurred
