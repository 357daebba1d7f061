"""Altair (Vega-Lite) chart builders of the dashboard (beyond the shared ones in hwlab.figures).

Each builder takes a small, already aggregated DataFrame and returns an Altair chart; no builder
reads the store or calls Streamlit, so they are tested directly.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from app._frames import METRICS, series_colors
from hwlab.figures import BAND_NOTE, fault_curves, heatmap, pareto_chart, spiking_steps

__all__ = ["BAND_NOTE", "PICK", "bar_chart", "compare_chart", "fault_curves", "heatmap", "levels_chart",
           "pareto_chart", "reliability_chart", "spiking_steps", "tradeoff_chart",
           "words_chart"]

PICK = "pick"  # name of the Overview's click selection (read back by st.altair_chart on_select)
SCHEME = alt.Scale(scheme="tableau10")


def _label(metric: str) -> str:
    return METRICS[metric].label if metric in METRICS else metric


def _axis(field: str, log: bool, channel=alt.X):
    return channel(f"{field}:Q", title=_label(field),
                   scale=alt.Scale(type="log") if log else alt.Scale(zero=False))


def tradeoff_chart(points: pd.DataFrame, front: pd.DataFrame, x: str, y: str,
                   log_x: bool = False, log_y: bool = False) -> alt.LayerChart:
    """Scatter of ``y`` against ``x``, one fixed colour per module · method, oracles hollow, the
    Pareto front as a dashed staircase. Clicking selects the run (selection ``pick``)."""
    colors = series_colors(points["series"])
    pick = alt.selection_point(name=PICK, fields=["run_id"], on="click")
    tips = [c for c in ("run_id", "study", "model", "dataset", "variant", "dtype") if c in points]
    tips += [alt.Tooltip(f"{x}:Q", title=_label(x), format=".4g"),
             alt.Tooltip(f"{y}:Q", title=_label(y), format=".4g"), alt.Tooltip("n:Q", title="rows")]
    xenc, yenc = _axis(x, log_x), _axis(y, log_y, alt.Y)
    color = alt.Color("series:N", title="module · method",
                      scale=alt.Scale(domain=list(colors), range=list(colors.values())))
    dots = alt.Chart(points).mark_point(size=70).encode(
        x=xenc, y=yenc, color=color, shape=alt.Shape(
            "oracle:N", title="oracle (reads the label)",
            scale=alt.Scale(domain=[False, True], range=["circle", "cross"]),
            legend=alt.Legend() if points["oracle"].any() else None),
        fill=alt.condition("datum.oracle", alt.value("transparent"), color),
        opacity=alt.condition(pick, alt.value(0.9), alt.value(0.25)), tooltip=tips,
    ).add_params(pick)
    layers = [dots]
    if not front.empty:
        step = "step-after" if METRICS[x].better == "min" else "step-before"
        layers.append(alt.Chart(front.assign(front="Pareto front")).mark_line(
            point=alt.OverlayMarkDef(shape="diamond", size=60, color="black"), color="black",
            strokeDash=[5, 3], interpolate=step).encode(x=xenc, y=yenc,
                                                         tooltip=tips[:-1] + ["front:N"]))
    return alt.layer(*layers).properties(height=420).interactive(bind_y=False)


def reliability_chart(configs: pd.DataFrame, ber: float) -> alt.LayerChart:
    """Clean accuracy vs weight storage per configuration, coloured by its accuracy at ``ber``
    (hollow grey: not measured at that BER)."""
    x = alt.X("memory:Q", title="weight storage (MiB)", scale=alt.Scale(type="log"))
    y = alt.Y("clean:Q", title="fault-free accuracy", scale=alt.Scale(zero=False))
    tips = ["study", "model", "variant", "dtype", alt.Tooltip("memory:Q", format=".4g"),
            alt.Tooltip("clean:Q", format=".4f"), alt.Tooltip("at_ber:Q", format=".4f",
                                                             title=f"accuracy at {ber:.0e}"),
            "memory_source"]
    measured = configs[configs["at_ber"].notna()]
    missing = configs[configs["at_ber"].isna()]
    layers = [alt.Chart(measured).mark_point(filled=True, size=110).encode(
        x=x, y=y, shape=alt.Shape("study:N", legend=alt.Legend(orient="bottom", columns=3)),
        tooltip=tips, color=alt.Color("at_ber:Q", title=f"accuracy at BER {ber:.0e}",
                        scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1])))]
    if not missing.empty:
        layers.append(alt.Chart(missing).mark_point(filled=False, size=90, color="#999").encode(
            x=x, y=y, shape=alt.Shape("study:N"), tooltip=tips))
    return alt.layer(*layers).properties(height=380)


def levels_chart(summary: pd.DataFrame, trials: pd.DataFrame, title: str,
                 log: bool = False) -> alt.LayerChart:
    """Mean per quantum level: bars (points on a log axis) with the interval where there are
    >= 3 seeds, and the seeds themselves as circles."""
    x = alt.X("variant:N", title=None, sort=None, axis=alt.Axis(labelAngle=0))
    y = alt.Y("mean:Q", title=title, scale=alt.Scale(type="log") if log else alt.Scale())
    base = alt.Chart(summary).encode(x=x)
    mark = base.mark_point(filled=True, size=160) if log else base.mark_bar(opacity=0.75)
    layers = [mark.encode(y=y, color=alt.Color("variant:N", legend=None, scale=SCHEME),
                          tooltip=["variant", alt.Tooltip("mean:Q", format=".4g"), "n"])]
    band = summary[summary["band"].astype(bool)]
    if not band.empty:
        layers.append(alt.Chart(band).mark_rule(color="black", strokeWidth=2).encode(
            x=x, y=alt.Y("lo:Q", title=title), y2="hi:Q"))
    if not trials.empty:
        layers.append(alt.Chart(trials).mark_point(shape="circle", filled=False, color="black",
                                                   size=50).encode(
            x=x, y=alt.Y("value:Q", title=title),
            tooltip=["variant", alt.Tooltip("value:Q", title="seed", format=".4g")]))
    return alt.layer(*layers).properties(width=260, height=220)


def bar_chart(df: pd.DataFrame, x: str, y: str, color: str | None = None,
              title: str | None = None) -> alt.Chart:
    """Grouped horizontal bars (clipping thresholds, memory-only rows)."""
    enc = {"y": alt.Y(f"{x}:N", title=x, sort=None), "x": alt.X(f"{y}:Q", title=title or y),
           "tooltip": [x, alt.Tooltip(f"{y}:Q", format=".4g")] + ([color] if color else [])}
    if color:
        enc.update(color=alt.Color(f"{color}:N", scale=SCHEME), yOffset=alt.YOffset(f"{color}:N"))
    return alt.Chart(df).mark_bar().encode(**enc)


def words_chart(words: pd.DataFrame) -> alt.Chart:
    """Mean words per outcome (corrected / detected / miscorrected / silent) vs BER, one panel
    per protection."""
    rates = sorted(words["fault_rate"].unique())
    top = max(float(words["words"].max()), 1.0)
    ticks = [0] + [10.0 ** k for k in range(int(np.log10(top)) + 2)]
    base = alt.Chart().encode(
        x=alt.X("fault_rate:Q", title="BER", scale=alt.Scale(type="log"),
                axis=alt.Axis(format=".0e", values=rates if len(rates) <= 12 else None)),
        y=alt.Y("words:Q", title="words per fault map (mean)", scale=alt.Scale(type="symlog"),
                axis=alt.Axis(values=ticks, format=",.0f")),
        color=alt.Color("outcome:N", scale=SCHEME),
        tooltip=["variant", "outcome", alt.Tooltip("fault_rate:Q", format=".0e"),
                 alt.Tooltip("words:Q", format=".4g")])
    layer = alt.layer(base.mark_line(point=True)).properties(width=220, height=220)
    return layer.facet(column=alt.Column("variant:N", title="protection"), data=words)


def compare_chart(both: pd.DataFrame, x: str, color: str = "side",
                  dash: str | None = None, facet: str | None = None) -> alt.Chart:
    """Both runs' mean accuracy on one chart: colour = side (run and variant label)."""
    log = x == "fault_rate"
    xenc = alt.X("point:N", title=None, sort=None) if x == "point" else alt.X(
        f"{x}:Q", title=x.replace("_", " "),
        scale=alt.Scale(type="log") if log else alt.Scale(zero=False),
        axis=alt.Axis(format=".0e") if log else alt.Axis())
    enc = {"x": xenc,
           "y": alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(zero=False)),
           "color": alt.Color(f"{color}:N", title="run · variant",
                              legend=alt.Legend(orient="bottom", labelLimit=600)),
           "tooltip": [color, x if x == "point" else alt.Tooltip(f"{x}:Q", format=".3g"),
                       alt.Tooltip("accuracy:Q", format=".4f")]}
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N")
    chart = alt.layer(alt.Chart().mark_line(point=True).encode(**enc)).properties(
        width=300 if facet else 600, height=300)
    if facet:
        return chart.facet(column=alt.Column(f"{facet}:N"), data=both)
    return alt.layer(alt.Chart(both).mark_line(point=True).encode(**enc)).properties(
        width=600, height=300)


def format_bytes_chart(points: pd.DataFrame, rate: float) -> alt.LayerChart:
    """Mean accuracy at one BER against stored bytes, one point per format with its interval
    (``points``: variant, memory_bytes, accuracy, lo, hi, trials, fault_free)."""
    x = alt.X("memory_bytes:Q", title="stored weight bytes", scale=alt.Scale(type="log"))
    y = alt.Y("accuracy:Q", title=f"accuracy at BER {rate:.0e}", scale=alt.Scale(domain=[0, 1]))
    tips = [alt.Tooltip("variant:N", title="format"), alt.Tooltip("memory_bytes:Q", format=",d"),
            alt.Tooltip("accuracy:Q", format=".4f"), alt.Tooltip("fault_free:Q", format=".4f"),
            "trials"]
    base = alt.Chart(points).encode(x=x, color=alt.Color("variant:N", title="format",
                                                         scale=SCHEME), tooltip=tips)
    return alt.layer(base.mark_rule().encode(y=alt.Y("lo:Q", title=None), y2="hi:Q"),
                     base.mark_point(filled=True, size=110).encode(y=y),
                     base.mark_text(dy=-12).encode(y=y, text="variant:N")).properties(height=360)
