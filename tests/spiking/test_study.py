"""The spiking.dynamic-confidence study: its rows, an independent re-check, resume."""

from __future__ import annotations

import json

import pytest
import torch

import spiking as sp
from hwlab.data import load
from hwlab.seeds import torch_threads
from hwlab.store import Store
from hwlab.studies import get_study, run_study
from spiking._pipeline import build_snn

OVERRIDES = {"methods": ("converted",), "max_steps": 8, "trials": 1, "latency_steps": (1, 8)}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("dc") / "s.sqlite")
    run_id = run_study("spiking.dynamic-confidence", store=store, quick=True, **OVERRIDES)
    return store, run_id


def test_rows_cover_every_variant(study_run):
    store, run_id = study_run
    df = store.results(run_id=run_id)
    clean = df[df.fault_rate.isna()]
    expected = {f"fixed-T{t}" for t in range(1, 9)} | {
        "dynamic-confidence", "entropy", "margin", "oracle-any", "oracle-stay"}
    assert set(clean.variant) == expected and len(clean) == len(expected)
    assert (df.module == "spiking").all() and (df.method == "converted").all()
    assert clean.accuracy.between(0, 1).all()
    oracles = clean[clean.variant.str.startswith("oracle")]
    assert oracles.latency_ms.isna().all()  # not realisable live: NULL, never 0
    assert clean.set_index("variant").loc["fixed-T8", "latency_ms"] > 0
    assert clean.set_index("variant").loc["fixed-T5", "latency_ms"] != 0  # NULL or measured
    faults = df[df.fault_model == "bitflip"]
    assert len(faults) == 2 and set(faults.fault_rate) == {1e-5}


def test_threshold_reapplied_independently_gives_the_stored_row(study_run):
    store, run_id = study_run
    cfg = get_study("spiking.dynamic-confidence").make_config(quick=True, **OVERRIDES)
    row = store.results(run_id=run_id).set_index("key").loc["converted|dynamic-confidence"]
    extra = json.loads(row["extra"])
    assert extra["live_matches_offline"] is True and extra["constant"] == 30.0
    train, val, test = (load(cfg.dataset, s, seed=cfg.seed) for s in ("train", "val", "test"))
    with torch_threads(cfg.threads), torch.random.fork_rng(devices=[]):  # as the study runs
        torch.manual_seed(cfg.seed)
        net = build_snn("converted", cfg, train, val)
        rec = sp.record(net, test, cfg.max_steps, batch_size=cfg.eval_batch, seed=cfg.seed)
    again = sp.apply_rule(rec, "dynamic-confidence", extra["threshold"])
    assert again.accuracy == pytest.approx(row["accuracy"], abs=1e-12)
    assert again.mean_steps == pytest.approx(row["timesteps"], abs=1e-12)
    paper = sp.apply_rule(rec, "dynamic-confidence", 0.6)  # the official demo's threshold
    assert paper.accuracy == pytest.approx(extra["paper_threshold_accuracy"], abs=1e-12)


def test_rerun_resumes_without_work(study_run, monkeypatch):
    store, run_id = study_run
    n = len(store.results(run_id=run_id))

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run must not build or train an SNN again")

    monkeypatch.setattr("spiking._study.build_snn", no_training)  # counted, not timed
    again = run_study("spiking.dynamic-confidence", store=store, quick=True, **OVERRIDES)
    assert again == run_id and len(store.results(run_id=run_id)) == n


def test_bad_study_options_are_refused():
    study = get_study("spiking.dynamic-confidence")
    # one template from the declared constraints (#12): "PARAM of study NAME must be ..."
    with pytest.raises(ValueError, match="methods of study spiking.dynamic-confidence must be a "
                                         "non-empty tuple from converted, direct, got"):
        study.run(study.make_config(quick=True, methods=("hybrid",)), store=None)
    with pytest.raises(ValueError, match="direct_model of study spiking.dynamic-confidence must "
                                         "be one of"):
        study.run(study.make_config(quick=True, direct_model="vgg-s"), store=None)
