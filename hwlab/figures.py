"""Paper-ready figures from the results store: one key figure per study, as Altair charts.

>>> from hwlab import figures
>>> from hwlab.store import Store
>>> chart, name = figures.figure(Store("runs.sqlite"), "faultlab.campaign", model="lenet5")
>>> figures.save(chart, name + ".pdf")          # or .svg / .png; no browser needed

``hwlab figure STUDY [--model M --dataset D] --out FILE.{svg,pdf,png}`` is the same call. Each
figure is titled with the study, model, dataset and the date of the run(s) it draws, and
:func:`figure` returns a file stem named after them. Which builder draws a study, and what its
figure shows, are attributes of the study (``Study.figure``, ``figure_title``,
``figure_models``) read from the registry; :func:`figure_studies` lists the studies that have one.
The builders read store rows only and are shared with the dashboard, so the app and the CLI draw
the same figure from the same numbers:

* :func:`fault_sweep` (campaign, clipact, memory), :func:`systolic_sweep`,
  :func:`neuron_sweep` (spiking.faults): mean accuracy per series with the 95% proportion
  interval of :func:`hwlab.stats.proportion_ci` (never outside [0, 1]) where a point has >= 3
  trials, the trials themselves where it has fewer, and the fault-free accuracy as a dashed
  reference line;
* :func:`vulnerability_heatmap`: the layer x bit heatmap, layers in network order with their
  names;
* :func:`mitigation_pareto`: accuracy at a BER vs memory overhead per variant, with the front;
* :func:`time_steps`: accuracy vs mean time steps (fixed T, the rules, the oracles);
* :func:`quantum_levels`: accuracy per quantum level; :func:`training_memory`: accuracy vs peak
  training memory per rule and K; :func:`model_storage`: accuracy vs weight storage per model.
"""

from __future__ import annotations

import json
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from hwlab._figure_charts import (
    BAND_NOTE,
    SCHEME,
    fault_curves,
    heatmap,
    pareto_chart,
    series_label,
    slug,
    spiking_steps,
)
from hwlab._figure_data import (
    METRICS,
    clean_rows,
    extra_number,
    is_aggregate,
    is_oracle,
    pick_combination,
    summarize,
    with_metrics,
)
from hwlab.errors import check, fail

__all__ = ["BAND_NOTE", "fault_curves", "fault_sweep", "figure", "figure_rows", "figure_studies",
           "heatmap", "lm_pvf_heatmap", "lm_sweep", "mitigation_pareto", "model_storage",
           "neuron_sweep", "outcome_shares", "pareto_chart", "quantum_levels", "save",
           "series_label", "spiking_steps", "stem", "systolic_sweep", "time_steps", "title_for",
           "training_memory", "vulnerability_heatmap"]

FORMATS = (".svg", ".pdf", ".png")


# -- one key figure per study ------------------------------------------------------------------
def _extra(df: pd.DataFrame, *keys: str) -> pd.DataFrame:
    parsed = [json.loads(e) if isinstance(e, str) and e.startswith("{") else {}
              for e in df["extra"]]
    return df.assign(**{k: [p.get(k) for p in parsed] for k in keys})


def _sweep(df, x_title="fault rate (per bit)", facet="fault_model", series=None):
    d = df.assign(series=series if series is not None else series_label(df))
    clean = d[clean_rows(d) & d["accuracy"].notna()]
    faulty = d[~clean_rows(d) & d["accuracy"].notna()]
    return fault_curves(faulty, clean, facet=facet, x_title=x_title)


def fault_sweep(df):
    """Accuracy vs per-bit fault rate per series (variant and format), a panel per fault model."""
    return _sweep(df)


def systolic_sweep(df):
    """Accuracy vs fraction of faulty PEs per mitigation, a panel per dataflow."""
    d = df.assign(dataflow=extra_text(df, "dataflow"))
    clean = d[clean_rows(d)].assign(series="fault-free")
    faulty = d[~clean_rows(d)].assign(series=d["variant"].astype(str))
    return fault_curves(faulty, clean, facet="dataflow", x_title="fraction of faulty PEs")


def neuron_sweep(df):
    """Accuracy vs fraction of faulty neurons per exit rule, a panel per neuron fault."""
    return _sweep(df, "fraction of faulty neurons", series=df["variant"].astype(str))


