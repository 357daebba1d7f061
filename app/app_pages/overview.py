"""Overview: a trade-off scatter of two metrics (one meaning per axis) on one dataset, with the
Pareto front, and accuracy vs weight storage coloured by accuracy at a chosen BER."""

import numpy as np
import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w

MAX_POINTS = 5000  # beyond this the scatter shows the Pareto front plus a seeded sample

st.title("Overview")
for name, err, sec in st.session_state.pop("start-report", []):
    (st.error if err else st.success)(f"{name}: {'failed: ' + err if err else 'done'} "
                                      f"({sec:.0f} s)")
if q.row_count() == 0:
    w.empty_store_panel()
    st.stop()

_, _, dataset = w.model_dataset(None, "ov", models=False, combos=q.metric_combinations())
clean, faulty = q.dataset_metrics(dataset)  # one front = one dataset; faulty: points
metrics = frames.numeric_metrics(clean)
if len(metrics) < 2:
    st.info(f"The fault-free rows of {dataset} have fewer than two metrics with values "
            f"({', '.join(metrics) or 'none'}); pick another dataset.")
    st.stop()
label = lambda k: frames.METRICS[k].label
x_default = next((k for k in ("model_bytes", "train_memory_bytes", "inference_ms", "timesteps",
                              "params") if k in metrics and k != "accuracy"), metrics[0])
c1, c2, c3 = st.columns([1, 1, 2])
y = w.select("y", metrics, "ov-y", "accuracy" if "accuracy" in metrics else metrics[-1], c1,
             format_func=label)
x = w.select("x", [k for k in metrics if k != y], "ov-x", x_default, c2, format_func=label)
pts = q.points(x, y)
pts = pts[pts["dataset"] == dataset]
modules = sorted(pts["module"].unique())
chosen = w.multiselect("modules", modules, "ov-modules", c3)
pts = pts[pts["module"].isin(chosen)]
if pts.empty:
    st.info(f"No fault-free rows of {dataset} have both {label(x)} and {label(y)}; pick another "
            "pair of metrics.")
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
event = w.show_chart(chart, pts, f"{y} vs {x}", key="overview", on_select="rerun",
                     title=f"Overview · {dataset} · {label(y)} vs {label(x)}")
why = ""
if frames.METRICS[x].better is None or frames.METRICS[y].better is None:
    why = (f" No front: {label(x) if frames.METRICS[x].better is None else label(y)} is a "
           "condition of the experiment, not an objective.")
st.caption(f"{len(pts):,} fault-free points of {dataset} (trials and seeds averaged, aggregate "
           f"rows such as `*-mean` left out) from {pts['run_id'].nunique()} runs. Front over "
           f"the non-oracle points (oracles: crosses, they read the label): better is "
           f"{frames.METRICS[x].better} {label(x)}, {frames.METRICS[y].better} {label(y)}.{why} "
           "Hover a point for its run, click it to open the run below.")

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

st.subheader("Reliability and efficiency")
if faulty.empty:
    w.elsewhere(q.ber_points(), "weight-fault rows (bit error rates)", None, dataset)
else:
    c1, c2 = st.columns(2)
    fms = sorted(faulty["fault_model"].astype(str).unique())
    fm = w.select("fault model", fms, "ov-rel-fault", "bitflip", c1)
    at = faulty[faulty["fault_model"] == fm]
    counts = at.groupby("fault_rate")["run_id"].nunique()
    rates = sorted(counts.index)
    ber = w.select("BER", rates, "ov-rel-ber", counts.idxmax(), c2,
                   format_func=lambda r: f"{r:.0e}")
    configs = q.reliability(dataset, ber, fm)
    configs = configs[configs["memory"].notna() & np.isfinite(configs["memory"])]
    if configs.empty:
        st.info(f"No configuration of {dataset} has both a fault-free accuracy and a weight "
                "storage figure.")
    else:
        w.show_chart(charts.reliability_chart(configs, ber), configs, "reliability vs memory",
                     key="ov-reliability",
                     title=f"Overview · {dataset} · accuracy vs storage at BER {ber:.0e}")
        st.caption(f"One point per deployed configuration (study, run, model, variant, format; "
                   "local-learning rows are on their page, their memory is training memory): "
                   f"fault-free accuracy against weight storage (stored bytes, else parameters "
                   f"x bytes of the format), coloured by the mean accuracy under {fm} at BER "
                   f"{ber:.0e}; hollow grey: not measured at that BER.")
