"""`hwlab results` filters, columns and groups read by the store; `hwlab figure` draws a fault
sweep from the store's sums per point, with the data the rows give."""

import json

import pandas as pd
import pytest

from app._demo import seed_store
from hwlab import figures
from hwlab._figure_data import study_points
from hwlab.cli import main
from hwlab.store import Store


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "hwlab.sqlite"
    store = Store(path)
    seed_store(store, n_rows=2000)
    return store


def test_results_columns_filters_and_limit(seeded, capsys):
    assert main(["results", "--store", str(seeded.path), "--study", "faultlab.campaign",
                 "--columns", "key,accuracy", "--limit", "3", "--format", "csv"]) == 0
    out = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(out.columns) == ["key", "accuracy"] and len(out) == 3
    rows = seeded.results(study="faultlab.campaign")
    assert out["key"].tolist() == rows["key"].head(3).tolist()


def test_results_by_groups_in_the_store(seeded, capsys):
    assert main(["results", "--store", str(seeded.path), "--module", "faultlab", "--by",
                 "study,fault_model", "--format", "csv"]) == 0
    out = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    rows = seeded.results(module="faultlab")
    want = rows.groupby(["study", "fault_model"])["accuracy"].agg(["size", "mean"])
    got = out.set_index(["study", "fault_model"])
    assert got.loc[want.index, "accuracy n"].tolist() == want["size"].tolist()
    pd.testing.assert_series_equal(got.loc[want.index, "accuracy mean"], want["mean"],
                                   check_names=False, rtol=1e-12)


def test_results_narrowed_export(seeded, tmp_path, capsys):
    out = tmp_path / "camp.csv"
    assert main(["results", "--store", str(seeded.path), "--dataset", "digits", "--out",
                 str(out)]) == 0
    df = pd.read_csv(out)
    assert len(df) == int((seeded.results()["dataset"] == "digits").sum()) > 0
    assert set(df["dataset"]) == {"digits"}


@pytest.mark.parametrize("study", ["faultlab.campaign", "faultlab.clipact"])
def test_fault_sweep_figure_from_points_equals_figure_from_rows(seeded, study):
    def data(chart):
        spec = chart.to_dict()
        frames = [pd.DataFrame(v) for v in spec.get("datasets", {}).values()]
        assert len(frames) == 1
        f = frames[0].drop(columns=[c for c in ("band",) if c not in frames[0]])
        return f.sort_values([c for c in ("kind", "fault_model", "series", "x", "value")
                              if c in f], ignore_index=True)

    runs = seeded.runs()
    from_rows, stem_rows = figures.figure_rows(seeded.results(study=study), runs, study)
    from_points, stem_points = figures.figure_rows(study_points(seeded, study), runs, study)
    assert stem_rows == stem_points
    a, b = data(from_rows), data(from_points)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for c in a.columns:
        if a[c].dtype.kind == "f":
            pd.testing.assert_series_equal(a[c], b[c], rtol=1e-9, atol=1e-12)
        else:
            assert a[c].astype(str).tolist() == b[c].astype(str).tolist(), c
    assert json.dumps(from_rows.to_dict()["title"]) == json.dumps(from_points.to_dict()["title"])
