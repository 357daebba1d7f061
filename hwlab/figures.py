"""Paper-ready figures from the results store: one key figure per study, as Altair charts.

>>> from hwlab import figures
>>> from hwlab.store import Store
>>> chart, name = figures.figure(Store("runs.sqlite"), "faultlab.campaign", model="lenet5")
>>> figures.save(chart, name + ".pdf")          # or .svg / .png; no browser needed

``hwlab figure STUDY [--model M --dataset D] --out FILE.{svg,pdf,png}`` is the same call. Each
figure is titled with the study, model, dataset and the date of the run(s) it draws, and
:func:`figure` returns a file stem named after them. The builders read store rows only (no method
package is imported) and are shared with the dashboard, so the app and the CLI draw the same
figure from the same numbers:

* fault sweeps (campaign, clipact, memory, systolic, spiking.faults): mean accuracy per series
  with the 95% proportion interval of :func:`hwlab._figure_data.proportion_ci` (never outside
  [0, 1]) where a point has >= 3 trials, the trials themselves where it has fewer, and the
  fault-free accuracy as a dashed reference line;
* faultlab.vulnerability: the layer x bit heatmap, layers in network order with their names;
* faultlab.mitigation: accuracy at a BER vs memory overhead per variant, with the Pareto front;
* spiking.dynamic-confidence: accuracy vs mean time steps (fixed T, the rules, the oracles);
* quantum.creep: accuracy per quantum level; localtrain.compare: accuracy vs peak training
  memory per rule and K; hwlab.zoo: accuracy vs weight storage per model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

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

__all__ = ["FIGURES", "fault_curves", "figure", "figure_rows", "heatmap", "pareto_chart",
           "save", "series_label", "spiking_steps", "stem", "title_for"]

FORMATS = (".svg", ".pdf", ".png")
BAND_NOTE = ("line: mean over trials; band: 95% proportion interval (>= 3 trials); "
             "circles: single trials (< 3); dashed: fault-free accuracy")
SCHEME = "tableau10"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "figure"


def series_label(df: pd.DataFrame) -> pd.Series:
    """``variant``, plus the number format when the rows hold more than one
    (``clipact-zero · int8``); a campaign's ``baseline`` variant is shown as its format."""
    variant = df["variant"].astype("string").fillna("-")
    dtype = df["dtype"].astype("string") if "dtype" in df else pd.Series(pd.NA, index=df.index)
    plain = variant.isin(["baseline", "-", "None"]) & dtype.notna()
    several = dtype.dropna().nunique() > 1
    label = variant + (" · " + dtype.fillna("?") if several else "")
    return pd.Series(np.where(plain, dtype.fillna("?"), label), index=df.index).astype(str)


def _rate_axis(values, title: str) -> alt.X:
    ticks = sorted({float(v) for v in values if v and v > 0})
    axis = alt.Axis(values=ticks, format=".0e", labelOverlap=False, title=title) if len(
        ticks) <= 12 else alt.Axis(format=".0e", title=title)
    return alt.X("x:Q", scale=alt.Scale(type="log"), axis=axis)