def lm_sweep(df):
    """SDC (share of next-character predictions whose top-1 changes) vs per-bit fault rate, a
    series per fault site and stage (faultlab.lm: weights, kv-prefill, kv-decode, act-...)."""
    d = df[df["variant"].astype(str) != "pvf"]
    d = d.assign(series=d["variant"].astype(str))
    clean = d[clean_rows(d) & d["sdc"].notna()]
    faulty = d[~clean_rows(d) & d["sdc"].notna()]
    return fault_curves(faulty, clean, facet=None, value="sdc")


def lm_pvf_heatmap(df):
    """PVF (share of single-bit flips changing any top-1) per component x bit field
    (faultlab.lm's pvf rows)."""
    d = _extra(df[df["variant"].astype(str) == "pvf"], "component", "field", "pvf", "pvf_low",
               "pvf_high")
    return alt.Chart(d[["component", "field", "pvf", "pvf_low", "pvf_high"]]).mark_rect().encode(
        x=alt.X("field:N", title="bit field", sort=["sign", "exponent", "mantissa"]),
        y=alt.Y("component:N", sort=None, title=None),
        color=alt.Color("pvf:Q", title="PVF", scale=alt.Scale(scheme="reds", domain=[0, 1])),
        tooltip=["component", "field", alt.Tooltip("pvf:Q", format=".3f"),
                 alt.Tooltip("pvf_low:Q", format=".3f"), alt.Tooltip("pvf_high:Q", format=".3f")])


OUTCOMES = ("masked", "recovered", "drift", "degraded", "nan")  # faultlab.training's classes


def outcome_shares(df):
    """Share of runs per outcome class vs fault rate, a panel per recovery policy
    (faultlab.training: masked / recovered / drift / degraded / nan)."""
    d = df.assign(outcome=extra_text(df, "outcome"))
    d = d[~clean_rows(d) & d["outcome"].isin(OUTCOMES)]
    runs = d.groupby(["variant", "fault_model", "fault_rate", "outcome"], as_index=False).size()
    total = runs.groupby(["variant", "fault_model", "fault_rate"])["size"].transform("sum")
    runs = runs.assign(share=runs["size"] / total, rate=runs["fault_rate"].map("{:g}".format))
    return alt.Chart(runs).mark_bar().encode(
        x=alt.X("rate:O", title="fault rate (per bit and step)",
                sort=sorted(runs["rate"].unique(), key=float)),
        y=alt.Y("share:Q", stack="normalize", title="share of runs"),
        color=alt.Color("outcome:N", sort=list(OUTCOMES), scale=alt.Scale(scheme=SCHEME)),
        tooltip=["variant", "fault_model", "rate", "outcome", "size",
                 alt.Tooltip("share:Q", format=".2f")],
    ).properties(width=160, height=200).facet(column=alt.Column("variant:N", title="policy"),
                                              row=alt.Row("fault_model:N", title=None))


def extra_text(df, key):
    return df["extra"].astype("string").str.extract(rf'"{key}":\s*"([^"]*)"', expand=False)


def vulnerability_heatmap(df):
    """The layer x bit heatmap of mean accuracy, layers in network order."""
    d = _extra(df, "layer", "order", "bit", "ci_low", "ci_high")
    d = d[d["layer"].notna() & d["bit"].notna()]
    cells = d.groupby(["layer", "bit"], as_index=False).agg(
        accuracy=("accuracy", "mean"), order=("order", "min"), lo=("ci_low", "min"),
        hi=("ci_high", "max"))
    return heatmap(cells.astype({"bit": int}))


def mitigation_points(df: pd.DataFrame, ber: float | None = None) -> tuple[pd.DataFrame, float]:
    """Per variant: memory overhead (%), clean accuracy and accuracy at ``ber`` (default: the
    largest stored rate) with its interval; the rate used is returned too."""
    d = with_metrics(df)
    clean = d[clean_rows(d)]
    faulty = d[~clean_rows(d)]
    rates = sorted(faulty["fault_rate"].dropna().unique())
    check(len(rates) > 0, "rows", "mitigation_points", "faulty rows (fault_rate > 0)", "none")
    ber = float(rates[-1] if ber is None else min(rates, key=lambda r: abs(np.log(r / ber))))
    at = summarize(faulty[np.isclose(faulty["fault_rate"], ber)], ["variant"])
    over = clean.groupby("variant").agg(overhead=("protection_overhead", "mean"),
                                        clean=("accuracy", "mean"),
                                        latency=("inference_ms", "mean")).reset_index()
    pts = at.merge(over, on="variant", how="left").rename(columns={"mean": "accuracy"})
    pts["overhead"] = pts["overhead"].fillna(0.0)
    return pts, ber


