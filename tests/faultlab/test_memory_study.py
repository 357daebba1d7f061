"""The faultlab.memory study: the issue's SEC-DED check on lenet5/mnist5k, nesting, voltages."""

from __future__ import annotations

import json

import pytest

from faultlab._memory_study import MEMORY_STUDY, summarize
from hwlab.store import Store
from hwlab.studies import get_study, run_study


def _run(tmp_path, **over):
    store = Store(tmp_path / "m.sqlite")
    rid = run_study("faultlab.memory", store=store, **over)
    return store, rid, store.results(run_id=rid)


def test_secded_keeps_lenet5_clean_accuracy_at_ber_1e4_unprotected_collapses(tmp_path):
    """The issue's check: at BER 1e-4 SEC-DED(72,64) stays within 1 point of clean, the
    unprotected model falls below 40 % (lenet5 on mnist5k, 8 nested maps, ~3 s warm zoo)."""
    _, _, df = _run(tmp_path, faults="bitflip", rates="1e-4", trials=8)
    table = summarize(df).iloc[0]
    assert table.clean > 0.95
    assert abs(table.secded72_64 - table.clean) <= 0.01
    assert table.unprotected < 0.40
    sec = df[(df.variant == "secded72_64") & df.fault_model.notna()].extra.map(json.loads)
    assert all(e["corrected_words"] > 100 for e in sec)  # ~200 faulty bits per map, corrected


def test_quick_config_structure_nesting_and_resume(tmp_path, same_rows_as_reference):
    over = {"rates": "1e-5,1e-4,1e-3", "trials": 2}  # the quick rates; lenet5 / mnist5k
    store, rid, df = _run(tmp_path, **over)
    assert len(df) == 3 + 3 * 4 * 3 * 2  # clean per protection + points
    same_rows_as_reference(df, "memory_study_reference")  # as the study's own loop gave them
    ex = df.extra.map(json.loads)
    df = df.assign(units=ex.map(lambda e: e.get("units")),
                   raw=ex.map(lambda e: e.get("faulty_bits")))
    faulty = df[df.fault_model.notna()]
    for (_, _, _), g in faulty.groupby(["variant", "fault_model", "trial"]):
        g = g.sort_values("fault_rate")
        assert g.units.is_monotonic_increasing and g.seed.nunique() == 1  # nested per trial
    flips = faulty[faulty.fault_model == "bitflip"]
    assert flips.groupby(["fault_rate", "trial"]).units.nunique().max() == 1  # same draws
    assert set(df.memory_bytes[df.variant == "secded72_64"]) == \
        {int(b * 72 / 64) for b in df.memory_bytes[df.variant == "unprotected"]}
    assert run_study("faultlab.memory", store=store, **over) == rid
    assert len(store.results(run_id=rid)) == len(df)  # resumed: nothing ran twice


def test_voltage_sweep_rows_and_config_errors(tmp_path):
    (tmp_path / "curve.csv").write_text("voltage,ber\n1.0,1e-6\n0.8,1e-3\n")
    over = {"faults": "bitflip", "protections": "unprotected,secded72_64", "trials": 1,
            "voltages": "1.0,0.9", "curve": str(tmp_path / "curve.csv")}
    _, _, df = _run(tmp_path, **over)
    rows = df[df.fault_model.notna()].sort_values(["variant", "fault_rate"])
    ex = rows.extra.map(json.loads)
    assert sorted({e["voltage"] for e in ex}) == [0.9, 1.0]
    by_v = {e["voltage"]: (e["ber"], e["relative_energy"]) for e in ex}
    assert by_v[1.0] == pytest.approx((1e-6, 1.0))
    assert by_v[0.9] == pytest.approx((10 ** -4.5, 0.81))
    with pytest.raises(ValueError, match=r"curve of study faultlab.memory must be a CSV of "
                                         r"voltage,ber points when voltages are given"):
        get_study("faultlab.memory").make_config(voltages="0.9")
    with pytest.raises(ValueError, match=r"faults of study faultlab.memory must be a non-empty "
                                         r"tuple from bitflip, burst, row, asym"):
        MEMORY_STUDY.make_config(faults="bitflip,column")
    cfg = MEMORY_STUDY.make_config(quick=True, faults="row,asym", burst_length="8")
    assert cfg.faults == ("row", "asym") and cfg.burst_length == 8 and cfg.trials == 3
