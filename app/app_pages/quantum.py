"""Quantum: the swap levels side by side (accuracy, parameters, latency, training time), and the
fault sweep on quantum vs classical parameters."""

import altair as alt
import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w

st.title("Quantum")
df = q.module_results("quantum")
if df.empty:
    w.no_rows("quantum")
    st.stop()
df = w.choose(df, ("dataset", "model"), key="quantum")
clean = df[df["fault_rate"].isna() | (df["fault_rate"] == 0)]
levels = clean[clean["variant"].astype(str).str.startswith("level-")]
per_seed = levels[~levels["method"].astype(str).str.endswith("-mean")]
levels = per_seed if not per_seed.empty else levels  # seed-averaged rows only when alone
if levels.empty:
    w.no_rows("quantum", "swap-level rows (variant level-N)")
    st.stop()
train = q.module_extra("quantum", "train_seconds")["train_seconds"]
levels = levels.assign(train_seconds=pd.to_numeric(train.reindex(levels.index), errors="coerce"))

panels, tables = [], []
for column, title, log in (("accuracy", "accuracy", False), ("params", "parameters", True),
                           ("latency_ms", "latency per sample (ms)", True),
                           ("train_seconds", "training time (s)", True)):
    if levels[column].notna().any():
        s = frames.mean_ci(levels.astype({column: "float64"}), ["variant"], column)
        panels.append(charts.bars_with_ci(s, "variant", title, log=log))
        tables.append(s.assign(metric=column))
st.subheader("Levels side by side")
summary = pd.concat(tables, ignore_index=True)
grid = alt.vconcat(*(alt.hconcat(*panels[i:i + 2]) for i in range(0, len(panels), 2)))
w.show_chart(grid, summary, "quantum levels", key="quantum-levels")
st.caption("Level N: the first N swappable layers replaced by PennyLane quantum layers. "
           f"Bars: mean over {int(summary['n'].max())} seed(s); whiskers: 95% Student-t interval.")
st.dataframe(summary.pivot_table(index="variant", columns="metric", values="mean"))

faulty = df[df["fault_rate"].notna() & (df["fault_rate"] > 0)]
if not faulty.empty:
    st.subheader("Fault sweep: quantum vs classical parameters")
    target = q.module_extra("quantum", "target")["target"].reindex(faulty.index)
    faulty = faulty.assign(hit=faulty["variant"] + " · " + target.fillna("all").astype(str))
    s = frames.mean_ci(faulty, ["hit", "fault_model", "fault_rate"])
    w.show_chart(charts.curve_with_band(s, color="hit", facet="fault_model"), s,
                 "quantum accuracy vs fault rate", key="quantum-faults")
    st.caption("Bit flips in the quantum layers' gate parameters or in the classical weights "
               "(colour: level · faulty parameters).")