def front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Non-dominated rows for min ``x`` and max ``y``, sorted by x."""
    d = points[points[x].notna() & points[y].notna()].sort_values([x, y], ascending=[True, False])
    best, keep = -np.inf, []
    for i, v in zip(d.index, d[y]):
        if v > best:
            keep.append(i)
            best = v
    return d.loc[keep]


def mitigation_pareto(df):
    """Accuracy at the largest stored BER vs memory overhead per variant, with the front."""
    pts, ber = mitigation_points(df)
    return pareto_chart(pts, "overhead", "accuracy", "variant", front(pts, "overhead", "accuracy"),
                        "memory overhead (% of weight bits)", f"accuracy at BER {ber:.0e}")


def spiking_frames(df: pd.DataFrame):
    """(fixed-T curve, rule and oracle points) of spiking.dynamic-confidence rows."""
    clean = df[clean_rows(df)]
    t = pd.to_numeric(clean["variant"].astype(str).str.extract(r"^fixed-T(\d+)$", expand=False),
                      errors="coerce")
    curve = (clean[t.notna()].assign(timesteps=t[t.notna()])
             .groupby(["method", "variant", "timesteps"], as_index=False)["accuracy"].mean()
             .sort_values("timesteps"))
    r = clean[t.isna() & clean["timesteps"].notna()]
    r = r.assign(kind=np.where(is_oracle(r), "oracle", "rule"),
                 threshold=extra_number(r, "threshold"))
    rules = r.groupby(["method", "variant", "kind"], as_index=False, dropna=False).agg(
        timesteps=("timesteps", "mean"), accuracy=("accuracy", "mean"),
        threshold=("threshold", "first"))
    return curve, rules


def time_steps(df):
    """Accuracy vs mean time steps: the fixed-T curve, the stopping rules and the oracles."""
    curve, rules = spiking_frames(df)
    hi = max(rules["timesteps"].max() if len(rules) else 0, 1) * 1.6
    return spiking_steps(curve[curve["timesteps"] <= hi], rules)


def level_summary(df: pd.DataFrame) -> pd.DataFrame:
    d = df[(df["method"].astype(str) == "creep") & clean_rows(df) & ~is_aggregate(df)]
    return summarize(d, ["dataset", "variant"])


def quantum_levels(df):
    """Accuracy per quantum level (bars with their interval)."""
    s = level_summary(df)
    base = alt.Chart(s).encode(x=alt.X("variant:N", title="quantum level", sort=None))
    bars = base.mark_bar(opacity=0.8).encode(y=alt.Y("mean:Q", title="test accuracy",
                                                     scale=alt.Scale(domain=[0, 1])),
                                            color=alt.Color("variant:N", legend=None))
    err = base.transform_filter("datum.band").mark_rule(color="black").encode(y="lo:Q", y2="hi:Q")
    return alt.layer(bars, err).properties(width=320, height=260)


def training_memory(df):
    """Accuracy vs peak training memory per rule, joined across K."""
    d = with_metrics(df)
    d = d[d["train_memory_bytes"].notna()]
    g = d.groupby(["method", "variant"], as_index=False).agg(
        memory=("train_memory_bytes", "mean"), accuracy=("accuracy", "mean"))
    g["K"] = pd.to_numeric(g["variant"].astype(str).str.extract(r"K=(\d+)", expand=False),
                           errors="coerce")
    x = alt.X("memory:Q", title="peak training memory (MiB)", scale=alt.Scale(type="log"))
    y = alt.Y("accuracy:Q", title="test accuracy", scale=alt.Scale(zero=False))
    color = alt.Color("method:N", title="rule", scale=alt.Scale(scheme=SCHEME))
    lines = alt.Chart(g).mark_line(opacity=0.6).encode(x=x, y=y, color=color, order="K:Q")
    pts = alt.Chart(g).mark_point(filled=True, size=90).encode(
        x=x, y=y, color=color, shape=alt.Shape("variant:N", title="K"),
        tooltip=["method", "variant", alt.Tooltip("memory:Q", format=".3f"),
                 alt.Tooltip("accuracy:Q", format=".4f")])
    return alt.layer(lines, pts).properties(width=480, height=320)


def model_storage(df):
    """Accuracy vs weight storage, one labelled point per model."""
    d = with_metrics(df)
    x = alt.X("model_bytes:Q", title=METRICS["model_bytes"].label, scale=alt.Scale(type="log"))
    y = alt.Y("accuracy:Q", title="test accuracy", scale=alt.Scale(zero=False))
    pts = alt.Chart(d).mark_point(filled=True, size=90).encode(
        x=x, y=y, color=alt.Color("model:N", scale=alt.Scale(scheme=SCHEME)),
        tooltip=["model", alt.Tooltip("accuracy:Q", format=".4f"),
                 alt.Tooltip("inference_ms:Q", format=".4g")])
    text = alt.Chart(d).mark_text(align="left", dx=7).encode(x=x, y=y, text="model:N")
    return alt.layer(pts, text).properties(width=480, height=320)


def figure_studies() -> list[str]:
    """Names of the registered studies that have a key figure (``Study.figure``)."""
    from hwlab.studies import all_studies

    return [s.name for s in all_studies() if s.figure is not None]


def _study(name: str):
    """The registered study called ``name`` with a key figure (else a template error)."""
    from hwlab.studies import find_study

    study = find_study(name) if isinstance(name, str) else None
    if study is None or study.figure is None:
        raise fail("study", "figure", f"one of {', '.join(figure_studies())}", name)
    return study


def figure_rows(results: pd.DataFrame, runs: pd.DataFrame | None, study: str,
                model: str | None = None, dataset: str | None = None):
    """``(chart, stem)`` of ``study``'s key figure from store frames (``Store.results()``,
    ``Store.runs()``); ``model`` / ``dataset`` default to the pair with the most rows."""
    described = _study(study)
    df = results[results["study"] == study]
    df = df[~is_aggregate(df)] if not df.empty else df
    if described.figure_models == "all":  # every model of one dataset in one figure
        if dataset is None and model is None:  # the dataset with the most models
            dataset = str(df["dataset"].astype(str).value_counts().index[0])
        _, dataset = pick_combination(df, model, dataset, "figure")
        df = df[df["dataset"].astype(str) == dataset]
        model = model or "all models"
        if model != "all models":
            df = df[df["model"].astype(str) == model]
    else:
        model, dataset = pick_combination(df, model, dataset, "figure")
        df = df[(df["model"].astype(str) == model) & (df["dataset"].astype(str) == dataset)]
    chart = described.figure(df)
    title = title_for(study, model, dataset, _dates(runs, df))
    subtitle = described.figure_title or alt.Undefined
    return chart.properties(title=alt.TitleParams(title, subtitle=subtitle,
                                                  anchor="start")), stem(title)


def figure(store, study: str, model: str | None = None, dataset: str | None = None):
    """``(chart, stem)`` of ``study``'s key figure read from ``store`` (a Store)."""
    _study(study)
    results = store.results(study=study)
    if results.empty:
        raise fail("study", "figure", "a study with rows in the store", f"{study} (no rows)")
    return figure_rows(results, store.runs(), study, model, dataset)


