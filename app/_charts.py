"""Altair (Vega-Lite) chart builders for the dashboard pages.

Each builder takes a small, already aggregated DataFrame (see :mod:`app._frames`) and returns an
Altair chart; no builder reads the store or calls Streamlit, so they are tested directly.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from app._frames import METRICS

__all__ = [
    "axis_scale",
    "bar_chart",
    "bars_with_ci",
    "curve_with_band",
    "heatmap_chart",
    "memory_accuracy_chart",
    "spiking_chart",
    "tradeoff_chart",
]

PICK = "pick"  # name of the Overview's click selection (read back by st.altair_chart on_select)
SCHEME = alt.Scale(scheme="tableau10")  # distinct hues (the default theme has near-white ones)


def _label(metric: str) -> str:
    return METRICS[metric].label if metric in METRICS else metric


def axis_scale(log: bool) -> alt.Scale:
    return alt.Scale(type="log") if log else alt.Scale(zero=False)


def _q(field: str, log: bool = False, title: str | None = None, fmt: str | None = None):
    fmt = fmt or ("~e" if log and field == "fault_rate" else None)  # 1e-7, not 0.0000001
    axis = alt.Axis(format=fmt) if fmt else alt.Axis()
    return alt.X(field, type="quantitative", scale=axis_scale(log), title=title or _label(field),
                 axis=axis)


def tradeoff_chart(points: pd.DataFrame, front: pd.DataFrame, x: str, y: str,
                   log_x: bool = False, log_y: bool = False) -> alt.LayerChart:
    """Scatter of ``y`` against ``x`` coloured by module · method, with the Pareto front drawn.

    Hovering shows the run id and the point's identity; clicking selects the run (selection
    ``pick`` over ``run_id``).
    """
    pick = alt.selection_point(name=PICK, fields=["run_id"], on="click")
    tips = [c for c in ("run_id", "study", "module", "method", "model", "dataset", "variant",
                        "fault_model") if c in points]
    tips += [alt.Tooltip(x, title=_label(x), format=".4g"),
             alt.Tooltip(y, title=_label(y), format=".4g"), alt.Tooltip("n", title="rows")]
    xenc = alt.X(x, type="quantitative", scale=axis_scale(log_x), title=_label(x),
                 axis=alt.Axis(format="~e") if log_x and x == "fault_rate" else alt.Axis())
    yenc = alt.Y(y, type="quantitative", scale=axis_scale(log_y), title=_label(y),
                 axis=alt.Axis(format="~e") if log_y and y == "fault_rate" else alt.Axis())
    dots = (
        alt.Chart(points)
        .mark_point(filled=True, size=70)
        .encode(x=xenc, y=yenc, color=alt.Color("series:N", title="module · method", scale=SCHEME),
                opacity=alt.condition(pick, alt.value(0.9), alt.value(0.25)), tooltip=tips)
        .add_params(pick)
    )
    line = (
        alt.Chart(front.assign(front="Pareto front"))
        .mark_line(point=alt.OverlayMarkDef(shape="diamond", size=60, color="black"),
                   color="black", strokeDash=[5, 3], interpolate="step-after"
                   if METRICS.get(x) and METRICS[x].better == "min" else "step-before")
        .encode(x=xenc, y=yenc, tooltip=tips[:-1] + [alt.Tooltip("front:N", title="on")])
    )
    return alt.layer(dots, line).properties(height=420).interactive(bind_y=False)


def curve_with_band(summary: pd.DataFrame, color: str, facet: str | None = None,
                    x: str = "fault_rate", log_x: bool = True, y_title: str = "Accuracy",
                    width: int = 320) -> alt.Chart:
    """Mean curve with its confidence band (``mean``, ``lo``, ``hi`` from ``mean_ci``)."""
    n_panels = summary[facet].nunique() if facet else 1
    if facet and n_panels > 1:  # fit the panels side by side in the page's width
        width = max(170, min(width, 680 // n_panels))
    legend = alt.Legend(orient="bottom") if facet else alt.Legend()
    base = alt.Chart(summary).encode(
        x=_q(x, log=log_x),
        color=alt.Color(f"{color}:N", title=color.replace("_", " "), legend=legend, scale=SCHEME))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title=y_title), y2="hi:Q")
    tips = [color, alt.Tooltip(x, format=".3g"), alt.Tooltip("mean:Q", format=".4f"),
            alt.Tooltip("lo:Q", format=".4f"), alt.Tooltip("hi:Q", format=".4f"), "n:Q"]
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False)), tooltip=tips)
    chart = alt.layer(band, line).properties(width=width, height=280)
    if facet:
        return chart.facet(column=alt.Column(f"{facet}:N", title=facet.replace("_", " ")))
    return chart


def heatmap_chart(cells: pd.DataFrame, value: str = "accuracy") -> alt.Chart:
    """Layer x bit heatmap of ``value`` (one cell per (layer, bit))."""
    return (
        alt.Chart(cells)
        .mark_rect()
        .encode(
            x=alt.X("bit:O", title="bit (0 = LSB)", sort="descending"),
            y=alt.Y("layer:N", title="layer"),
            color=alt.Color(f"{value}:Q", title=value.replace("_", " "),
                            scale=alt.Scale(scheme="redyellowgreen")),
            tooltip=["layer", "bit", alt.Tooltip(f"{value}:Q", format=".4f"), "n"],
        )
        .properties(height=alt.Step(22))
    )


def bar_chart(df: pd.DataFrame, x: str, y: str, color: str | None = None,
              title: str | None = None) -> alt.Chart:
    """Grouped horizontal bars (used for the chosen clipping thresholds)."""
    enc = {"y": alt.Y(f"{x}:N", title=x), "x": alt.X(f"{y}:Q", title=title or y),
               "tooltip": [x, alt.Tooltip(f"{y}:Q", format=".4g")] + ([color] if color else [])}
    if color:
        enc.update(color=alt.Color(f"{color}:N", scale=SCHEME), yOffset=alt.YOffset(f"{color}:N"))
    return alt.Chart(df).mark_bar().encode(**enc)


def bars_with_ci(summary: pd.DataFrame, x: str, title: str, log: bool = False,
                 width: int = 260) -> alt.LayerChart:
    """One panel of a side-by-side: ``mean`` per ``x`` with a ``lo``-``hi`` error bar.

    Bars on a linear axis (from zero); on a log axis (parameters, latency, time spanning decades)
    a bar has no zero to start from, so the panel draws points instead.
    """
    base = alt.Chart(summary).encode(
        x=alt.X(f"{x}:N", title=None, sort=None, axis=alt.Axis(labelAngle=0)))
    y = alt.Y("mean:Q", title=title, scale=alt.Scale(type="log") if log else alt.Scale())
    tips = [x, alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("lo:Q", format=".4g"),
            alt.Tooltip("hi:Q", format=".4g"), "n:Q"]
    mark = base.mark_point(filled=True, size=160) if log else base.mark_bar()
    marks = mark.encode(y=y, color=alt.Color(f"{x}:N", legend=None, scale=SCHEME), tooltip=tips)
    spread = summary[summary["hi"] > summary["lo"]]  # one seed: no interval to draw
    err = alt.Chart(spread).mark_rule(strokeWidth=2, color="black").encode(
        x=alt.X(f"{x}:N", sort=None), y=alt.Y("lo:Q", title=title), y2="hi:Q")
    return alt.layer(marks, err).properties(width=width, height=220)


def spiking_chart(curve: pd.DataFrame, rules: pd.DataFrame, sweep: pd.DataFrame | None = None,
                  current: pd.DataFrame | None = None) -> alt.LayerChart:
    """Accuracy vs mean time steps: the fixed-T curve, stopping-rule and oracle points.

    ``curve``: timesteps, accuracy, method, variant. ``rules``: timesteps, accuracy, variant,
    method, kind ("rule" or "oracle"), threshold. ``sweep``: a rule's accuracy-vs-steps curve
    over thresholds (threshold, timesteps, accuracy, rule). ``current``: the point the threshold
    slider selects on that curve.
    """
    x = alt.X("timesteps:Q", title="mean time steps")
    y = alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(zero=False))
    layers = [
        alt.Chart(curve).mark_line(point=True, color="gray").encode(
            x=x, y=y, strokeDash=alt.StrokeDash("method:N", title="fixed T (method)"),
            tooltip=["method", "variant", "timesteps", alt.Tooltip("accuracy:Q", format=".4f")]),
    ]
    if sweep is not None and not sweep.empty:
        layers.append(alt.Chart(sweep).mark_line(strokeWidth=1.5, opacity=0.7).encode(
            x=x, y=y, color=alt.Color("rule:N", title="rule / oracle", scale=SCHEME),
            order="threshold:Q",
            tooltip=["rule", alt.Tooltip("threshold:Q", format=".4g"),
                     alt.Tooltip("timesteps:Q", format=".3g"),
                     alt.Tooltip("accuracy:Q", format=".4f")]))
    if not rules.empty:
        layers.append(alt.Chart(rules).mark_point(filled=True, size=110).encode(
            x=x, y=y, color=alt.Color("variant:N", title="rule / oracle", scale=SCHEME),
            shape=alt.Shape("kind:N", title="kind"),
            tooltip=["method", "variant", "kind", alt.Tooltip("timesteps:Q", format=".3g"),
                     alt.Tooltip("accuracy:Q", format=".4f"), "threshold"]))
    if current is not None and not current.empty:
        layers.append(alt.Chart(current).mark_point(shape="cross", size=400, color="red",
                                                   strokeWidth=3).encode(
            x=x, y=y, tooltip=["threshold", alt.Tooltip("timesteps:Q", format=".3g"),
                               alt.Tooltip("accuracy:Q", format=".4f")]))
    return alt.layer(*layers).properties(height=400)


def memory_accuracy_chart(points: pd.DataFrame, reference: pd.DataFrame) -> alt.LayerChart:
    """Accuracy vs peak training memory per rule (colour) and K (shape); E2E as reference lines."""
    x = alt.X("memory_bytes:Q", title="peak training memory (bytes)", scale=alt.Scale(type="log"))
    y = alt.Y("mean:Q", title="accuracy", scale=alt.Scale(zero=False))
    dots = alt.Chart(points).mark_point(filled=True, size=120).encode(
        x=x, y=y, color=alt.Color("method:N", title="rule", scale=SCHEME),
        shape=alt.Shape("variant:N", title="K"),
        tooltip=["method", "variant", "model", "dataset",
                 alt.Tooltip("memory_bytes:Q", format=".4s"),
                 alt.Tooltip("mean:Q", format=".4f"), "n"])
    layers = [dots]
    if not reference.empty:
        layers.append(alt.Chart(reference).mark_rule(color="black", strokeDash=[6, 3]).encode(
            y="mean:Q", tooltip=[alt.Tooltip("mean:Q", title="E2E accuracy", format=".4f")]))
        layers.append(alt.Chart(reference).mark_rule(color="black", strokeDash=[2, 2]).encode(
            x="memory_bytes:Q",
            tooltip=[alt.Tooltip("memory_bytes:Q", title="E2E memory", format=".4s")]))
    return alt.layer(*layers).properties(height=400)
