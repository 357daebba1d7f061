"""Quantum: the swap levels side by side (accuracy, parameters, latency, training time) and the
fault sweep on quantum vs classical parameters (``quantum.creep`` rows)."""

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
levels = rows[clean_rows(rows) & rows["variant"].astype(str).str.startswith("level-")
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
st.caption("Level N: the first N swappable layers replaced by PennyLane quantum layers. "
           f"Bars: mean over {int(summary['n'].max())} seed(s); whiskers: 95% interval "
           "(proportion interval for accuracy) where there are >= 3 seeds; circles: the seeds "
           "themselves where there are fewer. Rows averaged by the study (`creep-mean`) are "
           "not drawn next to the seeds they average.")
st.dataframe(summary.pivot_table(index="variant", columns="metric", values="mean"))

faulty = rows[~clean_rows(rows) & rows["accuracy"].notna()]
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
