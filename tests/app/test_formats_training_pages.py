"""The Number formats and Training faults pages: what the store holds is what they show."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwlab.store import Store

FORMATS = {"float32": 246_400, "int8": 61_600, "mxfp4": 32_725}


def _formats_rows():
    rng = np.random.default_rng(0)
    rows = []
    for fmt, nbytes in FORMATS.items():
        rows.append({"key": f"{fmt}|clean", "variant": fmt, "fault_model": "none", "fault_rate": 0.0,
                         "trial": 0, "accuracy": 0.97, "memory_bytes": nbytes, "model": "lenet5"})
        for target in ("all", "scale"):
            for rate in (1e-4, 1e-3, 1e-2):
                for t in range(3):
                    rows.append({
                        "key": f"{fmt}|{target}|{rate!r}|trial={t}", "variant": fmt,
                        "fault_model": f"bitflip-{target}", "fault_rate": rate, "trial": t,
                        "memory_bytes": nbytes, "model": "lenet5",
                        "accuracy": float(np.clip(0.97 - rate * 40 * rng.random(), 0, 1)),
                        "extra": {"target": target}})
    return rows


OUTCOMES = ("masked", "drift", "recovered", "degraded", "nan")


def _training_rows():
    rng = np.random.default_rng(1)
    rows = [{"key": "clean", "variant": "clean", "fault_model": "none", "fault_rate": 0.0, "trial": 0,
                 "accuracy": 0.95, "latency_ms": 20.0, "model": "lenet5",
                 "extra": {"outcome": "reference", "steps": 64}}]
    for rate in (1e-7, 1e-6):
        for policy in ("none", "rollback"):
            for t in range(6):
                cls = OUTCOMES[int(rng.integers(0, len(OUTCOMES)))]
                rows.append({"key": f"gradients|{rate!r}|trial={t}|{policy}", "variant": policy,
                                 "fault_model": "bitflip-gradients", "fault_rate": rate, "trial": t,
                                 "accuracy": 0.9, "latency_ms": 21.0 + t, "model": "lenet5",
                                 "extra": {"outcome": cls, "latency_steps": t}})
    return rows


def _store(path, study, rows):
    store = Store(path)
    run_id = store.open_run(study, {"dataset": "mnist5k"})
    store.add_results(run_id, [dict(r, module="faultlab", dataset="mnist5k", seed=0)
                               for r in rows])
    store.finish_run(run_id)
    return str(path), store.results()


@pytest.fixture(scope="module")
def formats_store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("fmt") / "hwlab.sqlite", "faultlab.formats",
                  _formats_rows())


@pytest.fixture(scope="module")
def training_store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("trn") / "hwlab.sqlite", "faultlab.training",
                  _training_rows())


def test_formats_page_curves_and_bytes_at_one_ber(app_at, formats_store, ui):
    path, df = formats_store
    at = app_at(path, "formats")
    assert not at.exception
    _curves, points = at.get("vega_lite_chart")
    data = ui.frame_with(points, "variant", "memory_bytes", "accuracy", "lo", "hi")
    at_rate = df[(df["fault_model"] == "bitflip-all") & (df["fault_rate"] == 1e-3)]
    expect = at_rate.groupby("variant")["accuracy"].mean()
    got = data.set_index("variant")["accuracy"]
    assert got.to_dict() == pytest.approx(expect.to_dict())
    assert (data["lo"] <= data["accuracy"]).all() and (data["accuracy"] <= data["hi"]).all()
    assert data.set_index("variant")["memory_bytes"].to_dict() == FORMATS
    table = at.dataframe[0].value
    assert list(table["format"]) == list(expect.sort_values(ascending=False).index)


def test_training_page_outcome_shares_equal_the_rows(app_at, training_store, ui):
    path, df = training_store
    at = app_at(path, "training")
    assert not at.exception
    table = at.dataframe[0].value
    faulty = df[df["fault_rate"] > 0]
    cls = faulty["extra"].map(lambda e: json.loads(e)["outcome"])
    for (rate, policy), g in faulty.groupby(["fault_rate", "variant"]):
        row = table[(table["fault_rate"] == rate) & (table["policy"] == policy)].iloc[0]
        assert row["runs"] == len(g)
        for c in OUTCOMES:
            assert row[c] == pytest.approx(float((cls[g.index] == c).mean()))
    shares = ui.frame_with(at.get("vega_lite_chart")[0], "outcome", "share")
    assert shares.groupby(["variant", "rate"])["share"].sum().round(12).eq(1).all()
    assert "Fault-free reference: accuracy 0.9500" in ui.texts(at)


@pytest.mark.parametrize(("page", "study"), [("formats", "faultlab.formats"),
                                             ("training", "faultlab.training")])
def test_empty_store_names_the_study(app_at, tmp_path, ui, page, study):
    at = app_at(tmp_path / "empty.sqlite", page)
    assert not at.exception
    assert f"`{study}`" in ui.texts(at)
