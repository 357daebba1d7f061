"""``hwlab figure STUDY --out FILE``: every study's key figure as valid SVG / PDF / PNG, titled
and named after study, model, dataset and run date; honest intervals; clear errors."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from app._demo import OWN_MODEL, seed_store
from hwlab import figures
from hwlab._figure_data import implied_count, proportion_ci, summarize, with_metrics
from hwlab.cli import main
from hwlab.store import Store

# The demo store's rows cover these studies' key figures; a study whose figure is tested on its
# own real rows instead is named here with the test that does it.
OWN_ROWS = {"faultlab.formats": "tests/faultlab/test_formats_study.py::"
                                "test_key_figure_from_the_studys_own_rows",
            "faultlab.training": "tests/faultlab/test_training_study.py::"
                                 "test_key_figure_from_the_studys_own_rows",
            "faultlab.lm": "tests/faultlab/test_lm_study.py::"
                           "test_key_figure_from_the_studys_own_rows"}
STUDIES = [s for s in figures.figure_studies() if s not in OWN_ROWS]  # from the registry


def test_every_key_figure_is_drawn_by_a_test():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for study, test in OWN_ROWS.items():
        path, _, name = test.partition("::")
        assert f"def {name}(" in (root / path).read_text(), (study, test)
        assert study in figures.figure_studies()  # still a study with a key figure


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("fig") / "s.sqlite")
    seed_store(s)
    return s


def _texts(svg_path) -> str:
    root = ET.parse(svg_path).getroot()  # raises on a malformed SVG
    assert root.tag.endswith("svg")
    return " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))


@pytest.mark.parametrize("study", STUDIES)
def test_figure_writes_valid_svg_and_pdf_for_each_study(store, tmp_path, study, capsys):
    date = store.runs()["started"].iloc[0][:10]
    svg, pdf = tmp_path / "f.svg", tmp_path / "f.pdf"
    assert main(["figure", study, "--store", str(store.path), "--out", str(svg)]) == 0
    assert main(["figure", study, "--store", str(store.path), "--out", str(pdf)]) == 0
    text = _texts(svg)
    assert study in text and f"run {date}" in text
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2000
    assert f"wrote {pdf}" in capsys.readouterr().out


def test_figure_names_a_folder_output_after_study_model_dataset_date(store, tmp_path):
    date = store.runs()["started"].iloc[0][:10]
    assert main(["figure", "faultlab.memory", "--store", str(store.path), "--out",
                 str(tmp_path)]) == 0
    (out,) = tmp_path.iterdir()
    assert out.name == f"faultlab.memory_lenet5_mnist5k_{date}.svg"
    png = tmp_path / "x.png"
    assert main(["figure", "faultlab.campaign", "--model", OWN_MODEL, "--dataset", "mnist5k",
                 "--store", str(store.path), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["figure", "faultlab.memory", "--model", "vgg-s"],
     "model/dataset of figure must be a pair with rows (lenet5/mnist5k), got 'vgg-s/*'"),
    (["figure", "nope"], "study of figure must be one of faultlab.campaign,"),
    (["figure", "faultlab.memory", "--out", "x.jpg"],
     "--out of hwlab figure must be a folder or a file name ending in .svg, .pdf or .png"),
])
def test_figure_errors_are_one_line_exit_2(store, tmp_path, capsys, argv, message):
    argv = [*argv, "--store", str(store.path)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "f.svg")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "f.svg").exists()


def test_fault_figure_bands_stay_in_unit_interval_and_trials_shown(store):
    chart, _ = figures.figure(store, "spiking.faults")
    data = chart.to_dict()["datasets"]
    rows = [r for d in data.values() for r in d]
    summary = [r for r in rows if r.get("kind") == "summary"]
    assert summary and all(not r["band"] for r in summary)  # 2 trials: no band ...
    assert sum(r.get("kind") == "trial" for r in rows) == 2 * len(summary)  # ... the trials
    chart, _ = figures.figure(store, "faultlab.clipact")
    rows = [r for d in chart.to_dict()["datasets"].values() for r in d]
    bands = [r for r in rows if r.get("kind") == "summary" and r["band"]]
    assert bands and all(0 <= r["lo"] <= r["mean"] <= r["hi"] <= 1 for r in bands)
    assert any(r.get("kind") == "clean" for r in rows)  # the fault-free reference line


def test_proportion_ci_equals_faultlab_and_stays_in_unit_interval():
    from faultlab import proportion_ci as fl_ci

    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 8))
        v = rng.integers(0, 101, m) / 100
        n = rng.integers(1, 200, m).astype(float)
        for counts in (None, n):
            got, want = proportion_ci(v, counts), fl_ci(v, counts)
            assert got == pytest.approx(want, nan_ok=True)
            assert 0 <= got[1] <= got[0] <= got[2] <= 1
    # the case: two trials that disagree (a Student-t band would leave [0, 1])
    p, lo, hi = proportion_ci([0.05, 0.95], [300, 300])
    assert 0 <= lo < p < hi <= 1


def test_implied_count_is_a_lower_bound_of_the_true_count():
    assert implied_count([487 / 500, 488 / 500]) == 500  # 487/500 and 122/125: lcm 500
    assert implied_count([0.5, 0.25]) == 4  # true count 300: 4 divides it, interval wider
    assert implied_count([1 / 3 + 1e-6]) is None  # not a count fraction
    s = summarize(with_metrics_frame([487 / 500, 488 / 500, 490 / 500]), ["g"])
    assert s["lo"].iloc[0] == pytest.approx(proportion_ci([487 / 500, 488 / 500, 490 / 500],
                                                          [500] * 3)[1])


def with_metrics_frame(values):
    import pandas as pd

    return pd.DataFrame({"g": "a", "accuracy": values, "extra": None})


def test_metric_meanings_never_share_an_axis(store):
    m = with_metrics(store.results())
    by = m.groupby("study")
    assert by["inference_ms"].count()["hwlab.zoo"] == 5
    assert by["trial_ms"].count()["faultlab.campaign"] > 0
    assert by["train_step_ms"].count()["localtrain.compare"] == 14
    assert by["inference_ms"].count().get("localtrain.compare", 0) == 0
    assert by["train_memory_bytes"].count()["localtrain.compare"] == 14
    assert by["model_bytes"].count().get("localtrain.compare", 0) == 0
    mem = m[(m["study"] == "faultlab.memory") & (m["variant"] == "secded72_64")]
    assert mem["protection_overhead"].dropna().unique().tolist() == [12.5]
