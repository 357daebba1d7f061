"""The hwlab.zoo study: one real row per zoo entry, through run_study and through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from hwlab import cli
from hwlab.meters import model_bytes, param_count
from hwlab.models import create_model
from hwlab.store import Store
from hwlab.studies import get_study, run_study


def test_zoo_study_is_registered():
    study = get_study("hwlab.zoo")  # through its entry point (list_studies would import all)
    assert study.module == "hwlab"
    assert study.make_config() == study.Config(models=("lenet5",), dataset="mnist5k", seed=0)
    assert study.make_config(model="mlp").models == ("mlp",)


def test_zoo_rows_are_real_and_resumable(tmp_path):
    store = Store(tmp_path / "z.sqlite")
    calls = []
    run = run_study("hwlab.zoo", store=store, models="mlp", dataset="digits",
                    latency_repeats="5", progress=lambda *a: calls.append(a))
    df = store.results(run_id=run)
    assert len(df) == 1 and calls[-1][:2] == (1, 1)
    row = df.iloc[0]
    assert (row["module"], row["method"], row["model"], row["dataset"], row["variant"],
            row["seed"], row["key"]) == ("hwlab", "zoo", "mlp", "digits", "fp32", 0,
                                         "mlp|digits|s0")
    assert 0.85 <= row["accuracy"] <= 1.0  # an MLP on 8x8 digits
    net = create_model("mlp", in_shape=(1, 8, 8), num_classes=10)
    assert row["params"] == param_count(net) == sum(p.numel() for p in net.parameters())
    assert row["memory_bytes"] == sum(model_bytes(net).values()) == 4 * row["params"]
    assert 0 < row["latency_ms"] < 50  # per sample
    extra = json.loads(row["extra"])
    assert extra["latency_batch"] == 64 and extra["train_seconds"] > 0
    assert extra["latency_batch_median_ms"] == pytest.approx(64 * row["latency_ms"])
    for column in ("fault_model", "fault_rate", "trial", "timesteps"):
        assert row.isna()[column], column  # not measured: NULL, never 0
    assert run_study("hwlab.zoo", store=store, models=("mlp",), dataset="digits",
                     latency_repeats=5) == run  # resumed, nothing re-measured
    assert len(store.results()) == 1 and torch.get_num_threads() >= 1


def test_zoo_study_rejects_unknown_models_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"models of study hwlab.zoo must be a model spec: a zoo "
                                         r"name \(.*lenet5.*\), 'module.path:callable' or a "
                                         r"hwlab.models entry point, got 'lenet6'"):
        run_study("hwlab.zoo", store=tmp_path / "z.sqlite", models="mlp,lenet6")


def test_cli_run_then_results_prints_the_row(tmp_path, capsys):
    store = str(tmp_path / "cli.sqlite")
    assert cli.main(["run", "hwlab.zoo", "--model", "mlp", "--dataset", "digits",
                     "--latency-repeats", "5", "--store", store]) == 0
    assert "1 result rows" in capsys.readouterr().out
    assert cli.main(["results", "--store", store]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "accuracy" in out[0] and "latency_ms" in out[0]
    assert out[1].split()[:5] == ["mlp|digits|s0", "hwlab", "zoo", "mlp", "digits"]


def test_cli_bad_zoo_values_fail_before_any_work(tmp_path, capsys):
    store = tmp_path / "bad.sqlite"
    assert cli.main(["run", "hwlab.zoo", "--latency-batch", "0", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err == ("hwlab: error: latency_batch of study hwlab.zoo must be an integer >= 1, "
                   "got 0\n")
    assert not store.exists()  # nothing was created