def fault_curves(trials: pd.DataFrame, clean: pd.DataFrame | None = None, *, x: str = "fault_rate",
                 series: str = "series", facet: str | None = "fault_model",
                 x_title: str = "fault rate (per bit)", value: str = "accuracy",
                 width: int = 260, height: int = 240, log_x: bool = True) -> alt.Chart:
    """Accuracy vs fault rate: mean per (facet, series, x), 95% proportion band where there are
    >= 3 trials, the trials as circles where there are fewer, fault-free accuracy dashed.

    ``trials``: one row per trial with ``x``, ``series``, ``facet`` and ``value``. ``clean``:
    rows at no fault with ``series`` (and ``value``); its mean per series is the reference line
    of every panel. Returns a layered (faceted when ``facet`` has values) chart; its single
    dataset has a ``kind`` column (summary, trial, clean).
    """
    by = [c for c in (facet, series, x) if c]
    d = trials.assign(**{c: trials[c].astype(str) for c in (facet, series) if c})
    s = summarize(d, by, value)
    few = s.loc[~s["band"].astype(bool), by]
    single = d.merge(few, on=by)[by + [value]].rename(columns={value: "value"})
    parts = [s.assign(kind="summary"), single.assign(kind="trial")]
    if clean is not None and not clean.empty:
        c = clean.assign(**{series: clean[series].astype(str)})
        ref = c.groupby(series)[value].mean().rename("mean").reset_index()
        facets = sorted(d[facet].unique()) if facet else [None]
        parts.append(pd.concat([ref.assign(**({facet: f} if facet else {})) for f in facets],
                               ignore_index=True).assign(kind="clean"))
    data = pd.concat(parts, ignore_index=True).rename(columns={x: "x", series: "series"})
    facet_col = facet if facet and d[facet].nunique() > 0 else None
    xs = pd.to_numeric(data["x"], errors="coerce")
    data["x"] = xs
    xenc = _rate_axis(xs.dropna(), x_title) if log_x else alt.X("x:Q", title=x_title)
    color = alt.Color("series:N", title="variant", scale=alt.Scale(scheme=SCHEME),
                      legend=alt.Legend(orient="bottom", columns=4))
    y_title = value.replace("_", " ")
    def build(base):  # faceted: data on the facet; else on every layer (Streamlit needs it)
        tips = [alt.Tooltip("series:N"), alt.Tooltip("x:Q", title=x_title, format=".3g"),
                alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("lo:Q", format=".4f"),
                alt.Tooltip("hi:Q", format=".4f"), alt.Tooltip("n:Q", title="trials")]
        layers = [
            base.transform_filter("datum.kind == 'summary' && datum.band").mark_area(
                opacity=0.18).encode(x=xenc, y=alt.Y("lo:Q", title=y_title), y2="hi:Q", color=color),
            base.transform_filter("datum.kind == 'summary'").mark_line(point=True).encode(
                x=xenc, y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False)), color=color,
                tooltip=tips),
            base.transform_filter("datum.kind == 'trial'").mark_point(
                shape="circle", filled=False, size=40, opacity=0.9).encode(
                x=xenc, y=alt.Y("value:Q", title=y_title), color=color,
                tooltip=[alt.Tooltip("series:N"), alt.Tooltip("value:Q", title="trial", format=".4f")]),
        ]
        if (data["kind"] == "clean").any():
            layers.append(base.transform_filter("datum.kind == 'clean'").mark_rule(
                strokeDash=[5, 3], strokeWidth=1.5).encode(
                y=alt.Y("mean:Q", title=y_title), color=color,
                tooltip=[alt.Tooltip("series:N"), alt.Tooltip("mean:Q", title="fault-free",
                                                              format=".4f")]))
        return layers

    if facet_col:
        n = max(1, int(d[facet].nunique()))
        chart = alt.layer(*build(alt.Chart())).properties(width=max(170, min(width, 720 // n)),
                                                          height=height)
        return chart.facet(column=alt.Column(f"{facet}:N", title=facet.replace("_", " ")),
                           data=data)
    return alt.layer(*build(alt.Chart(data))).properties(width=width, height=height)


def heatmap(cells: pd.DataFrame, value: str = "accuracy") -> alt.Chart:
    """Layer x bit heatmap: ``cells`` with ``layer``, ``order`` (network order), ``bit``,
    ``value`` (and optional ``lo``/``hi``); layers top to bottom in network order, by name."""
    order = (cells.assign(order=pd.to_numeric(cells.get("order"), errors="coerce"))
             .groupby("layer")["order"].min().sort_values(kind="stable"))
    layers = list(order.index) if order.notna().any() else sorted(cells["layer"].unique())
    tips = ["layer", "bit", alt.Tooltip(f"{value}:Q", format=".4f")]
    tips += [alt.Tooltip(f"{c}:Q", format=".4f") for c in ("lo", "hi") if c in cells]
    return alt.Chart(cells).mark_rect().encode(
        x=alt.X("bit:O", title="bit (0 = LSB)", sort="descending"),
        y=alt.Y("layer:N", title="layer (network order)", sort=layers),
        color=alt.Color(f"{value}:Q", title=value.replace("_", " "),
                        scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1])),
        tooltip=tips).properties(height=alt.Step(22))


