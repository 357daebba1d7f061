"""Overview: one trade-off scatter of any two metrics across every module, with the Pareto front."""

import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w

MAX_POINTS = 5000  # beyond this the scatter shows the Pareto front plus a seeded sample

st.title("Overview")
df = q.results()
if df.empty:
    w.empty_store_panel()
    st.stop()

metrics = frames.numeric_metrics(df)
if len(metrics) < 2:
    st.info(f"The store holds {len(df)} rows but fewer than two metrics with values "
            f"({', '.join(metrics) or 'none'}); nothing to plot against each other yet.")
    st.stop()
x_default = next((m for m in ("memory_bytes", "latency_ms", "fault_rate", "timesteps", "params")
                  if m in metrics), metrics[0])
y_default = "accuracy" if "accuracy" in metrics and x_default != "accuracy" else metrics[-1]
label = lambda m: frames.METRICS[m].label
c1, c2, c3 = st.columns([1, 1, 2])
y = c1.selectbox("y", metrics, index=metrics.index(y_default), format_func=label, key="ov-y")
x_choices = [m for m in metrics if m != y]
x = c2.selectbox("x", x_choices, format_func=label, key="ov-x",
                 index=x_choices.index(x_default) if x_default in x_choices else 0)
pts = q.points(x, y)
modules = sorted(df["module"].dropna().unique())  # all modules, so the choice survives x/y
chosen = c3.multiselect("modules", modules, default=modules, key="ov-modules")
pts = pts[pts["module"].isin(chosen)]
if pts.empty:
    st.info(f"No rows have both {label(x)} and {label(y)} for the chosen modules; "
            "pick another pair of metrics.")
    st.stop()

c4, c5, c6 = st.columns(3)
log_x = c4.toggle(f"log {label(x)}", key=f"ov-logx-{x}",
                  value=frames.METRICS[x].log and frames.log_fits(pts[x]))
log_y = c5.toggle(f"log {label(y)}", key=f"ov-logy-{y}",
                  value=frames.METRICS[y].log and frames.log_fits(pts[y]))
show_front = c6.toggle("Pareto front", value=True, key="ov-front")
for name, on in ((x, log_x), (y, log_y)):
    if on and (pts[name] <= 0).any():
        st.caption(f"{int((pts[name] <= 0).sum())} points with {label(name)} <= 0 are hidden "
                   "on the log axis.")
        pts = pts[pts[name] > 0]

front = frames.pareto_front(pts, x, y)
shown = pts
if len(pts) > MAX_POINTS:
    shown = pts.sample(MAX_POINTS, random_state=0)
    st.caption(f"{len(pts):,} points: showing a seeded sample of {MAX_POINTS:,} "
               "(the Pareto front is computed over all of them).")
chart = charts.tradeoff_chart(shown, front if show_front else front.iloc[:0], x, y, log_x, log_y)
event = w.show_chart(chart, pts, f"{y} vs {x}", key="overview", on_select="rerun")
st.caption(f"{len(pts):,} points (trials and seeds averaged) from {pts['run_id'].nunique()} runs; "
           f"better is {frames.METRICS[x].better} {label(x)}, {frames.METRICS[y].better} "
           f"{label(y)}. Hover a point for its run, click it to open the run below.")

picked = [p.get("run_id") for p in (event.selection.get(charts.PICK) or [])] if event else []
picked = [r for r in picked if r]
with st.expander(f"Pareto front ({len(front)} points)", expanded=False):
    st.dataframe(front, hide_index=True)
if picked:
    run_id = picked[0]
    st.subheader(f"Run {run_id}")
    runs = q.runs()
    st.dataframe(runs[runs["run_id"] == run_id].drop(columns="config"), hide_index=True)
    st.json(q.run_config(run_id), expanded=False)
    st.dataframe(pts[pts["run_id"] == run_id], hide_index=True)
