"""Local learning: accuracy vs peak training memory (MiB) per rule across K, with E2E as the
reference and the chance level marked, and one table with memory, time per training step and
accuracy of every rule against E2E (``localtrain.compare`` rows)."""

import altair as alt
import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w

CHANCE = {"digits": 10, "mnist5k": 10, "synthetic": 10}  # classes of the built-in datasets

st.title("Local learning")
df = q.module_results("localtrain")
if df.empty:
    w.no_rows("localtrain")
    st.stop()
m = q.module_metrics("localtrain")  # this module's rows only, never the whole store
rows, model, dataset = w.model_dataset(m, "localtrain")
title = w.figure_title("localtrain.compare", model, dataset, rows["run_id"].unique())
rows = rows[rows["train_memory_bytes"].notna()]
if rows.empty:
    w.elsewhere(m[m["train_memory_bytes"].notna()], "rows with a training-memory figure", model,
                dataset)
    st.stop()
keys = ["method", "variant"]
step = rows["train_step_ms"] if "train_step_ms" in rows else rows["train_memory_bytes"] * float("nan")
mem = (rows.assign(step_ms=step).groupby(keys)
       .agg(memory_mib=("train_memory_bytes", "mean"), step_ms=("step_ms", "mean")).reset_index())
pts = mem.merge(frames.summarize(rows, keys), on=keys, how="left")  # accuracy NaN: not measured
pts["K"] = pts["variant"].astype(str).str.extract(r"K=(\d+)", expand=False).astype(float)
is_e2e = pts["method"].astype(str).str.lower() == "e2e"
ref = pts[is_e2e].head(1)
classes = CHANCE.get(str(dataset))
chance = 1 / classes if classes else None
rules = pts[~is_e2e].copy()
if not ref.empty:
    rules["memory_vs_e2e"] = rules["memory_mib"] / float(ref["memory_mib"].iloc[0])
    rules["accuracy_vs_e2e"] = rules["mean"] - float(ref["mean"].iloc[0])
    rules["step_vs_e2e"] = rules["step_ms"] / float(ref["step_ms"].iloc[0])
if chance is not None:
    rules["at_chance"] = rules["mean"] <= chance + 0.02

x = alt.X("memory_mib:Q", title="peak training memory (MiB)", scale=alt.Scale(type="log"))
y = alt.Y("mean:Q", title="test accuracy", scale=alt.Scale(zero=False))
color = alt.Color("method:N", title="rule", scale=alt.Scale(scheme="tableau10"))
measured = pts[pts["mean"].notna()]
if not measured.empty:
    st.subheader("Accuracy vs peak training memory")
    layers = [alt.Chart(measured).mark_line(opacity=0.5).encode(x=x, y=y, color=color,
                                                               order="K:Q"),
              alt.Chart(measured).mark_point(filled=True, size=110).encode(
                  x=x, y=y, color=color, shape=alt.Shape("variant:N", title="K"),
                  tooltip=["method", "variant", alt.Tooltip("memory_mib:Q", format=".2f"),
                           alt.Tooltip("step_ms:Q", title="ms per step", format=".1f"),
                           alt.Tooltip("mean:Q", format=".4f"), "n"])]
    if not ref.empty and ref["mean"].notna().all():
        layers.append(alt.Chart(ref).mark_rule(color="black", strokeDash=[6, 3]).encode(y="mean:Q"))
        layers.append(alt.Chart(ref).mark_rule(color="black", strokeDash=[2, 2]).encode(
            x="memory_mib:Q"))
    near = chance is not None and float(measured["mean"].min()) <= chance + 0.15
    if near:  # drawn only when a rule comes close: else it would squash the axis
        layers.append(alt.Chart(measured.head(1).assign(chance=chance)).mark_rule(
            color="#d62728", strokeDash=[1, 3]).encode(y="chance:Q"))
    w.show_chart(alt.layer(*layers).properties(height=400), pts, "accuracy vs training memory",
                 key="localtrain-memory", title=title)
    st.caption("Colour: rule, joined across K (shape: number of local modules). Dashed black: "
               "E2E (backprop) accuracy and memory; dotted red: chance (1/classes), drawn when "
               "a rule comes within 15 points of it"
               + (f" (here off the axis: {chance:.2f})" if chance and not near else "")
               + ". Memory: "
               "peak saved activations plus parameter, gradient and optimizer bytes "
               "(hwlab.meters.training_memory), auxiliary nets included, in MiB.")
    low = rules[rules["at_chance"].fillna(False).astype(bool)] if chance is not None else \
        rules.iloc[:0]
    if len(low):
        st.warning("At chance (accuracy within 2 points of 1/classes): " + ", ".join(
            f"{r.method} {r.variant}" for r in low.itertuples())
            + ". These rules did not learn in this run (more epochs, or a smaller K).")
else:
    st.subheader("Peak training memory")
    st.info("These rows have no accuracy (the study ran with epochs=0: memory and latency "
            "only), so memory is shown alone.")
    bars = charts.bar_chart(pts.assign(label=pts["method"] + " " + pts["variant"]), "label",
                            "memory_mib", color="method", title="peak training memory (MiB)")
    if not ref.empty:
        bars = alt.layer(bars, alt.Chart(ref).mark_rule(strokeDash=[6, 3]).encode(
            x="memory_mib:Q"))
    w.show_chart(bars, pts, "training memory", key="localtrain-memory", title=title)
st.subheader("Memory, time per step and accuracy")
table = pd.concat([ref.assign(memory_vs_e2e=1.0, step_vs_e2e=1.0, accuracy_vs_e2e=0.0), rules])
first = ["method", "variant", "K", "memory_mib", "memory_vs_e2e", "step_ms", "step_vs_e2e", "mean",
         "accuracy_vs_e2e"]
table = table.drop(columns=["band"], errors="ignore")
table = table[[c for c in first if c in table] + [c for c in table if c not in first]]
st.dataframe(table.sort_values(["K", "method"]).rename(columns={"mean": "accuracy"}),
             hide_index=True)
st.caption("memory_mib: peak training memory of one step (saved activations + parameters, "
           "gradients and optimizer state; hwlab.meters.training_memory). step_ms: median wall "
           "clock of one full training step at the same batch: the price of the auxiliary nets, "
           "of recomputation (checkpoint) and of SGR's double backward. The checkpoint rule's "
           "memory_mib misses its recomputed activations: read extra.live_memory_bytes, the "
           "live-tensor peak, for it (docs/localtrain.md).")
