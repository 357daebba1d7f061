"""Chart primitives of the paper figures and the dashboard (Altair), on store-row frames.

See :mod:`hwlab.figures` for what each promises (proportion bands in [0, 1], the trials where
there are fewer than 3, a fault-free reference line, fixed tick labels).
"""

from __future__ import annotations

import re

import altair as alt
import numpy as np
import pandas as pd

from hwlab._figure_data import summarize, summarize_sums

__all__ = ["BAND_NOTE", "fault_curves", "heatmap", "pareto_chart", "series_label", "slug",
           "spiking_steps"]

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
                 width: int | None = None, height: int = 240, log_x: bool = True) -> alt.Chart:
    """Accuracy vs fault rate: mean per (facet, series, x), 95% proportion band where there are
    >= 3 trials, the trials as circles where there are fewer, fault-free accuracy dashed.

    ``trials``: one row per trial with ``x``, ``series``, ``facet`` and ``value``, or one row
    per point with the sums of :meth:`hwlab.store.Store.aggregate` (``value_n``, ``value_sum``,
    ...: the same summary and intervals, :func:`hwlab._figure_data.summarize_sums`). ``clean``:
    rows at no fault with ``series`` (and ``value``); its mean per series is the reference line
    of every panel. Returns a layered (faceted when ``facet`` has values) chart; its single
    dataset has a ``kind`` column (summary, trial, clean).
    """
    by = [c for c in (facet, series, x) if c]
    d = trials.assign(**{c: trials[c].astype(str) for c in (facet, series) if c})
    sums = f"{value}_n" in d  # points of Store.aggregate (sums per point), not trials
    s = summarize_sums(d, by, value) if sums else summarize(d, by, value)
    few = s.loc[~s["band"].astype(bool), by]
    if sums:  # fewer than MIN_BAND_TRIALS trials: each point's one or two are its min and max
        p = d.merge(few, on=by)
        p = p[p[f"{value}_n"] > 0]
        two = p[p[f"{value}_n"] >= 2]
        single = pd.concat([p[by].assign(value=p[f"{value}_min"]),
                            two[by].assign(value=two[f"{value}_max"])], ignore_index=True)
    else:
        single = d.merge(few, on=by)[by + [value]].rename(columns={value: "value"})
    parts = [s.assign(kind="summary"), single.assign(kind="trial")]
    if clean is not None and not clean.empty:
        c = clean.assign(**{series: clean[series].astype(str)})
        if f"{value}_n" in c:
            t = c.groupby(series)[[f"{value}_sum", f"{value}_n"]].sum()
            ref = (t[f"{value}_sum"] / t[f"{value}_n"]).rename("mean").reset_index()
        else:
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
    def build(base):  # the layers filter the facet's single dataset
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
        chart = alt.layer(*build(alt.Chart())).properties(width=max(170, min(width or 260,
                                                                             720 // n)),
                                                          height=height)
        return chart.facet(column=alt.Column(f"{facet}:N", title=facet.replace("_", " ")),
                           data=data)
    # One panel without a header: Streamlit draws a layered chart whose layers filter one
    # top-level dataset empty, a facet's data it draws right (both render alike in vl-convert).
    chart = alt.layer(*build(alt.Chart())).properties(width=width or 460, height=height)
    return chart.facet(column=alt.Column("panel:N", title=None, header=alt.Header(labels=False)),
                       data=data.assign(panel=""))


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