def pareto_chart(points: pd.DataFrame, x: str, y: str, label: str, front: pd.DataFrame,
                 x_title: str, y_title: str) -> alt.LayerChart:
    """Points (``x``, ``y`` with optional ``lo``/``hi`` of y) labelled by ``label``, the front
    as a dashed staircase."""
    base = alt.Chart(points)
    xenc = alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(zero=True))
    yenc = alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False))
    color = alt.Color(f"{label}:N", scale=alt.Scale(scheme=SCHEME), legend=None)
    tips = [label, alt.Tooltip(f"{x}:Q", format=".4g"), alt.Tooltip(f"{y}:Q", format=".4f")]
    layers = []
    if {"lo", "hi"} <= set(points):
        layers.append(base.mark_rule().encode(x=xenc, y="lo:Q", y2="hi:Q", color=color))
    layers += [base.mark_point(filled=True, size=90).encode(x=xenc, y=yenc, color=color,
                                                            tooltip=tips),
               base.mark_text(align="left", dx=7, dy=-6, fontSize=11).encode(
                   x=xenc, y=yenc, text=f"{label}:N", color=color)]
    if not front.empty:
        layers.append(alt.Chart(front).mark_line(color="black", strokeDash=[5, 3],
                                                 interpolate="step-after").encode(x=xenc, y=yenc))
    return alt.layer(*layers).properties(width=480, height=320)


def spiking_steps(curve: pd.DataFrame, rules: pd.DataFrame, sweep: pd.DataFrame | None = None,
                  current: pd.DataFrame | None = None, domain: tuple | None = None) -> alt.Chart:
    """Accuracy vs mean time steps: the fixed-T curve (grey), the rules and oracles (points),
    optional rule sweeps (thin lines) and a slider's point (red cross); ``domain`` zooms x."""
    scale = alt.Scale(domain=list(domain), clamp=False) if domain else alt.Scale()
    x = alt.X("timesteps:Q", title="mean time steps", scale=scale)
    y = alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(zero=False))
    names = sorted(set(rules.get("variant", pd.Series(dtype=str)).astype(str)))
    names += sorted(set(sweep["rule"].astype(str)) - set(names)) if sweep is not None and \
        not sweep.empty else []
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#9d755d", "#72b7b2",
               "#eeca3b"]
    colors = alt.Scale(domain=["fixed T", *names],
                       range=["#7f7f7f", *[palette[i % len(palette)] for i in range(len(names))]])
    layers = [alt.Chart(curve.assign(series="fixed T")).mark_line(
        point=alt.OverlayMarkDef(color="#7f7f7f"), color="#7f7f7f").encode(
        x=x, y=y, color=alt.Color("series:N", scale=colors, title="fixed T / rule / oracle"),
        detail="method:N", tooltip=["method", "variant", "timesteps",
                                    alt.Tooltip("accuracy:Q", format=".4f")])]
    if sweep is not None and not sweep.empty:
        layers.append(alt.Chart(sweep).mark_line(strokeWidth=1.2, opacity=0.6).encode(
            x=x, y=y, color=alt.Color("rule:N", scale=colors), order="threshold:Q",
            tooltip=["rule", alt.Tooltip("threshold:Q", format=".4g"),
                     alt.Tooltip("timesteps:Q", format=".3g"),
                     alt.Tooltip("accuracy:Q", format=".4f")]))
    if not rules.empty:
        layers.append(alt.Chart(rules).mark_point(filled=True, size=120).encode(
            x=x, y=y, color=alt.Color("variant:N", scale=colors),
            shape=alt.Shape("kind:N", title="kind"),
            tooltip=["method", "variant", "kind", alt.Tooltip("timesteps:Q", format=".3g"),
                     alt.Tooltip("accuracy:Q", format=".4f"), "threshold"]))
    if current is not None and not current.empty:
        layers.append(alt.Chart(current).mark_point(shape="cross", size=400, color="red",
                                                   strokeWidth=3).encode(x=x, y=y))
    return alt.layer(*layers).properties(width=560, height=380)


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


def _campaign(df):
    return _sweep(df)


def _systolic(df):
    d = df.assign(dataflow=extra_text(df, "dataflow"))
    clean = d[clean_rows(d)].assign(series="fault-free")
    faulty = d[~clean_rows(d)].assign(series=d["variant"].astype(str))
    return fault_curves(faulty, clean, facet="dataflow", x_title="fraction of faulty PEs")


def _neurons(df):
    return _sweep(df, "fraction of faulty neurons", series=df["variant"].astype(str))


