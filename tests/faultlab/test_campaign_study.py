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
    assert len(df) == 1 + 2 * 2 and set(df["dtype"]) == {"int8"}
    assert set(df["variant"]) == {"baseline"}
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
    assert study.make_config(metrics="accuracy,sdc").metrics == ("accuracy", "sdc")
    with pytest.raises(ValueError, match=r"fault of study faultlab.campaign must be one of "
                                         r"bitflip, stuck0, stuck1, got 'stuck2'"):
        study.make_config(fault="stuck2")
    with pytest.raises(ValueError, match=r"metrics of study faultlab.campaign must be a "
                                         r"non-empty tuple from accuracy, sdc, critical_sdc"):
        study.make_config(metrics="accuracy,f1")
    with pytest.raises(ValueError, match=r"rates of study faultlab.campaign must be a "
                                         r"non-empty tuple of numbers in \(0, 1\]"):
        study.make_config(rates="-1e-4")


USER = """
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        return self.fc((h + self.conv(x)).relu().flatten(1))


def factory(in_shape=(1, 8, 8), num_classes=10):
    return Net(in_shape, num_classes)
"""


def test_study_on_a_user_model_weights_and_npz_data(tmp_path, monkeypatch):
    import numpy as np

    (tmp_path / "usermods_campaign.py").write_text(USER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import usermods_campaign

    g = torch.Generator().manual_seed(0)
    net = usermods_campaign.factory((1, 6, 6), 3)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    x = torch.rand(90, 1, 6, 6, generator=g)
    with torch.no_grad():
        y = net.eval()(x).argmax(1)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    store = Store(tmp_path / "s.sqlite")
    run_id = run_study("faultlab.campaign", store=store, model="usermods_campaign:factory",
                       weights=str(tmp_path / "w.pt"), dataset=f"npz:{tmp_path / 'd.npz'}",
                       rates="1e-3", trials="3", metrics="accuracy,sdc")
    df = store.results(run_id=run_id)
    assert len(df) == 4 and set(df["model"]) == {"usermods_campaign:factory"}
    assert df["sdc"].iloc[0] == 0 and df["accuracy"].notna().all() and df["sdc"].notna().all()
    assert df["critical_sdc"].isna().all()  # not asked for: NULL
