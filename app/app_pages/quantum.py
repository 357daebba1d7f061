"""Quantum: the swap levels side by side (accuracy, parameters, latency, training time) with
their parameter-matched classical controls, the paired verdict, accuracy under device noise per
level, and the fault sweep on quantum vs classical parameters (``quantum.creep`` rows)."""

import altair as alt
import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w
from hwlab._figure_data import clean_rows, extra_number, is_aggregate

st.title("Quantum")
df = q.module_results("quantum")
if df.empty:
    w.no_rows("quantum")
    st.stop()
rows, model, dataset = w.model_dataset(df, "quantum")
title = w.figure_title("quantum.creep", model, dataset, rows["run_id"].unique())
ARMS = ("level-", "control-", "noisy-")  # hybrid, parameter-matched control, noise-aware
levels = rows[clean_rows(rows) & rows["variant"].astype(str).str.startswith(ARMS)
              & ~is_aggregate(rows)]
if levels.empty:
    w.elsewhere(df[~is_aggregate(df) & clean_rows(df)], "per-seed swap-level rows", model,
                dataset)
    st.stop()
levels = levels.assign(train_seconds=extra_number(levels, "train_seconds"))

panels, tables = [], []
for column, label, log in (("accuracy", "test accuracy", False), ("params", "parameters", True),
                           ("latency_ms", "inference latency per sample (ms)", True),
                           ("train_seconds", "training time (s)", True)):
    if levels[column].notna().any():
        d = levels.astype({column: "float64"})
        s = frames.summarize(d, ["variant"], column)
        few = s.loc[~s["band"].astype(bool), ["variant"]]
        seeds = d.merge(few, on="variant")[["variant", column]].rename(columns={column: "value"})
        panels.append(charts.levels_chart(s, seeds, label, log=log))
        tables.append(s.assign(metric=column))
st.subheader("Levels side by side")
summary = pd.concat(tables, ignore_index=True)
grid = alt.vconcat(*(alt.hconcat(*panels[i:i + 2]) for i in range(0, len(panels), 2)))
w.show_chart(grid, summary, "quantum levels", key="quantum-levels", title=title)
st.caption("Level N: the first N swappable layers replaced by PennyLane quantum layers; "
           "control-N: each of those quantum layers replaced by a classical layer with the same "
           "inputs, outputs and parameter count; noisy-N: level N trained under depolarizing "
           "noise. "
           f"Bars: mean over {int(summary['n'].max())} seed(s); whiskers: 95% interval "
           "(proportion interval for accuracy) where there are >= 3 seeds; circles: the seeds "
           "themselves where there are fewer. Rows averaged by the study (`creep-mean`) are "
           "not drawn next to the seeds they average.")
st.dataframe(summary.pivot_table(index="variant", columns="metric", values="mean"))

paired = rows[rows["method"] == "creep-paired-mean"]
if not paired.empty:
    st.subheader("Quantum vs its parameter-matched classical control")
    ex = q.parse_extra(paired, ("hybrid_minus_control", "hybrid_minus_level0", "control_mean",
                                "verdict")).reindex(paired.index)

    def _cell(d):
        if not isinstance(d, dict) or not d.get("n"):
            return "-"
        return f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] (n={d['n']})"

    st.dataframe(pd.DataFrame({
        "level": paired["variant"], "hybrid accuracy": paired["accuracy"],
        "control accuracy": ex["control_mean"],
        "hybrid - control (points, 95% CI)": ex["hybrid_minus_control"].map(_cell),
        "hybrid - level 0 (points, 95% CI)": ex["hybrid_minus_level0"].map(_cell)}),
        hide_index=True)
    for text in ex["verdict"].dropna().unique():
        st.markdown(f"**Verdict.** {text}")

noisy = rows[(rows["method"] == "creep-noise") & rows["accuracy"].notna()]
if not noisy.empty:
    st.subheader("Accuracy under device noise, per level")
    noisy = noisy.assign(series=noisy["variant"].astype(str))
    ref = levels[levels["variant"].isin(noisy["series"].unique())].assign(
        series=lambda d: d["variant"].astype(str))
    w.show_chart(charts.fault_curves(noisy, ref, x_title="noise level (probability; 1/shots)"),
                 noisy, "quantum accuracy vs noise", key="quantum-noise",
                 title=f"{title} · device noise")
    st.caption("Each trained model evaluated under one noise kind at a time (panel): "
               "depolarizing (1 qubit, every wire) and depolarizing2 (2 qubit, neighbouring "
               "pairs) and amplitude damping after every gate, readout bit flips before the "
               "measurement, finite shots (x = 1/shots). level-N: trained noiseless; noisy-N: "
               "trained under depolarizing noise. Dashed: the noiseless accuracy. "
               + charts.BAND_NOTE + ".")

faulty = rows[(rows["method"] == "creep-faults") & rows["accuracy"].notna()]
if not faulty.empty:
    st.subheader("Fault sweep: quantum vs classical parameters")
    target = q.parse_extra(faulty, ("target",))["target"].reindex(faulty.index)
    faulty = faulty.assign(series=faulty["variant"] + " · " + target.fillna("all").astype(str))
    ref = faulty[["series", "variant"]].drop_duplicates().merge(
        levels.groupby("variant", as_index=False)["accuracy"].mean(), on="variant")
    w.show_chart(charts.fault_curves(faulty, ref), faulty, "quantum accuracy vs fault rate",
                 key="quantum-faults", title=f"{title} · bit flips")
    st.caption("Bit flips in the quantum layers' gate parameters or in the classical weights "
               "(colour: level · faulty parameters). " + charts.BAND_NOTE + ".")
