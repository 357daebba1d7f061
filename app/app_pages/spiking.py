"""Spiking: accuracy vs time steps for fixed T, the stopping rules' points, the oracles, and a
threshold slider that moves a rule's point along its stored accuracy-vs-steps curve."""

import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w

st.title("Spiking")
df = q.module_results("spiking")
if df.empty:
    w.no_rows("spiking")
    st.stop()
df = w.choose(df, ("model", "dataset", "method"), key="spiking")
clean = df[df["fault_rate"].isna() | (df["fault_rate"] == 0)]

# Fixed-T curve: variants fixed-T<T>, averaged over seeds.
t = frames.fixed_t(clean["variant"])
fixed = clean[t.notna()].assign(timesteps=t[t.notna()])
curve = (fixed.groupby(["method", "variant", "timesteps"], dropna=False)["accuracy"].mean()
         .reset_index().sort_values("timesteps"))

# Threshold sweeps: per (method, variant) more than one stored threshold, or a stored "curve".
ex = q.module_extra("spiking", "threshold", "curve", "test_pareto")
ex = ex[ex.index.isin(clean.index) & ex.index.isin(clean.index[t.isna()])]
n_thr = ex.groupby(["method", "variant"])["threshold"].transform("nunique")
sweep_rows = ex[n_thr > 1]
sweeps = [sweep_rows.assign(rule=sweep_rows["variant"].str.removesuffix("-sweep"))
          [["rule", "threshold", "timesteps", "accuracy"]]]
for r in ex[ex["test_pareto"].notna()].itertuples():  # spiking study: [thr, acc, steps] list
    c = pd.DataFrame(r.test_pareto, columns=["threshold", "accuracy", "timesteps"])
    sweeps.append(c.assign(rule=r.variant)[["rule", "threshold", "timesteps", "accuracy"]])
for r in ex[ex["curve"].notna()].itertuples():  # a rule row that carries a curve of records
    c = pd.DataFrame(r.curve).rename(columns={"mean_steps": "timesteps"})
    if {"threshold", "timesteps", "accuracy"} <= set(c):
        sweeps.append(c.assign(rule=r.variant)[["rule", "threshold", "timesteps", "accuracy"]])
sweep = pd.concat(sweeps, ignore_index=True).dropna().sort_values(["rule", "threshold"])

rules = clean[t.isna() & ~clean.index.isin(sweep_rows.index) & clean["timesteps"].notna()]
rules = rules.assign(kind=rules["variant"].str.startswith("oracle").map(
    {True: "oracle", False: "rule"}), threshold=ex["threshold"].reindex(rules.index))
rules = (rules.groupby(["method", "variant", "kind"], dropna=False)
         .agg(timesteps=("timesteps", "mean"), accuracy=("accuracy", "mean"),
              threshold=("threshold", "first")).reset_index())

st.subheader("Accuracy vs time steps")
if curve.empty and rules.empty:
    w.no_rows("spiking", "fixed-T or stopping-rule rows")
    st.stop()
current = None
if sweep.empty:
    st.info("No stored threshold sweep (a rule's accuracy-vs-steps curve over thresholds) for "
            "this choice, so there is no threshold slider; the rules' chosen points are shown.")
else:
    names = sorted(sweep["rule"].unique())
    c1, c2 = st.columns([1, 3])
    rule = c1.selectbox("rule", names, key="spiking-rule",
                        index=names.index("dynamic-confidence") if "dynamic-confidence" in names
                        else 0)
    one = sweep[sweep["rule"] == rule]
    thresholds = sorted(one["threshold"].unique())
    chosen = rules.loc[rules["variant"] == rule, "threshold"].dropna()
    start = min(thresholds, key=lambda v: abs(v - chosen.iloc[0])) if len(chosen) else (
        thresholds[len(thresholds) // 2])
    thr = c2.select_slider("threshold", thresholds, value=start, key=f"spiking-thr-{rule}",
                           format_func=lambda v: f"{v:.4g}")
    current = one[one["threshold"] == thr].head(1)
    m1, m2, m3 = st.columns(3)
    m1.metric("threshold", f"{thr:.4g}")
    m2.metric("accuracy", f"{float(current['accuracy'].iloc[0]):.4f}")
    m3.metric("mean time steps", f"{float(current['timesteps'].iloc[0]):.3g}")
w.show_chart(charts.spiking_chart(curve, rules, sweep, current),
             pd.concat([curve.assign(kind="fixed-T"), rules,
                        sweep.assign(kind="sweep", variant=sweep["rule"])], ignore_index=True),
             "accuracy vs time steps", key="spiking-curve")
st.caption("Grey line: fixed T. Points: stopping rules (threshold chosen on val) and oracles. "
           "Thin lines: a rule over every stored threshold; the red cross is the slider's.")
st.dataframe(rules, hide_index=True)

faulty = df[df["fault_rate"].notna() & (df["fault_rate"] > 0)]
if not faulty.empty:
    st.subheader("Resilience with and without early exit")
    summary = frames.mean_ci(faulty, ["variant", "fault_model", "fault_rate"])
    w.show_chart(charts.curve_with_band(summary, color="variant", facet="fault_model"), summary,
                 "spiking accuracy vs fault rate", key="spiking-faults")