def extra_text(df, key):
    return df["extra"].astype("string").str.extract(rf'"{key}":\s*"([^"]*)"', expand=False)


def _vulnerability(df):
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


def _mitigation(df):
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


def _spiking(df):
    curve, rules = spiking_frames(df)
    hi = max(rules["timesteps"].max() if len(rules) else 0, 1) * 1.6
    return spiking_steps(curve[curve["timesteps"] <= hi], rules)


def level_summary(df: pd.DataFrame) -> pd.DataFrame:
    d = df[(df["method"].astype(str) == "creep") & clean_rows(df) & ~is_aggregate(df)]
    return summarize(d, ["dataset", "variant"])


def _quantum(df):
    s = level_summary(df)
    base = alt.Chart(s).encode(x=alt.X("variant:N", title="quantum level", sort=None))
    bars = base.mark_bar(opacity=0.8).encode(y=alt.Y("mean:Q", title="test accuracy",
                                                     scale=alt.Scale(domain=[0, 1])),
                                            color=alt.Color("variant:N", legend=None))
    err = base.transform_filter("datum.band").mark_rule(color="black").encode(y="lo:Q", y2="hi:Q")
    return alt.layer(bars, err).properties(width=320, height=260)


def _localtrain(df):
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


def _zoo(df):
    d = with_metrics(df)
    x = alt.X("model_bytes:Q", title=METRICS["model_bytes"].label, scale=alt.Scale(type="log"))
    y = alt.Y("accuracy:Q", title="test accuracy", scale=alt.Scale(zero=False))
    pts = alt.Chart(d).mark_point(filled=True, size=90).encode(
        x=x, y=y, color=alt.Color("model:N", scale=alt.Scale(scheme=SCHEME)),
        tooltip=["model", alt.Tooltip("accuracy:Q", format=".4f"),
                 alt.Tooltip("inference_ms:Q", format=".4g")])
    text = alt.Chart(d).mark_text(align="left", dx=7).encode(x=x, y=y, text="model:N")
    return alt.layer(pts, text).properties(width=480, height=320)


FIGURES = {  # study -> (builder, what the figure shows)
    "faultlab.campaign": (_campaign, "accuracy vs BER per number format"),
    "faultlab.clipact": (_campaign, "accuracy vs BER per variant (FT-ClipAct, Ranger)"),
    "faultlab.memory": (_campaign, "accuracy vs BER per memory protection and error model"),
    "faultlab.mitigation": (_mitigation, "accuracy at BER vs memory overhead (Pareto)"),
    "faultlab.systolic": (_systolic, "accuracy vs fraction of faulty PEs per mitigation"),
    "faultlab.vulnerability": (_vulnerability, "layer x bit vulnerability heatmap"),
    "spiking.dynamic-confidence": (_spiking, "accuracy vs mean time steps with the rules"),
    "spiking.faults": (_neurons, "accuracy vs neuron fault rate per exit rule"),
    "quantum.creep": (_quantum, "accuracy per quantum level"),
    "localtrain.compare": (_localtrain, "accuracy vs peak training memory per rule and K"),
    "hwlab.zoo": (_zoo, "accuracy vs weight storage per model"),
}


def figure_rows(results: pd.DataFrame, runs: pd.DataFrame | None, study: str,
                model: str | None = None, dataset: str | None = None):
    """``(chart, stem)`` of ``study``'s key figure from store frames (``Store.results()``,
    ``Store.runs()``); ``model`` / ``dataset`` default to the pair with the most rows."""
    check(study in FIGURES, "study", "figure", f"one of {', '.join(FIGURES)}", study)
    df = results[results["study"] == study]
    df = df[~is_aggregate(df)] if not df.empty else df
    if study == "hwlab.zoo":  # every model of one dataset in one figure
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
    chart = FIGURES[study][0](df)
    title = title_for(study, model, dataset, _dates(runs, df))
    return chart.properties(title=alt.TitleParams(title, subtitle=FIGURES[study][1],
                                                  anchor="start")), stem(title)


def figure(store, study: str, model: str | None = None, dataset: str | None = None):
    """``(chart, stem)`` of ``study``'s key figure read from ``store`` (a Store)."""
    check(study in FIGURES, "study", "figure", f"one of {', '.join(FIGURES)}", study)
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



