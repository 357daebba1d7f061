"""The faultlab.campaign study (what `hwlab run faultlab.campaign` runs)."""

from __future__ import annotations

import json

import pytest
import torch

import faultlab as fl
from hwlab import zoo
from hwlab.store import Store
from hwlab.studies import get_study, run_study


def test_study_int8_bits_resumable(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    kw = {"model": "lenet5", "dataset": "mnist5k", "rates": "1e-3,1e-2", "trials": "2",
          "bits": "7", "dtype": "int8", "fault": "stuck1"}  # as the CLI passes them
    run_id = run_study("faultlab.campaign", store=store, **kw)
    df = store.results(run_id=run_id)
    assert len(df) == 1 + 2 * 2 and set(df["variant"]) == {"int8"}
    assert set(df["fault_model"]) == {"none", "stuck1"}
    assert sorted(df["fault_rate"].dropna().unique()) == [0.0, 1e-3, 1e-2]
    extra = [json.loads(e) for e in df["extra"]][1:]
    q = fl.quantize_int8(zoo.pretrained("lenet5", "mnist5k"))
    words = [p.numel() for _, p in fl.eligible_parameters(q)]
    assert all(p.dtype == torch.int8 for _, p in fl.eligible_parameters(q))
    assert all(e["bits"] == [7] and e["eligible_bits"] == sum(words) for e in extra)
    clean = df[df["fault_model"] == "none"]["accuracy"].iloc[0]
    assert clean > 0.9
    # stuck-at-1 on the int8 sign bit: a positive weight q becomes q - 128 (two's complement)
    assert df[df["fault_rate"] == 1e-2]["accuracy"].max() < clean
    config = store.config(run_id)
    assert config["dtype"] == "int8" and config["fingerprints"]["weights"]
    again = run_study("faultlab.campaign", store=store, **kw)
    assert again == run_id and len(store.results(run_id=run_id)) == 5


def test_study_options():
    study = get_study("faultlab.campaign")
    assert study.make_config(quick=True).model == "mlp"
    assert study.make_config(rates="1e-7,1e-6").rates == (1e-7, 1e-6)
    with pytest.raises(ValueError, match=r"fault of faultlab.campaign must be one of bitflip, "
                                         r"stuck0, stuck1, got 'stuck2'"):
        study.run(study.make_config(fault="stuck2"), None)
