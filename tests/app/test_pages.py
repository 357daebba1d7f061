"""AppTest of every page over a store seeded with rows of every study: charts drawn, no error,
honest intervals, filters that never mix datasets, comparisons joined point by point."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from app._demo import OWN_MODEL
from hwlab.store import Store

PAGES = ("overview", "faults", "memory", "mitigation", "systolic", "spiking", "quantum",
         "localtrain", "figures", "runs", "run_study")


def charts_of(at):
    return at.get("vega_lite_chart")


@pytest.fixture(scope="module")
def seeded_rows(seeded_path):
    return Store(seeded_path).results()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_draws_and_no_band_leaves_unit_interval(app_at, seeded_path, ui, page):
    at = app_at(seeded_path, page)
    assert not at.exception, page
    assert not at.error, [e.value for e in at.error]
    charts = charts_of(at)
    assert charts, f"{page} drew no chart"
    for chart in charts:
        for f in ui.chart_frames(chart):
            if {"lo", "hi", "mean"} <= set(f) and f["mean"].dropna().between(0, 1).all():
                lo, hi = f["lo"].dropna(), f["hi"].dropna()
                assert (lo >= 0).all() and (hi <= 1).all(), (page, f[["lo", "hi"]].describe())
                ok = f[f["lo"].notna()]
                assert (ok["lo"] <= ok["mean"] + 1e-12).all() and (
                    ok["mean"] <= ok["hi"] + 1e-12).all()


def test_overview_front_uses_one_dataset(app_at, seeded_path, seeded_rows, ui):
    at = app_at(seeded_path)
    assert at.selectbox(key="ov-dataset").value == "mnist5k"  # the dataset with most rows
    assert at.selectbox(key="ov-dataset").options == ["digits", "mnist5k"]
    for dataset in ("mnist5k", "digits"):
        at.selectbox(key="ov-dataset").set_value(dataset).run()
        assert not at.exception
        chart = charts_of(at)[0]
        pts = ui.frame_with(chart, "series", "run_id", "dataset", "oracle")
        assert set(pts["dataset"]) == {dataset}
        fronts = [f for f in ui.chart_frames(chart) if "front" in f.columns]
        assert fronts and set(fronts[0]["dataset"]) == {dataset}
        assert not fronts[0]["oracle"].any()  # oracles are never on a front


def test_overview_axes_have_one_meaning_and_fixed_colours(app_at, seeded_path, ui):
    at = app_at(seeded_path)
    x_opts = at.selectbox(key="ov-x").options
    assert "fault_rate" not in x_opts and "Fault rate (per bit)" not in x_opts
    labels = set(x_opts)
    assert {"Weight storage (MiB)", "Peak training memory (MiB)",
            "Inference latency per sample (ms)", "Training step time (ms)"} <= labels
    spec = ui.chart_spec(charts_of(at)[0])
    assert spec["layer"][0]["encoding"]["x"]["field"] == "model_bytes"
    colors = spec["layer"][0]["encoding"]["color"]["scale"]
    palette = dict(zip(colors["domain"], colors["range"]))
    pts = ui.frame_with(charts_of(at)[0], "series", "model_bytes")
    # weight storage only: zoo, quantum and memory/mitigation rows, never training memory
    assert not pts["series"].str.startswith("localtrain").any()
    assert (pts["model_bytes"] < 5).all()  # MiB: the largest seeded model is 4.6 MiB
    at.selectbox(key="ov-x").set_value("Peak training memory (MiB)").run()
    spec2 = ui.chart_spec(charts_of(at)[0])
    c2 = spec2["layer"][0]["encoding"]["color"]["scale"]
    assert all(palette.get(s, c) == c for s, c in zip(c2["domain"], c2["range"]))
    pts2 = ui.frame_with(charts_of(at)[0], "series", "train_memory_bytes")
    assert set(pts2["series"]) <= {f"localtrain · {r}" for r in
                                   ("e2e", "dgl", "infopro", "man", "auglocal")}


def test_overview_excludes_aggregate_rows(app_at, seeded_path, ui):
    at = app_at(seeded_path)
    at.selectbox(key="ov-dataset").set_value("digits").run()
    at.selectbox(key="ov-x").set_value("Parameters").run()
    pts = ui.frame_with(charts_of(at)[0], "series", "params", "method")
    assert "creep-mean" not in set(pts["method"])
    quantum = pts[pts["series"] == "quantum · creep"]
    assert len(quantum) == 3 and (quantum["n"] == 2).all()  # per level: the two seeds, once


def test_overview_accuracy_at_ber_view(app_at, seeded_path, seeded_rows, ui):
    at = app_at(seeded_path)
    at.selectbox(key="ov-rel-ber").set_value(1e-4).run()
    rel = ui.frame_with(charts_of(at)[1], "memory", "clean", "at_ber", "study")
    mem = rel[(rel["study"] == "faultlab.memory") & (rel["variant"] == "secded72_64")]
    rows = seeded_rows[(seeded_rows["study"] == "faultlab.memory")
                       & (seeded_rows["variant"] == "secded72_64")
                       & (seeded_rows["fault_model"] == "bitflip")
                       & np.isclose(seeded_rows["fault_rate"], 1e-4)]
    assert mem["at_ber"].iloc[0] == pytest.approx(rows["accuracy"].mean())
    assert mem["memory"].iloc[0] == pytest.approx(245880 * 72 / 64 / 2**20)
    own = rel[rel["model"] == OWN_MODEL]  # a researcher's own model, like a zoo one
    assert len(own) == 1 and own["memory_source"].iloc[0] == "parameters x bytes of the format"


def test_faults_page_curves_formats_and_reference(app_at, seeded_path, seeded_rows, ui):
    at = app_at(seeded_path, "faults")
    assert at.selectbox(key="faults-study").value == "faultlab.campaign"
    assert (at.selectbox(key="faults-model").value, at.selectbox(key="faults-dataset").value) \
        == ("lenet5", "mnist5k")
    data = ui.frame_with(charts_of(at)[0], "kind", "series", "x", "mean")
    assert set(data.loc[data["kind"] == "summary", "series"]) == {"float32", "float16"}
    clean = data[data["kind"] == "clean"]
    assert clean.set_index("series")["mean"].to_dict() == {"float32": 0.978, "float16": 0.976}
    s = data[(data["kind"] == "summary") & (data["series"] == "float16") & (data["x"] == 1e-4)]
    rows = seeded_rows[(seeded_rows["dtype"] == "float16") & (seeded_rows["fault_rate"] == 1e-4)
                       & (seeded_rows["model"] == "lenet5")]
    assert s["mean"].iloc[0] == pytest.approx(rows["accuracy"].mean())
    assert s["n"].iloc[0] == 5 and s["band"].iloc[0]
    axis = ui.chart_spec(charts_of(at)[0])["spec"]["layer"][1]["encoding"]["x"]["axis"]
    assert axis["values"] == [1e-6, 1e-5, 1e-4, 1e-3]  # every stored rate labelled
    at.selectbox(key="faults-model").set_value(OWN_MODEL).run()  # own models like zoo ones
    own = ui.frame_with(charts_of(at)[0], "kind", "series", "n")
    summary = own[own["kind"] == "summary"]
    assert len(summary) == 4 and (summary["n"] == 3).all()
    assert "No layer x bit rows" in ui.texts(at) and "lenet5/mnist5k" in ui.texts(at)


def test_faults_heatmap_layers_in_network_order(app_at, seeded_path, ui):
    at = app_at(seeded_path, "faults")
    heat = next(c for c in charts_of(at)
                if any({"layer", "bit"} <= set(f) for f in ui.chart_frames(c)))
    spec = ui.chart_spec(heat)
    assert spec["encoding"]["y"]["sort"] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    cells = ui.frame_with(heat, "layer", "bit", "accuracy", "order")
    assert len(cells) == 5 * 32 and cells["accuracy"].between(0, 1).all()


def test_fault_model_choice_resets_when_its_options_change(app_at, seeded_path, ui):
    at = app_at(seeded_path, "faults")
    at.selectbox(key="faults-study").set_value("faultlab.clipact").run()
    at.multiselect(key="faults-models").set_value(["stuck1"]).run()
    at.selectbox(key="faults-study").set_value("faultlab.campaign").run()  # no stuck1 here
    assert not at.exception
    assert at.multiselect(key="faults-models").value == ["bitflip"]
    assert charts_of(at)  # the panel is not hidden by the stale choice


def test_memory_page(app_at, seeded_path, seeded_rows, ui):
    at = app_at(seeded_path, "memory")
    curves, words, volt, energy = charts_of(at)
    data = ui.frame_with(curves, "kind", "series", "fault_model")
    assert set(data["series"].dropna()) == {"unprotected", "parity-zero", "secded72_64"}
    assert set(data["fault_model"].dropna()) == {"bitflip", "burst", "row", "asym"}
    w = ui.frame_with(words, "outcome", "words", "variant")
    sec = w[(w["variant"] == "secded72_64") & (w["outcome"] == "corrected")
            & (w["fault_rate"] == 1e-3)]
    assert sec["words"].iloc[0] == 2000
    v = ui.frame_with(volt, "kind", "x", "mean")
    assert sorted(v.loc[v["kind"] == "summary", "x"].unique()) == [0.6, 0.7, 0.8, 0.9]
    e = ui.frame_with(energy, "kind", "x")
    assert sorted(e.loc[e["kind"] == "summary", "x"].unique()) == [0.44, 0.6, 0.79, 1.0]


def test_mitigation_pareto(app_at, seeded_path, ui):
    at = app_at(seeded_path, "mitigation")
    assert at.selectbox(key="mit-ber").value == 0.1
    pareto = charts_of(at)[0]
    pts = ui.frame_with(pareto, "variant", "overhead", "accuracy")
    assert pts.set_index("variant")["overhead"]["secded"] == pytest.approx(12.5)
    front = next(f for f in ui.chart_frames(pareto) if len(f) < len(pts))
    # brute force: a variant is on the front when no other is cheaper-or-equal and better
    x, y = pts["overhead"].to_numpy(), pts["accuracy"].to_numpy()
    keep = {pts["variant"].iloc[i] for i in range(len(x)) if not any(
        x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i]) for j in range(len(x)))}
    assert set(front["variant"]) == keep
    assert (pts["lo"] >= 0).all() and (pts["hi"] <= 1).all()


def test_runs_comparison_float32_vs_float16(app_at, seeded_path, seeded_rows, ui):
    runs = Store(seeded_path).runs()
    camp = runs[runs["study"] == "faultlab.campaign"]["run_id"].tolist()
    at = app_at(seeded_path, "runs")
    at.selectbox(key="runs-a").set_value(camp[0]).run()
    at.selectbox(key="runs-b").set_value(camp[1]).run()
    assert not at.exception and not at.warning  # same study: no warning
    both = next(d.value for d in at.dataframe if any("B - A" in str(c) for c in d.value.columns))
    assert len(both) == 5  # the clean point and four rates
    assert both["accuracy B - A"].notna().all() and (both["accuracy B - A"] != 0).all()
    assert both.loc[both["fault_rate"] == 0, "accuracy B - A"].iloc[0] == pytest.approx(-0.002)
    assert any("float32" in c for c in both.columns) and any("float16" in c for c in both.columns)
    a = seeded_rows[(seeded_rows["run_id"] == camp[0]) & (seeded_rows["fault_rate"] == 1e-4)]
    b = seeded_rows[(seeded_rows["run_id"] == camp[1]) & (seeded_rows["fault_rate"] == 1e-4)]
    hit = both[np.isclose(both["fault_rate"].fillna(-1), 1e-4)]
    assert hit["accuracy B - A"].iloc[0] == pytest.approx(b["accuracy"].mean()
                                                          - a["accuracy"].mean())
    long = ui.frame_with(charts_of(at)[-1], "side", "accuracy", "fault_rate")
    assert long["side"].nunique() == 2 and all("float" in s for s in long["side"].unique())
    assert "Joined on" in ui.texts(at) and "differ in dtype" in ui.texts(at)


def test_runs_comparison_never_averages_over_datasets(seeded_path):
    from app._frames import compare_runs

    df = Store(seeded_path).results()
    q = df[df["study"] == "quantum.creep"]
    both, keys, labels = compare_runs(q, q.assign(accuracy=q["accuracy"] + 0.01))
    assert "dataset" in keys and labels == {}
    lvl0 = both[(both["variant"] == "level-0") & (both["method"] == "creep")]
    assert len(lvl0) == 2  # digits and mnist5k apart, not their mean
    for ds, part in lvl0.groupby("dataset"):
        rows = q[(q["dataset"] == ds) & (q["variant"] == "level-0") & (q["method"] == "creep")]
        assert part["accuracy A"].iloc[0] == pytest.approx(rows["accuracy"].mean())


def test_runs_table_summary_columns_and_warning(app_at, seeded_path):
    at = app_at(seeded_path, "runs")
    table = at.dataframe[0].value
    for col in ("best accuracy", "accuracy at 1e-04", "peak training memory (MiB)",
                "mean steps"):
        assert col in table.columns, col
    lt = table[table["study"] == "localtrain.compare"]
    assert lt["peak training memory (MiB)"].iloc[0] == pytest.approx(48e6 * (1 + 2 / 2) / 1.5
                                                                     / 2**20)
    runs = Store(seeded_path).runs()
    at.selectbox(key="runs-a").set_value(runs["run_id"].iloc[0]).run()
    assert "different studies" in at.warning[0].value


def test_spiking_slider_starts_at_the_val_threshold(app_at, seeded_path, ui):
    at = app_at(seeded_path, "spiking")
    assert at.selectbox(key="spiking-study").value == "spiking.dynamic-confidence"
    slider = at.select_slider(key="spiking-thr-dynamic-confidence")
    assert slider.value == pytest.approx(0.72)  # the rule row's val-chosen threshold
    spec = ui.chart_spec(charts_of(at)[0])
    fixed = spec["layer"][0]
    assert fixed["encoding"]["color"]["scale"]["range"][0] == "#7f7f7f"  # grey, as the legend
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"][1] < 32  # zoomed to the rules
    at = slider.set_value(0.99).run()
    assert at.metric[2].value == "15"
    at.toggle(key="spiking-full").set_value(True).run()
    assert "domain" not in ui.chart_spec(charts_of(at)[0])["layer"][0]["encoding"]["x"]["scale"]


def test_spiking_neuron_faults(app_at, seeded_path, ui):
    at = app_at(seeded_path, "spiking")
    at.selectbox(key="spiking-study").set_value("spiking.faults").run()
    assert not at.exception
    data = ui.frame_with(charts_of(at)[0], "kind", "series", "fault_model")
    assert set(data["fault_model"].dropna()) == {"dead", "saturated"}
    trials = data[data["kind"] == "trial"]
    assert len(trials) == 5 * 2 * 3 * 2  # n = 2 < 3: every trial drawn, no band
    assert not data.loc[data["kind"] == "summary", "band"].any()


def test_quantum_levels_per_dataset_with_seeds(app_at, seeded_path, seeded_rows, ui):
    at = app_at(seeded_path, "quantum")
    levels, faults = charts_of(at)
    frames = ui.chart_frames(levels)
    dataset = at.selectbox(key="quantum-dataset").value
    acc = next(f for f in frames if "band" in f and f["mean"].between(0, 1).all())
    q = seeded_rows[(seeded_rows["method"] == "creep") & (seeded_rows["dataset"] == dataset)]
    expect = q.groupby("variant")["accuracy"].mean()
    assert acc.set_index("variant")["mean"].to_dict() == pytest.approx(expect.to_dict())
    seeds = [f for f in frames if list(f.columns) == ["variant", "value"]]
    assert seeds and len(seeds[0]) == 6  # two seeds per level drawn (n < 3)
    f = ui.frame_with(faults, "kind", "series")
    assert (f["kind"] == "clean").any()  # fault-free reference line


def test_localtrain_page_mib_lines_and_chance(app_at, seeded_path, ui):
    at = app_at(seeded_path, "localtrain")
    chart = charts_of(at)[0]
    pts = ui.frame_with(chart, "method", "variant", "memory_mib", "mean")
    e2e = pts[pts["method"] == "e2e"]
    assert e2e["memory_mib"].iloc[0] == pytest.approx(48e6 * 2 / 1.5 / 2**20)
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
             for layer in ui.chart_spec(chart)["layer"]]
    assert marks[0] == "line" and marks.count("rule") == 2  # E2E x2; chance is far below
    assert "here off the axis: 0.10" in ui.texts(at)
    at.selectbox(key="localtrain-model").set_value("vit-tiny").run()
    assert "At chance" in ui.texts(at)
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
             for layer in ui.chart_spec(charts_of(at)[0])["layer"]]
    assert marks.count("rule") == 1  # no E2E for this model; the chance line


def test_localtrain_memory_only_rows(app_at, tmp_path, ui):
    store = Store(tmp_path / "mem.sqlite")
    run = store.open_run("localtrain.compare", {"epochs": 0})
    store.add_results(run, [{"key": f"{r}|K={k}", "module": "localtrain", "method": r,
                             "variant": f"K={k}", "model": "resnet20", "dataset": "mnist5k",
                             "memory_bytes": m, "latency_ms": t}
                            for r, k, m, t in (("e2e", 1, 4 * 2**20, 10.0),
                                               ("man", 4, 2 * 2**20, 16.0),
                                               ("dgl", 4, 1.5 * 2**20, 12.5))])
    at = app_at(store.path, "localtrain")
    assert not at.exception
    assert "have no accuracy" in ui.texts(at)
    bars = ui.frame_with(charts_of(at)[0], "label", "memory_mib")
    assert sorted(bars["memory_mib"]) == [1.5, 2.0, 4.0]
    table = at.dataframe[0].value  # memory, time per step and accuracy on one view, E2E first
    assert table["method"].tolist() == ["e2e", "dgl", "man"]
    assert table["memory_vs_e2e"].tolist() == [1.0, 0.375, 0.5]
    assert table["step_ms"].tolist() == [10.0, 12.5, 16.0]
    assert table["step_vs_e2e"].tolist() == [1.0, 1.25, 1.6]
    assert table["accuracy"].isna().all()


@pytest.mark.parametrize("page", ["faults", "memory", "mitigation", "systolic", "spiking",
                                  "quantum", "localtrain"])
def test_module_pages_say_plainly_when_empty(app_at, tmp_path, page, ui):
    store = Store(tmp_path / "zoo-only.sqlite")
    run = store.open_run("hwlab.zoo", {"model": "lenet5"})
    store.add_results(run, [{"key": "k", "module": "hwlab", "model": "lenet5",
                             "dataset": "mnist5k", "accuracy": 0.97, "params": 61706,
                             "latency_ms": 0.3}])
    at = app_at(store.path, page)
    assert not at.exception and not charts_of(at)
    assert "in the store yet" in ui.texts(at)


def test_empty_state_names_what_exists_elsewhere(app_at, tmp_path, ui):
    store = Store(tmp_path / "two.sqlite")
    for model, dataset in (("lenet5", "digits"), ("lenet5", "mnist5k")):
        run = store.open_run("faultlab.campaign", {"model": model, "dataset": dataset})
        store.add_results(run, [{"key": f"{t}", "module": "faultlab", "variant": "baseline",
                                 "fault_model": "bitflip", "fault_rate": 1e-4, "trial": t,
                                 "accuracy": 0.5, "model": model, "dataset": dataset}
                                for t in range(2)])
    vrun = store.open_run("faultlab.vulnerability", {"m": 1})
    store.add_results(vrun, [{"key": "a", "module": "faultlab", "method": "vulnerability",
                              "model": "lenet5", "dataset": "mnist5k", "accuracy": 0.9,
                              "extra": {"layer": "fc1", "bit": 3, "order": 0}}])
    at = app_at(store.path, "faults")
    at.selectbox(key="faults-dataset").set_value("digits").run()
    assert "No layer x bit rows (faultlab.vulnerability) for lenet5/digits; rows exist for " \
           "lenet5/mnist5k" in ui.texts(at)
    assert at.text_input(key="vuln-dataset").value == "digits"  # the form follows the page
    at.selectbox(key="faults-dataset").set_value("mnist5k").run()
    assert len(charts_of(at)) == 2  # the curve and the heatmap


def test_faults_form_runs_the_registered_vulnerability_study(app_at, tmp_path, ui):
    store = Store(tmp_path / "v.sqlite")
    run = store.open_run("faultlab.campaign", {"dtype": "float32"})
    store.add_results(run, [{"key": f"r{i}", "module": "faultlab", "variant": "baseline",
                             "dtype": "float32", "fault_model": "bitflip", "fault_rate": 1e-4,
                             "trial": i, "accuracy": 0.5 + 0.1 * i, "model": "mlp",
                             "dataset": "digits"} for i in range(3)])
    at = app_at(store.path, "faults")
    assert at.text_input(key="vuln-model").value == "mlp"  # prefilled from the page
    at.text_input(key="vuln-bits").set_value("30, 2")
    at.number_input(key="vuln-trials").set_value(1)
    at.number_input(key="vuln-eval").set_value(60)
    at.button[0].click().run()
    assert not at.exception, at.exception
    rows = store.results(study="faultlab.vulnerability")
    assert len(rows) == 3 * 2  # the mlp's 3 weight layers x 2 bits, a registered study's run
    heat = ui.frame_with(charts_of(at)[-1], "layer", "bit", "accuracy")
    assert len(heat) == 6
    by_bit = heat.groupby("bit")["accuracy"].mean()
    assert by_bit[30] < by_bit[2]  # the top exponent bit hurts, a mantissa LSB does not


def test_filters_default_to_data_and_cascade(app_at, tmp_path, ui):
    store = Store(tmp_path / "two.sqlite")
    for model, dataset, acc, n in (("lenet5", "mnist5k", 0.9, 3), ("mlp", "digits", 0.6, 2)):
        run = store.open_run("faultlab.campaign", {"model": model})
        store.add_results(run, [{"key": f"{t}", "module": "faultlab", "variant": "baseline",
                                 "fault_model": "bitflip", "fault_rate": 1e-4, "trial": t,
                                 "accuracy": acc, "model": model, "dataset": dataset,
                                 "extra": {"n_samples": 100}} for t in range(n)])
    at = app_at(store.path, "faults")
    assert at.selectbox(key="faults-dataset").value == "mnist5k"  # the pair with most rows
    assert at.selectbox(key="faults-model").options == ["lenet5"]  # only models with rows
    curve = ui.frame_with(charts_of(at)[0], "kind", "mean")
    assert curve.loc[curve["kind"] == "summary", "mean"].tolist() == [pytest.approx(0.9)]
    at.selectbox(key="faults-dataset").set_value("digits").run()
    assert at.selectbox(key="faults-model").value == "mlp"  # reset: lenet5 has no digits rows
    curve = ui.frame_with(charts_of(at)[0], "kind", "mean")
    assert curve.loc[curve["kind"] == "summary", "mean"].tolist() == [pytest.approx(0.6)]


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_export_bytes_round_trip_writes_nothing(seeded_path, seeded_rows, tmp_path, monkeypatch,
                                                fmt):
    from app import _queries as q

    monkeypatch.setenv("HWLAB_STORE", seeded_path)
    monkeypatch.chdir(tmp_path)
    data = q.export_bytes(fmt, "quantum.creep")
    back = (pd.read_csv if fmt == "CSV" else pd.read_parquet)(io.BytesIO(data))
    expect = seeded_rows[seeded_rows["study"] == "quantum.creep"]
    assert len(back) == len(expect) == 34
    assert back["accuracy"].tolist() == pytest.approx(expect["accuracy"].tolist())
    assert list(tmp_path.iterdir()) == []  # nothing written on the server
    with pytest.raises(ValueError, match="fmt of export_bytes must be 'CSV' or 'Parquet'"):
        q.export_bytes("../../etc/passwd")


def test_foreign_store_is_refused_and_untouched(app_at, tmp_path, ui):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"not a database at all" * 10)
    before = path.read_bytes()
    at = app_at(path)
    assert "must be an hwlab store" in ui.texts(at)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.sqlite"]


def test_new_rows_show_up_and_no_page_reads_the_whole_store(app_at, tmp_path, monkeypatch, ui):
    from app._demo import seed_store
    from hwlab import store as store_module

    path = tmp_path / "live.sqlite"
    store = Store(path)
    seed_store(store)
    reads, tails = [], []
    original, update = Store.results, store_module._update_sums

    def counting(self, study=None, run_id=None, module=None):
        reads.append(run_id)
        return original(self, study=study, run_id=run_id, module=module)

    def counting_update(conn, columns):
        tails.append(conn.execute("SELECT count(*) FROM results WHERE rowid > coalesce(("
                                  "SELECT value FROM meta WHERE key = 'sums_rowid'), 0)"
                                  ).fetchone()[0])
        return update(conn, columns)

    monkeypatch.setattr(Store, "results", counting)
    monkeypatch.setattr(store_module, "_update_sums", counting_update)
    at = app_at(path, "localtrain")
    for page in PAGES:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, page
    assert reads == []  # pages ask for what they show; Store.results is for users
    at.switch_page("app_pages/localtrain.py").run()
    n_before = len(ui.frame_with(charts_of(at)[0], "method", "mean"))
    run = store.open_run("localtrain.compare", {"extra": "run"})  # a study writing now
    store.add_results(run, [{"key": "k", "module": "localtrain", "method": "man",
                             "variant": "K=16", "model": "resnet20", "dataset": "mnist5k",
                             "accuracy": 0.8, "memory_bytes": 1_000_000}])
    tails.clear()
    at.run()  # no Reload: the store's files changed, so the cached queries are stale
    assert not at.exception
    pts = ui.frame_with(charts_of(at)[0], "method", "variant", "mean")
    assert len(pts) == n_before + 1 and "K=16" in set(pts["variant"])
    at.switch_page("app_pages/overview.py").run()
    assert not at.exception
    assert tails in ([], [1])  # the summary table adds only the new row, once


def test_pages_leave_the_shared_cached_rows_unchanged(app_at, seeded_path, seeded_rows,
                                                      monkeypatch):
    from app import _queries as q

    at = app_at(seeded_path)
    monkeypatch.setenv("HWLAB_STORE", seeded_path)
    shared = {"clean": q.clean_metrics, "ber": q.ber_points,
              "campaign": lambda: q.study_points("faultlab.campaign"),
              "memory": lambda: q.study_results("faultlab.memory")}
    before = {k: f().copy(deep=True) for k, f in shared.items()}  # shared, not copied, frames
    for page in PAGES[1:-1]:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, page
    for k, f in shared.items():
        pd.testing.assert_frame_equal(f(), before[k])
    assert len(q.results()) == len(seeded_rows)


def test_figures_are_titled_and_named_after_study_model_dataset_date(app_at, seeded_path):
    from hwlab.figures import stem

    at = app_at(seeded_path, "memory")
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"SVG", "PDF", "PNG"} <= set(labels) and any(lb.startswith("Download data (CSV)")
                                                       for lb in labels)
    titles = [json.loads(c.proto.spec).get("title") for c in at.get("vega_lite_chart")]
    main = next(t for t in titles if str(t).startswith("faultlab.memory · lenet5 · mnist5k"))
    date = Store(seeded_path).runs()["started"].iloc[0][:10]
    assert main == f"faultlab.memory · lenet5 · mnist5k · run {date}"
    assert stem(main) == f"faultlab.memory_lenet5_mnist5k_{date}"  # the download's file name


def test_mitigation_table_shows_the_attack_beside_the_random_faults(app_at, tmp_path):
    """Both threats in one view: rows of the bit-flip attack give per-variant flips to chance."""
    store = Store(tmp_path / "m.sqlite")
    run_id = store.open_run("faultlab.mitigation", {"attack": True})
    rows = []
    for v, overhead, flips in (("unprotected", 0.0, (30, 40, 35)), ("clipping", 0.0, (None,)),
                               ("secded", 0.125, ())):
        rows.append({"key": f"clean|{v}", "module": "faultlab", "method": "mitigation",
                     "model": "lenet5", "dataset": "mnist5k", "variant": v, "fault_rate": 0.0,
                     "accuracy": 0.97, "extra": {"memory_overhead": overhead}})
        for t in range(3):
            rows.append({"key": f"{v}|0.05|trial={t}", "module": "faultlab",
                         "method": "mitigation", "model": "lenet5", "dataset": "mnist5k",
                         "variant": v, "fault_model": "bitflip", "fault_rate": 0.05,
                         "trial": t, "accuracy": 0.8, "extra": {"n_samples": 500}})
        for s, f in enumerate(flips):
            rows.append({"key": f"attack|{v}|seed={s}", "module": "faultlab",
                         "method": "mitigation", "model": "lenet5", "dataset": "mnist5k",
                         "variant": v, "fault_model": "pbs", "trial": s, "accuracy": 0.1,
                         "extra": {"flips": f or 60, "flips_to_chance": f,
                                   "reached": f is not None}})
    store.add_results(run_id, rows)
    store.finish_run(run_id)
    at = app_at(store.path, "mitigation")
    assert not at.exception
    table = at.dataframe[-1].value.set_index("variant")
    assert table.loc["unprotected", "pbs_flips_median"] == 35
    assert table.loc["unprotected", "pbs_flips_min"] == 30
    assert table.loc["unprotected", "pbs_reached"] == "3/3"
    assert table.loc["clipping", "pbs_reached"] == "0/1"
    assert table["pbs_reached"].isna()["secded"]  # a code protects its words: not attacked
