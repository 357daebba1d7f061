"""The quantum page on a real (tiny) quantum.creep run with controls, the paired verdict and the
device-noise sweep: what the study stored is what the page shows."""

from __future__ import annotations

import json

import pytest

from hwlab.store import Store
from quantum._study import CREEP_STUDY

ARMS = {"datasets": ("synthetic",), "levels": (0, 2), "seeds": (0, 1), "epochs": 1,
        "batch_size": 64, "reps": 2, "channels": (2, 2), "train_limit": 128, "test_limit": 64,
        "latency_batch": 8, "latency_repeats": 1, "fault_trials": 0, "controls": True,
        "noise_aware": 0.05, "noise_dataset": "synthetic", "noise_kinds": ("depolarizing",
                                                                          "shots"),
        "noise_levels": (0.1, 0.5), "noise_shots": (10,)}


@pytest.fixture(scope="module")
def arms_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("arms") / "hwlab.sqlite"
    store = Store(path)
    CREEP_STUDY.run(CREEP_STUDY.make_config(**ARMS), store)
    return str(path), store.results()


def test_quantum_page_shows_controls_verdict_and_noise_curves(app_at, arms_store, ui):
    path, df = arms_store
    at = app_at(path, "quantum")
    assert not at.exception
    levels, noise = at.get("vega_lite_chart")  # no fault sweep in this run
    acc = next(f for f in ui.chart_frames(levels) if "band" in f and f["mean"].between(0, 1).all())
    train = df[df["method"] == "creep"]
    expect = train.groupby("variant")["accuracy"].mean()
    assert set(acc["variant"]) == {"level-0", "level-2", "control-2", "noisy-2"}
    assert acc.set_index("variant")["mean"].to_dict() == pytest.approx(expect.to_dict())
    table = next(t.value for t in at.dataframe  # hybrid vs control, paired
                 if "hybrid - control (points, 95% CI)" in t.value.columns)
    paired = json.loads(df[df["method"] == "creep-paired-mean"]["extra"].iloc[0])
    d = paired["hybrid_minus_control"]
    assert table["hybrid - control (points, 95% CI)"].iloc[0].startswith(f"{d['mean']:+.2f}")
    assert paired["verdict"] in ui.texts(at)
    data = ui.frame_with(noise, "kind", "series", "fault_model")
    summ = data[data["kind"] == "summary"]
    assert set(summ["series"]) == {"level-2", "noisy-2"}
    assert set(summ["fault_model"]) == {"depolarizing", "shots"}
    rows = df[(df["method"] == "creep-noise") & (df["fault_model"] == "depolarizing")
              & (df["variant"] == "level-2") & (df["fault_rate"] == 0.5)]
    got = summ[(summ["series"] == "level-2") & (summ["fault_model"] == "depolarizing")
               & (summ["x"] == 0.5)]
    assert got["mean"].iloc[0] == pytest.approx(rows["accuracy"].mean())
    assert (data["kind"] == "clean").any()  # the noiseless reference line
