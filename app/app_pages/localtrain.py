"""Local learning: accuracy vs peak training memory per rule and K, with E2E as the reference."""

import altair as alt
import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w

st.title("Local learning")
df = q.module_results("localtrain")
if df.empty:
    w.no_rows("localtrain")
    st.stop()
df = w.choose(df, ("model", "dataset"), key="localtrain")
rows = df[df["memory_bytes"].notna()]
if rows.empty:
    w.no_rows("localtrain", "rows with a training-memory figure")
    st.stop()
keys = ["method", "variant", "model", "dataset"]
rows = rows.astype({"memory_bytes": "float64"})
pts = frames.mean_ci(rows.assign(accuracy=rows["accuracy"].fillna(-1.0)), keys, "accuracy")
pts["mean"] = pts["mean"].where(pts["mean"] >= 0)  # accuracy not measured (epochs=0): NaN
mem = rows.groupby(keys, dropna=False)["memory_bytes"].mean().rename("memory_bytes")
pts = pts.merge(mem.reset_index(), on=keys)
is_e2e = pts["method"].astype(str).str.lower() == "e2e"
ref = pts[is_e2e].groupby(["model", "dataset"], dropna=False)[["mean", "memory_bytes"]].mean()
ref = ref.reset_index()
rules = pts[~is_e2e]
if ref.empty:
    st.caption("No E2E rows for this choice, so no reference line.")
else:
    rules = rules.assign(memory_vs_e2e=rules["memory_bytes"] / ref["memory_bytes"].iloc[0],
                         accuracy_vs_e2e=rules["mean"] - ref["mean"].iloc[0])

if pts["mean"].notna().any():
    st.subheader("Accuracy vs peak training memory")
    w.show_chart(charts.memory_accuracy_chart(pts[pts["mean"].notna()], ref.head(1)), pts,
                 "accuracy vs training memory", key="localtrain-memory")
    st.caption("Colour: rule; shape: number of local modules K. Dashed lines: E2E (backprop) "
               "accuracy and memory. Memory: peak saved activations plus parameter, gradient "
               "and optimizer bytes (hwlab.meters.training_memory), auxiliary nets included.")
else:
    st.subheader("Peak training memory")
    st.info("These rows have no accuracy (the study ran with epochs=0: memory and latency "
            "only), so memory is shown alone.")
    bars = charts.bar_chart(pts.assign(label=pts["method"] + " " + pts["variant"]), "label",
                            "memory_bytes", color="method", title="peak training memory (bytes)")
    if not ref.empty:
        bars = alt.layer(bars, alt.Chart(ref.head(1)).mark_rule(strokeDash=[6, 3]).encode(
            x="memory_bytes:Q"))
    w.show_chart(bars, pts, "training memory", key="localtrain-memory")
st.dataframe(rules.sort_values(["method", "variant"]), hide_index=True)