def _dates(runs: pd.DataFrame | None, df: pd.DataFrame) -> str:
    if runs is None or runs.empty:
        return ""
    started = runs.loc[runs["run_id"].isin(df["run_id"].unique()), "started"].astype(str)
    days = sorted({s[:10] for s in started if s})
    return days[0] if len(days) == 1 else (f"{days[0]} to {days[-1]}" if days else "")


def title_for(study: str, model: str, dataset: str, date: str) -> str:
    return f"{study} · {model} · {dataset}" + (f" · run {date}" if date else "")


def stem(title: str) -> str:
    """A file stem from a figure title: ``faultlab.campaign_lenet5_mnist5k_2026-12-01``."""
    parts = [p.strip().removeprefix("run ").replace(" to ", "_to_") for p in title.split("·")]
    return "_".join(slug(p) for p in parts)


def save(chart, path) -> Path:
    """Write ``chart`` as SVG, PDF or PNG (by suffix) with vl-convert (no browser)."""
    import vl_convert as vlc

    path = Path(path)
    suffix = path.suffix.lower()
    check(suffix in FORMATS, "path", "figures.save", "a file name ending in .svg, .pdf or .png",
          str(path))
    spec = chart.to_json()
    if suffix == ".svg":
        path.write_text(vlc.vegalite_to_svg(spec), encoding="utf-8")
    elif suffix == ".pdf":
        path.write_bytes(vlc.vegalite_to_pdf(spec))
    else:
        path.write_bytes(vlc.vegalite_to_png(spec, scale=2))
    return path



