"""AppTest of every page over a seeded store: no exception, the expected charts with the expected
data, and plain messages where a module has no rows."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from app._frames import mean_ci
from hwlab.store import Store

PAGES = ("overview", "faults", "spiking", "quantum", "localtrain", "runs", "run_study")


def charts_of(at):
    return at.get("vega_lite_chart")


@pytest.fixture(scope="module")
def seeded_rows(seeded_path):
    return Store(seeded_path).results()


def test_overview_scatter_and_pareto_front(app_at, seeded_path, seeded_rows, ui):
    at = app_at(seeded_path)
    assert not at.exception
    assert [e.value for e in at.title] == ["Overview"]
    (chart,) = charts_of(at)
    spec = ui.chart_spec(chart)
    dots, _front = spec["layer"]
    assert dots["encoding"]["x"]["field"] == "memory_bytes"
    assert dots["encoding"]["x"]["scale"]["type"] == "log"  # memory spans > 50x
    assert dots["encoding"]["y"]["field"] == "accuracy"
    assert "run_id" in [t.get("field") for t in dots["encoding"]["tooltip"]]
    assert "pick" in [p["name"] for p in spec["params"]]  # click selection over run_id
    pts = ui.frame_with(chart, "series", "memory_bytes", "accuracy", "run_id")
    # every row with both metrics is one point here (no trials in those studies)
    both = seeded_rows[seeded_rows["memory_bytes"].notna() & seeded_rows["accuracy"].notna()]
    assert len(pts) == len(both) == 16
    # the Pareto front: lowest memory for a given accuracy, checked against a brute force
    x, y = both["memory_bytes"].astype(float).to_numpy(), both["accuracy"].to_numpy()
    keep = [i for i in range(len(x))
            if not any(x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i])
                       for j in range(len(x)))]
    fr = [f for f in ui.chart_frames(chart) if "front" in f.columns]
    assert len(fr) == 1
    assert sorted(fr[0]["memory_bytes"].astype(float)) == sorted(x[keep])


def test_overview_other_metrics_and_log_toggle(app_at, seeded_path, ui):
    at = app_at(seeded_path)
    at.selectbox(key="ov-x").set_value("fault_rate").run()
    assert not at.exception
    spec = ui.chart_spec(charts_of(at)[0])
    assert spec["layer"][0]["encoding"]["x"]["field"] == "fault_rate"
    assert spec["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    at.toggle(key="ov-logx-fault_rate").set_value(False).run()
    spec = ui.chart_spec(charts_of(at)[0])
    assert spec["layer"][0]["encoding"]["x"]["scale"].get("type") != "log"
    pts = ui.frame_with(charts_of(at)[0], "fault_rate", "accuracy", "n")
    # trials averaged: one point per (run, variant, fault model, rate); the seeded layer/bit
    # rows share one rate and variant, so they are one more point of 128 rows
    fl = pts[pts["module"] == "faultlab"]
    assert len(fl) == 4 * 3 * 7 + 1
    assert (fl.loc[fl["variant"] != "unprotected", "n"] == 5).all()


def test_faults_page(app_at, seeded_path, seeded_rows, ui):
    at = app_at(seeded_path, "faults")
    assert not at.exception
    assert [e.value for e in at.title] == ["Faults"]
    curve, formats, heat, thresholds = charts_of(at)
    data = ui.frame_with(curve, "variant", "fault_model", "fault_rate", "mean", "lo", "hi")
    assert set(data["variant"]) == {"unprotected", "clipact-zero", "clipact-cap", "ranger"}
    assert set(data["fault_model"]) == {"bitflip", "stuck0", "stuck1"}
    assert len(data) == 4 * 3 * 7
    # one point against an independent computation from the store's rows
    rows = seeded_rows[(seeded_rows["variant"] == "clipact-zero")
                       & (seeded_rows["fault_model"] == "bitflip")
                       & (seeded_rows["fault_rate"] == 1e-4) & (seeded_rows["method"] == "clipact")]
    hit = data[(data["variant"] == "clipact-zero") & (data["fault_model"] == "bitflip")
               & np.isclose(data["fault_rate"], 1e-4)]
    assert hit["mean"].iloc[0] == pytest.approx(rows["accuracy"].mean())
    assert hit["lo"].iloc[0] < hit["mean"].iloc[0] < hit["hi"].iloc[0]
    assert "column" in ui.chart_spec(curve)["facet"]  # one panel per fault model
    fmt = ui.frame_with(formats, "format", "mean")
    assert set(fmt["format"]) == {"float32", "float16", "bfloat16", "int8"}
    cells = ui.frame_with(heat, "layer", "bit", "accuracy")
    assert len(cells) == 4 * 32
    worst = cells.groupby("bit")["accuracy"].mean().idxmin()
    assert worst == 30  # the exponent's top bit dominates in the seeded rows
    th = ui.frame_with(thresholds, "layer", "threshold", "variant")
    assert set(th["variant"]) == {"clipact-zero", "clipact-cap"} and len(th) == 6


def test_faults_format_choice(app_at, seeded_path, ui):
    at = app_at(seeded_path, "faults")
    at.selectbox(key="faults-format").set_value("int8").run()
    assert not at.exception
    data = ui.frame_with(charts_of(at)[0], "variant", "mean")
    assert set(data["variant"]) == {"unprotected"} and len(data) == 7


def test_spiking_page_slider_moves_point(app_at, seeded_path, ui):
    at = app_at(seeded_path, "spiking")
    assert not at.exception
    chart, _resilience = charts_of(at)
    curve = ui.frame_with(chart, "method", "variant", "timesteps", "accuracy")
    assert len(curve) >= 16
    rules = ui.frame_with(chart, "kind", "threshold", "variant")
    assert set(rules["variant"]) == {"dynamic-confidence", "entropy", "margin", "oracle-any",
                                     "oracle-stay"}
    assert set(rules["kind"]) == {"rule", "oracle"}
    slider = at.select_slider(key="spiking-thr-dynamic-confidence")
    assert slider.value == pytest.approx(0.7, abs=0.03)  # starts at the chosen threshold
    at = slider.set_value(0.99).run()
    cur = [f for f in ui.chart_frames(charts_of(at)[0])
           if list(f.columns) == ["rule", "threshold", "timesteps", "accuracy"] and len(f) == 1]
    assert cur and cur[0]["threshold"].iloc[0] == pytest.approx(0.99)
    assert cur[0]["timesteps"].iloc[0] == pytest.approx(15.0)  # the end of the sweep
    assert at.metric[2].value == "15"
    resil = ui.frame_with(charts_of(at)[1], "fault_rate", "mean", "variant")
    assert set(resil["variant"]) == {"fixed-T12", "dynamic-confidence"} and len(resil) == 4


def test_spiking_page_per_threshold_rows(app_at, seeded_path, ui):
    # the "direct" rows store the threshold curve as one row per threshold instead
    at = app_at(seeded_path, "spiking")
    at.selectbox(key="spiking-method").set_value("direct").run()
    assert not at.exception
    slider = at.select_slider(key="spiking-thr-dynamic-confidence")
    assert len(slider.options) == 12
    rules = ui.frame_with(charts_of(at)[0], "kind", "threshold", "variant")
    assert "dynamic-confidence-sweep" not in set(rules["variant"])  # drawn as the curve instead


def test_quantum_page(app_at, seeded_path, seeded_rows, ui):
    at = app_at(seeded_path, "quantum")
    assert not at.exception
    (chart,) = charts_of(at)
    data = ui.frame_with(chart, "variant", "mean", "lo", "hi")
    assert sorted(set(data["variant"])) == ["level-0", "level-1", "level-2"]
    rows = ui.chart_spec(chart)["vconcat"]  # accuracy, params / latency, train time
    assert [len(r["hconcat"]) for r in rows] == [2, 2]
    q = seeded_rows[seeded_rows["module"] == "quantum"]
    expect = mean_ci(q, ["variant"]).set_index("variant")["mean"]
    got = ui.chart_frames(chart)
    acc = next(f for f in got if len(f) == 3 and f["mean"].between(0.8, 1).all())
    assert acc.set_index("variant")["mean"].to_dict() == pytest.approx(expect.to_dict())


def test_localtrain_memory_only_rows(app_at, tmp_path, ui):
    # localtrain.compare with epochs=0 measures memory and latency only (accuracy NULL)
    store = Store(tmp_path / "mem.sqlite")
    run = store.open_run("localtrain.compare", {"epochs": 0})
    store.add_results(run, [{"key": f"{r}|K={k}", "module": "localtrain", "method": r,
                             "variant": f"K={k}", "model": "resnet20", "memory_bytes": m}
                            for r, k, m in (("e2e", 1, 4_000_000), ("man", 4, 2_000_000),
                                            ("dgl", 4, 1_500_000))])
    at = app_at(store.path, "localtrain")
    assert not at.exception
    assert "have no accuracy" in ui.texts(at)
    bars = ui.frame_with(at.get("vega_lite_chart")[0], "label", "memory_bytes")
    assert sorted(bars["memory_bytes"]) == [1_500_000, 2_000_000, 4_000_000]
    assert at.dataframe[0].value["memory_vs_e2e"].tolist() == [0.375, 0.5]


def test_localtrain_page(app_at, seeded_path, ui):
    at = app_at(seeded_path, "localtrain")
    assert not at.exception
    (chart,) = charts_of(at)
    pts = ui.frame_with(chart, "method", "variant", "memory_bytes", "mean")
    assert set(pts["method"]) == {"e2e", "dgl", "infopro", "man", "auglocal"}
    assert len(pts) == 1 + 4 * 3
    ref = [f for f in ui.chart_frames(chart) if len(f) == 1]  # the reference lines' data
    e2e = pts[pts["method"] == "e2e"].iloc[0]
    assert ref and ref[0]["mean"].iloc[0] == pytest.approx(e2e["mean"])
    assert ref[0]["memory_bytes"].iloc[0] == pytest.approx(e2e["memory_bytes"])
    assert len(ui.chart_spec(chart)["layer"]) == 3  # points, E2E accuracy, E2E memory


def test_runs_page_config_compare_and_export(app_at, seeded_path, seeded_rows):
    at = app_at(seeded_path, "runs")
    assert not at.exception
    assert len(at.dataframe[0].value) == 5  # five runs
    run_id = at.selectbox(key="runs-one").value
    assert json.loads(at.json[0].value) == Store(seeded_path).config(run_id)
    at.selectbox(key="runs-a").set_value(at.selectbox(key="runs-a").options[0]).run()
    both = at.dataframe[-1].value
    a, b = at.selectbox(key="runs-a").value, at.selectbox(key="runs-b").value
    assert a != b and "accuracy A" in both and "accuracy B" in both
    at.radio(key="runs-export-format").set_value("Parquet").run()
    assert not at.exception
    assert at.get("download_button")[0].proto.label == "Download Parquet"


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_export_bytes_round_trip_writes_nothing(seeded_path, seeded_rows, tmp_path, monkeypatch,
                                                fmt):
    from app import _queries as q

    monkeypatch.setenv("HWLAB_STORE", seeded_path)
    monkeypatch.chdir(tmp_path)
    data = q.export_bytes(fmt, "quantum.creep")
    back = (pd.read_csv if fmt == "CSV" else pd.read_parquet)(io.BytesIO(data))
    expect = seeded_rows[seeded_rows["study"] == "quantum.creep"]
    assert len(back) == len(expect) == 9
    assert back["accuracy"].tolist() == pytest.approx(expect["accuracy"].tolist())
    assert len((pd.read_csv if fmt == "CSV" else pd.read_parquet)(
        io.BytesIO(q.export_bytes(fmt)))) == len(seeded_rows)
    assert list(tmp_path.iterdir()) == []  # nothing written on the server
    with pytest.raises(ValueError, match="fmt of export_bytes must be 'CSV' or 'Parquet'"):
        q.export_bytes("../../etc/passwd")


@pytest.mark.parametrize("page", ["faults", "spiking", "quantum", "localtrain"])
def test_module_pages_say_plainly_when_empty(app_at, tmp_path, page, ui):
    store = Store(tmp_path / "zoo-only.sqlite")
    run = store.open_run("hwlab.zoo", {"model": "lenet5"})
    store.add_results(run, [{"key": "k", "module": "hwlab", "model": "lenet5",
                             "accuracy": 0.97, "params": 61706, "latency_ms": 0.3}])
    at = app_at(store.path, page)
    assert not at.exception
    assert not charts_of(at)
    module = {"localtrain": "localtrain"}.get(page, page if page != "faults" else "faultlab")
    assert f"No {module} results in the store yet" in ui.texts(at)


def test_foreign_store_is_refused_and_untouched(app_at, tmp_path, ui):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"not a database at all" * 10)
    before = path.read_bytes()
    at = app_at(path)
    assert "must be an hwlab store" in ui.texts(at)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.sqlite"]


def test_new_rows_show_up_and_only_their_run_is_read_again(app_at, tmp_path, monkeypatch, ui):
    from app._demo import seed_store

    path = tmp_path / "live.sqlite"
    store = Store(path)
    seed_store(store)
    reads = []
    original = Store.results

    def counting(self, study=None, run_id=None, module=None):
        reads.append(run_id)
        return original(self, study=study, run_id=run_id, module=module)

    monkeypatch.setattr(Store, "results", counting)
    at = app_at(path, "localtrain")
    assert len(reads) == 5 and len(set(reads)) == 5  # one read per run
    n_before = len(ui.frame_with(at.get("vega_lite_chart")[0], "method", "mean"))
    run = store.open_run("localtrain.compare", {"extra": "run"})  # a study writing now
    store.add_results(run, [{"key": "k", "module": "localtrain", "method": "man",
                             "variant": "K=16", "model": "lenet5", "dataset": "mnist5k",
                             "accuracy": 0.8, "memory_bytes": 1_000_000}])
    reads.clear()
    at.run()  # no Reload: the store's files changed, so the cached queries are stale
    assert not at.exception
    assert reads == [run]  # only the new run was read
    pts = ui.frame_with(at.get("vega_lite_chart")[0], "method", "variant", "mean")
    assert len(pts) == n_before + 1 and "K=16" in set(pts["variant"])


def test_pages_leave_the_shared_cached_rows_unchanged(app_at, seeded_path, seeded_rows,
                                                      monkeypatch):
    from app import _queries as q

    at = app_at(seeded_path)
    for page in PAGES[1:]:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, page
    monkeypatch.setenv("HWLAB_STORE", seeded_path)
    cached = q.results()  # the shared (not copied) frame every page read from
    pd.testing.assert_frame_equal(cached, seeded_rows.astype({c: "str" for c in q.TEXT_COLUMNS}),
                                  check_dtype=False)


def test_faults_page_computes_the_vulnerability_heatmap(app_at, tmp_path, ui):
    store = Store(tmp_path / "v.sqlite")
    run = store.open_run("faultlab.campaign", {"dtype": "float32"})
    store.add_results(run, [{"key": f"r{i}", "module": "faultlab", "variant": "float32",
                             "fault_model": "bitflip", "fault_rate": 1e-4, "trial": i,
                             "accuracy": 0.5 + 0.1 * i, "model": "mlp", "dataset": "digits"}
                            for i in range(3)])
    at = app_at(store.path, "faults")
    assert not at.exception and len(at.get("vega_lite_chart")) == 1  # curve only, no heatmap
    assert "No layer x bit rows in the store yet" in ui.texts(at)
    at.text_input(key="vuln-model").set_value("mlp")
    at.text_input(key="vuln-bits").set_value("30, 2")
    at.number_input(key="vuln-trials").set_value(2)
    at.number_input(key="vuln-eval").set_value(100)
    at.button[0].click().run()
    assert not at.exception
    rows = store.results(study="faultlab.vulnerability")
    assert len(rows) == 3 * 2  # the mlp's 3 weight layers x 2 bits
    heat = ui.frame_with(at.get("vega_lite_chart")[-1], "layer", "bit", "accuracy")
    assert len(heat) == 6
    by_bit = heat.groupby("bit")["accuracy"].mean()
    assert by_bit[30] < by_bit[2]  # the top exponent bit hurts, a mantissa LSB does not


def test_filters_cascade_to_combinations_that_exist(app_at, tmp_path, ui):
    store = Store(tmp_path / "two.sqlite")
    for model, dataset, acc in (("lenet5", "mnist5k", 0.9), ("mlp", "digits", 0.6)):
        run = store.open_run("faultlab.campaign", {"model": model})
        store.add_results(run, [{"key": f"{t}", "module": "faultlab", "variant": "float32",
                                 "fault_model": "bitflip", "fault_rate": 1e-4, "trial": t,
                                 "accuracy": acc, "model": model, "dataset": dataset}
                                for t in range(2)])
    at = app_at(store.path, "faults")
    assert at.selectbox(key="faults-model").value == "lenet5"
    assert at.selectbox(key="faults-dataset").options == ["mnist5k"]  # not digits
    curve = ui.frame_with(at.get("vega_lite_chart")[0], "mean", "variant")
    assert curve["mean"].tolist() == [pytest.approx(0.9)]
    at.selectbox(key="faults-model").set_value("mlp").run()
    assert at.selectbox(key="faults-dataset").value == "digits"
    curve = ui.frame_with(at.get("vega_lite_chart")[0], "mean", "variant")
    assert curve["mean"].tolist() == [pytest.approx(0.6)]
