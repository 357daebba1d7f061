"""The faultlab.lm study: rows per site and stage, the corpus hash in every row, resume, figures,
the PVF table (also on vit-tiny, with its fused qkv split into q, k, v)."""

import json

import pytest
import torch

from faultlab.lm._pvf import FIELDS, pvf_table, vit_components
from faultlab.lm._study import LM_STUDY, SITES
from hwlab import figures
from hwlab.data import load
from hwlab.store import Store

TINY = {"iters": 30, "n_layer": 1, "d": 16, "rates": (1e-3,), "trials": 1, "windows": 4, "prompt": 40,
        "pvf_trials": 2}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """One tiny run of the study (its own HWLAB_HOME), shared by the tests that read it."""
    import os

    home = tmp_path_factory.mktemp("lmhome")
    old, os.environ["HWLAB_HOME"] = os.environ.get("HWLAB_HOME"), str(home)
    try:
        store = Store(home / "s.sqlite")
        cfg = LM_STUDY.make_config(**TINY)
        yield store, cfg, LM_STUDY.run(cfg, store)
    finally:
        if old is None:
            os.environ.pop("HWLAB_HOME", None)
        else:
            os.environ["HWLAB_HOME"] = old


def test_study_rows_hash_resume_and_figures(lm_run):
    store, cfg, run = lm_run
    df = store.results(run_id=run)
    sweep = df[df.variant != "pvf"]
    assert sorted(sweep.variant.unique()) == sorted([*SITES, "fault-free"])
    assert len(sweep) == 1 + len(SITES) and len(df) == len(sweep) + 9 * 3  # PVF: 9 components x 3 fields
    sha = load("pydoc", "val").sha256
    extras = [json.loads(e) for e in sweep.extra]
    assert all(e["text_sha256"] == sha for e in extras)
    clean = sweep[sweep.fault_model == "none"].iloc[0]
    e = json.loads(clean.extra)
    assert clean.sdc == 0 and e["gen_exact_match"] == 1 and e["first_divergence"] == 64
    assert e["bpc"] == pytest.approx(clean.loss / 0.6931471805599453)
    stages = {v: json.loads(x)["stage"] for v, x in zip(sweep.variant, sweep.extra)}
    assert stages["kv-prefill"] == "prefill" and stages["act-decode"] == "decode"
    assert LM_STUDY.run(cfg, store) == run and len(store.results(run_id=run)) == len(df)
    assert figures.lm_sweep(df).to_dict() and figures.lm_pvf_heatmap(df).to_dict()
    chart, stem = figures.figure(store, "faultlab.lm")
    assert "faultlab.lm" in stem and chart.to_dict()


def test_key_figure_from_the_studys_own_rows(lm_run, tmp_path, capsys):
    import xml.etree.ElementTree as ET

    from hwlab.cli import main

    store, _, _ = lm_run
    svg, pdf = tmp_path / "f.svg", tmp_path / "f.pdf"
    assert main(["figure", "faultlab.lm", "--store", str(store.path), "--out", str(svg)]) == 0
    assert main(["figure", "faultlab.lm", "--store", str(store.path), "--out", str(pdf)]) == 0
    text = " ".join(t.text or "" for t in ET.parse(svg).getroot().iter() if t.tag.endswith("text"))
    assert "faultlab.lm · char-gpt · pydoc" in text and "kv-prefill" in text
    assert pdf.read_bytes()[:5] == b"%PDF-" and f"wrote {pdf}" in capsys.readouterr().out


def test_pvf_on_vit_tiny_flips_exactly_and_restores():
    from hwlab.models import create_model

    torch.manual_seed(0)
    net = create_model("vit-tiny", in_shape=(1, 8, 8), num_classes=10).eval()
    comps = vit_components(net)
    assert comps["q"][0][1] == slice(0, 64) and comps["head"] == [("7.weight", None)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    rows = pvf_table(net, lambda: net(x), {c: comps[c] for c in ("q", "norm")}, trials=6, seed=0)
    assert [(r["component"], r["field"]) for r in rows] == [
        (c, f) for c in ("q", "norm") for f in FIELDS]
    assert all(r["pvf_low"] <= r["pvf"] <= r["pvf_high"] for r in rows)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())




def test_act_step_must_fall_inside_the_generation(tmp_path):
    from hwlab.errors import HwlabError

    with pytest.raises(HwlabError, match="act_step of study faultlab.lm must be a decode step "
                       "below 64 - prompt = 14"):
        LM_STUDY.run(LM_STUDY.make_config(**{**TINY, "prompt": 50, "act_step": 20}),
                     Store(tmp_path / "s.sqlite"))
