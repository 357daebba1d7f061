"""Study localtrain.compare: rows in the store, memory figures, resume, options."""

from __future__ import annotations

import json
import math
import re

import pytest

from hwlab.store import Store
from hwlab.studies import get_study
from localtrain._study import COMPARE_STUDY

OPTS = {"models": ("resnet20",), "dataset": "synthetic", "rules": ("e2e", "man"), "ks": (2, 20),
        "epochs": 1, "train_size": 128, "batch_size": 32, "memory_batch": 16,
        "latency_repeats": 1}


def test_registered_under_its_entry_point():
    assert get_study("localtrain.compare") is COMPARE_STUDY


def test_rows_memory_and_resume(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    config = COMPARE_STUDY.make_config(**OPTS)
    run_id = COMPARE_STUDY.run(config, store)
    df = store.results(run_id=run_id).set_index("key")
    # K=20 exceeds resnet20's 10 units and is skipped; E2E is one K=1 row
    assert sorted(df.index) == ["resnet20|e2e|K=1", "resnet20|man|K=2"]
    assert set(df["module"]) == {"localtrain"} and set(df["dataset"]) == {"synthetic"}
    assert list(df.loc[["resnet20|e2e|K=1", "resnet20|man|K=2"], "variant"]) == ["K=1", "K=2"]
    assert df["accuracy"].between(0, 1).all()
    e2e, man = df.loc["resnet20|e2e|K=1"], df.loc["resnet20|man|K=2"]
    assert man["memory_bytes"] < e2e["memory_bytes"]
    assert man["params"] > e2e["params"]  # auxiliary nets counted
    extra = json.loads(man["extra"])
    assert extra["batch_size"] == 16 and extra["cuts"][-1][1] == 10
    assert extra["saved_peak_bytes"] < man["memory_bytes"]
    # the live-tensor peak also sees transient outputs and gradients: above the saved peak
    assert extra["live_peak_bytes"] > extra["saved_peak_bytes"]
    assert extra["live_memory_bytes"] == (extra["live_peak_bytes"] + extra["param_bytes"]
                                          + extra["optimizer_bytes"])
    assert all(v > 0 for v in df["latency_ms"])
    before = len(store.results(run_id=run_id))
    assert COMPARE_STUDY.run(config, store) == run_id  # resumed: nothing new to do
    assert len(store.results(run_id=run_id)) == before


def test_memory_only_rows_have_null_accuracy(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    config = COMPARE_STUDY.make_config(**{**OPTS, "rules": ("e2e",), "epochs": 0})
    df = store.results(run_id=COMPARE_STUDY.run(config, store))
    assert len(df) == 1 and math.isnan(df["accuracy"].iloc[0])
    assert df["memory_bytes"].iloc[0] > 0


def test_bad_options():
    # the Config validates itself from its declared constraints (one template, #12)
    with pytest.raises(ValueError, match=r"models of study localtrain.compare must be a model "
                                         r"spec: a zoo name .*got 'resnet99'"):
        COMPARE_STUDY.items(COMPARE_STUDY.make_config(models=("resnet99",)))
    with pytest.raises(ValueError, match=r"rules of study localtrain.compare must be a non-empty "
                                         r"tuple from e2e, checkpoint, dgl, infopro, man, "
                                         r"auglocal, featrecon, sgr"):
        COMPARE_STUDY.items(COMPARE_STUDY.make_config(rules=("bp",)))
    with pytest.raises(ValueError, match=r"ks of study localtrain.compare must be a non-empty "
                                         r"tuple of integers >= 2, got \(1,\)"):
        COMPARE_STUDY.items(COMPARE_STUDY.make_config(ks=(1,)))
    quick = COMPARE_STUDY.make_config(quick=True)
    assert len(COMPARE_STUDY.items(quick)) == 8  # resnet20: E2E + 7 rules at K=4


def test_a_rule_above_e2e_memory_is_logged_and_memory_balance_is_the_default(tmp_path, caplog):
    import torch

    import localtrain as lt
    from hwlab.models import create_model

    opts = {"models": ("vgg-s",), "dataset": "synthetic", "rules": ("e2e", "infopro", "dgl"),
            "ks": (2,), "epochs": 0, "memory_batch": 16, "latency_repeats": 1}
    assert COMPARE_STUDY.make_config().balance == "memory"  # the study's default: InfoPro*
    store = Store(tmp_path / "s.sqlite")
    ratios, logged = {}, {}
    for balance in ("layers", "memory"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="localtrain._study"):
            run_id = COMPARE_STUDY.run(COMPARE_STUDY.make_config(**opts, balance=balance), store)
        df = store.results(run_id=run_id).set_index("method")
        ratios[balance] = df["memory_bytes"] / df.loc["e2e", "memory_bytes"]
        logged[balance] = caplog.text
        warned = {r.getMessage().split()[1] for r in caplog.records}
        assert warned == set(ratios[balance][ratios[balance] > 1].index)
    # measured (batch 16, 1x8x8): layers: InfoPro 1.30x, DGL 1.12x E2E; memory: 1.01x, 0.99x
    assert ratios["layers"]["infopro"] > 1.2 and ratios["layers"]["dgl"] > 1.05
    assert ratios["memory"]["infopro"] < ratios["layers"]["infopro"] - 0.2
    assert ratios["memory"]["dgl"] < 1.0
    assert re.search(r"localtrain.compare: infopro K=2 on vgg-s needs 1\.\d\dx the training "
                     r"memory of E2E \(\d+ > \d+ bytes\)", logged["layers"])
    torch.manual_seed(0)
    rule = lt.make_rule("infopro", create_model("vgg-s", (1, 8, 8), 4), K=2, in_shape=(1, 8, 8))
    assert rule.balance == "memory"  # the public default of a memory-saving rule


def test_papers_setting_rows_are_read_against_their_own_e2e(tmp_path):
    from localtrain._paper import paper_ratio

    opts = {**OPTS, "rules": ("e2e", "checkpoint"), "ks": (4,), "epochs": 0,
            "paper_models": ("resnet32",), "paper_batches": (4,)}
    config = COMPARE_STUDY.make_config(**opts)
    keys = list(COMPARE_STUDY.items(config))
    assert "resnet32|checkpoint|K=4|3x32x32|b=4" in keys and "resnet32|e2e|K=1|3x32x32|b=4" in keys
    store = Store(tmp_path / "s.sqlite")
    df = store.results(run_id=COMPARE_STUDY.run(config, store)).set_index("key")
    paper = df[df["dataset"] == "synthetic-3x32x32"]
    assert len(paper) == 2 and paper["accuracy"].isna().all()
    assert set(paper["variant"]) == {"K=1 b=4", "K=4 b=4"}
    extra = {k: json.loads(v) for k, v in paper["extra"].items()}
    e2e, ck = extra["resnet32|e2e|K=1|3x32x32|b=4"], extra["resnet32|checkpoint|K=4|3x32x32|b=4"]
    assert e2e["batch_size"] == 4 and ck["live_memory_bytes"] < e2e["live_memory_bytes"]
    # a published ratio only where a paper measured this setting (ResNet-110, batch 1024)
    assert ck["paper_ratio"] is None
    assert paper_ratio("resnet110", 1024, "infopro", 4)[0] == 0.374


def test_paper_memory_row_errors():
    from localtrain._paper import paper_memory_row

    with pytest.raises(ValueError, match=r"model of paper_memory_row must be one of resnet32, "
                                         r"resnet110, got 'resnet50'"):
        paper_memory_row("resnet50", "e2e", 1, 8)
    with pytest.raises(ValueError, match=r"batch of paper_memory_row must be .*got 0"):
        paper_memory_row("resnet32", "e2e", 1, 0)
