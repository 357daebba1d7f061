"""The faultlab.formats study: a plan per storage format on the one trial engine; element and
scale faults apart; resumable; rows name the format, the target and the stored bytes."""

from __future__ import annotations

import json

import pytest

from hwlab.store import Store
from hwlab.studies import get_study, run_study


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("formats") / "f.sqlite")
    run_id = run_study("faultlab.formats", store=store, quick=True,
                       formats=("float32", "int4", "mxfp4"), rates=(1e-3, 1e-1), trials=2)
    return store, run_id


def test_rows_per_format_and_target(quick):
    store, run_id = quick
    df = store.results(run_id=run_id)
    got = {(r.variant, r.fault_model) for r in df.itertuples()}
    assert got == {("float32", "none"), ("float32", "bitflip-all"), ("int4", "none"),
                   ("int4", "bitflip-all"), ("int4", "bitflip-element"), ("mxfp4", "none"),
                   ("mxfp4", "bitflip-all"), ("mxfp4", "bitflip-element"),
                   ("mxfp4", "bitflip-scale"), ("mxfp4", "bitflip-protected")}
    assert len(df) == 3 + 7 * 2 * 2
    clean = df[df.fault_model == "none"].set_index("variant")
    assert (clean.accuracy > 0.8).all()
    mem = clean.memory_bytes
    assert mem["int4"] < mem["mxfp4"] < mem["float32"] / 6  # 4-bit codes (+ scales) vs fp32
    faulty = df[df.fault_model != "none"]
    targets = {json.loads(e)["target"] for e in faulty.extra}
    assert targets == {"all", "element", "scale", "protected"}
    mx = faulty[faulty.variant == "mxfp4"].assign(
        n=[json.loads(e)["n_faults"] for e in faulty[faulty.variant == "mxfp4"].extra])
    per = mx.set_index(["fault_model", "fault_rate", "trial"]).n
    for rate in (1e-3, 1e-1):  # protected maps are the all-words maps, filtered (paired)
        for t in range(2):
            assert per["bitflip-protected", rate, t] <= per["bitflip-all", rate, t]
    prot = mx[mx.fault_model == "bitflip-protected"].memory_bytes.iloc[0]
    assert mem["mxfp4"] < prot < mem["mxfp4"] * 1.01  # the scale words' check bits
    scale = faulty[faulty.fault_model == "bitflip-scale"]
    eligible = {json.loads(e)["eligible_bits"] for e in scale.extra}
    assert eligible == {8 * (mem["mxfp4"] - mem["int4"])}  # the scale bytes alone
    hi = faulty[faulty.fault_rate == 0.1].groupby("fault_model").accuracy.mean()
    assert hi["bitflip-scale"] < clean.accuracy["mxfp4"]  # a scale fault spoils a whole block


def test_resume_runs_nothing_new(quick):
    store, run_id = quick
    n = len(store.results(run_id=run_id))
    again = run_study("faultlab.formats", store=store, quick=True,
                      formats=("float32", "int4", "mxfp4"), rates=(1e-3, 1e-1), trials=2)
    assert again == run_id and len(store.results(run_id=run_id)) == n


def test_config_refuses_unknown_format():
    study = get_study("faultlab.formats")
    with pytest.raises(ValueError, match=r"formats of .* must be"):
        study.make_config(formats=("fp16",))


def test_key_figure_from_the_studys_own_rows(quick, tmp_path, capsys):
    """`hwlab figure faultlab.formats` on real rows (the demo store has none of this study)."""
    import xml.etree.ElementTree as ET

    from hwlab.cli import main

    store, _ = quick
    svg = tmp_path / "f.svg"
    assert main(["figure", "faultlab.formats", "--store", str(store.path), "--out",
                 str(svg)]) == 0
    root = ET.parse(svg).getroot()  # raises on a malformed SVG
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "faultlab.formats" in text and f"wrote {svg}" in capsys.readouterr().out


def test_bfloat16_is_a_format_of_the_study(tmp_path):
    """bfloat16 weights (cast, as accelerators store them) beside float32, on the same rates."""
    store = Store(tmp_path / "b.sqlite")
    run_id = run_study("faultlab.formats", store=store, quick=True,
                       formats=("float32", "bfloat16"), rates=(1e-2,), trials=2)
    df = store.results(run_id=run_id).set_index("key")
    assert df.loc["bfloat16|clean", "memory_bytes"] * 2 == df.loc["float32|clean",
                                                                  "memory_bytes"]
    assert abs(df.loc["bfloat16|clean", "accuracy"] - df.loc["float32|clean", "accuracy"]) < 0.02
    assert set(df.fault_model) == {"none", "bitflip-all"}
