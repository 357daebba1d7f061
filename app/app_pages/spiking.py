"""Spiking: accuracy vs time steps for fixed T, the stopping rules and oracles with a threshold
slider (``spiking.dynamic-confidence``), and resilience to neuron faults (``spiking.faults``)."""

import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w
from hwlab._figure_data import clean_rows
from hwlab.figures import spiking_frames

STUDIES = ("spiking.dynamic-confidence", "spiking.faults")

st.title("Spiking")
have = [s for s in STUDIES if not q.study_results(s).empty]
if not have:
    w.no_rows("spiking")
    st.stop()
c0, _ = st.columns([2, 3])
study = w.select("study", have, "spiking-study", container=c0,
                 help="dynamic-confidence: accuracy vs time steps per stopping rule; faults: "
                      "neuron faults (dead, saturated, drifting) per exit rule")
base = q.study_results(study)
rows, model, dataset = w.model_dataset(base, "spiking")
rows = w.choose(rows, ("method",), key="spiking")
title = w.figure_title(study, model, dataset, rows["run_id"].unique())

if study == "spiking.faults":
    clean = rows[clean_rows(rows)].assign(series=lambda d: d["variant"].astype(str))
    faulty = rows[~clean_rows(rows)].assign(series=lambda d: d["variant"].astype(str))
    st.subheader("Accuracy under neuron faults per exit rule")
    if faulty.empty:
        w.elsewhere(base[~clean_rows(base)], "neuron-fault rows", model, dataset)
        st.stop()
    w.show_chart(charts.fault_curves(faulty, clean, x_title="fraction of faulty neurons"),
                 faulty, "neuron faults", key="spiking-neurons", title=title)
    st.caption("Colour: exit rule (fixed T*, fixed T max, the stopping rules, the oracle); one "
               "panel per neuron fault; the x axis is a fraction of neurons, not a bit error "
               "rate. " + charts.BAND_NOTE + ".")
    steps = faulty.groupby(["fault_model", "series", "fault_rate"], as_index=False)[
        "timesteps"].mean()
    st.dataframe(steps.pivot_table(index=["fault_model", "fault_rate"], columns="series",
                                   values="timesteps"), column_config=None)
    st.caption("Mean time steps per rule under each fault (a stuck neuron can delay or hasten "
               "the exit).")
    st.stop()

clean = rows[clean_rows(rows)]
curve, rules = spiking_frames(clean)
t = frames.fixed_t(clean["variant"])
ex = q.parse_extra(clean[t.isna()], ("threshold", "curve", "test_pareto"))
n_thr = ex.groupby(["method", "variant"])["threshold"].transform("nunique")
sweep_rows = ex[n_thr > 1]  # a rule stored as one row per threshold
sweeps = [sweep_rows.assign(rule=sweep_rows["variant"].str.removesuffix("-sweep"))
          [["rule", "threshold", "timesteps", "accuracy"]]]
for r in ex[ex["test_pareto"].notna()].itertuples():  # [threshold, accuracy, mean steps]
    c = pd.DataFrame(r.test_pareto, columns=["threshold", "accuracy", "timesteps"])
    sweeps.append(c.assign(rule=r.variant)[["rule", "threshold", "timesteps", "accuracy"]])
for r in ex[ex["curve"].notna()].itertuples():  # a rule row that carries a curve of records
    c = pd.DataFrame(r.curve).rename(columns={"mean_steps": "timesteps"})
    if {"threshold", "timesteps", "accuracy"} <= set(c):
        sweeps.append(c.assign(rule=r.variant)[["rule", "threshold", "timesteps", "accuracy"]])
sweep = pd.concat(sweeps, ignore_index=True).dropna().sort_values(["rule", "threshold"])
rules = rules[~rules["variant"].isin(sweep_rows["variant"])]

st.subheader("Accuracy vs time steps")
if curve.empty and rules.empty:
    w.elsewhere(base[base["timesteps"].notna()], "fixed-T or stopping-rule rows", model, dataset)
    st.stop()
current = None
if sweep.empty:
    st.info("No stored threshold sweep for this choice, so there is no threshold slider; the "
            "rules' chosen points are shown.")
else:
    names = sorted(sweep["rule"].unique())
    c1, c2 = st.columns([1, 3])
    rule = w.select("rule", names, "spiking-rule", "dynamic-confidence", c1)
    one = sweep[sweep["rule"] == rule]
    chosen = rules[(rules["variant"] == rule) & rules["threshold"].notna()]
    if len(chosen):  # the val-chosen threshold is an option of its own: the slider starts there
        pick = chosen.iloc[0]
        one = pd.concat([one, pd.DataFrame([{"rule": rule, "threshold": pick["threshold"],
                                             "timesteps": pick["timesteps"],
                                             "accuracy": pick["accuracy"]}])])
        one = one.drop_duplicates("threshold", keep="last").sort_values("threshold")
    thresholds = list(one["threshold"])
    start = float(chosen["threshold"].iloc[0]) if len(chosen) else thresholds[len(thresholds) // 2]
    thr = c2.select_slider("threshold (starts at the one chosen on val)", thresholds, value=start,
                           key=f"spiking-thr-{rule}", format_func=lambda v: f"{v:.4g}")
    current = one[one["threshold"] == thr].head(1)
    m1, m2, m3 = st.columns(3)
    m1.metric("threshold", f"{thr:.4g}")
    m2.metric("accuracy", f"{float(current['accuracy'].iloc[0]):.4f}")
    m3.metric("mean time steps", f"{float(current['timesteps'].iloc[0]):.3g}")
steps = pd.concat([rules["timesteps"], sweep["timesteps"]]).dropna()
zoom_to = float(steps.max()) * 1.4 if len(steps) else float(curve["timesteps"].max())
full = st.toggle(f"whole fixed-T range (up to T = {curve['timesteps'].max():.0f})",
                 value=False, key="spiking-full",
                 help="Off: the x axis is zoomed to where the rules and oracles are. Scroll or "
                      "drag on the chart to zoom further.")
domain = None if full or not len(steps) else (0, zoom_to)
shown = curve if domain is None else curve[curve["timesteps"] <= zoom_to]
chart = charts.spiking_steps(shown, rules, sweep, current, domain).interactive(bind_y=False)
w.show_chart(chart, pd.concat([curve.assign(kind="fixed-T"), rules,
                               sweep.assign(kind="sweep", variant=sweep["rule"])],
                              ignore_index=True),
             "accuracy vs time steps", key="spiking-curve", title=title)
st.caption("Grey: fixed T. Points: stopping rules (threshold chosen on val) and oracles (they "
           "read the label: a bound, not a method). Thin lines: a rule over the thresholds of "
           "its stored test front; the red cross is the slider's.")
st.dataframe(rules, hide_index=True)

faulty = rows[~clean_rows(rows) & rows["accuracy"].notna()]
if not faulty.empty:
    st.subheader("Resilience with and without early exit")
    faulty = faulty.assign(series=faulty["variant"].astype(str))
    ref = clean[clean["variant"].isin(faulty["variant"].unique())].assign(
        series=lambda d: d["variant"].astype(str))
    w.show_chart(charts.fault_curves(faulty, ref), faulty, "spiking accuracy vs fault rate",
                 key="spiking-faults", title=f"{title} · bit flips")
    st.caption(charts.BAND_NOTE + ".")
