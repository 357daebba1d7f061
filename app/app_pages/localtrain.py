"""Local learning: accuracy vs peak training memory per rule and K, with E2E as the reference."""

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
rows = df[df["memory_bytes"].notna() & df["accuracy"].notna()]
if rows.empty:
    w.no_rows("localtrain", "rows with both accuracy and memory")
    st.stop()
keys = ["method", "variant", "model", "dataset"]
pts = frames.mean_ci(rows, keys, "accuracy")
mem = rows.groupby(keys, dropna=False)["memory_bytes"].mean().rename("memory_bytes")
pts = pts.merge(mem.reset_index(), on=keys)
ref = pts[pts["method"].astype(str).str.lower() == "e2e"]
rules = pts[pts["method"].astype(str).str.lower() != "e2e"]
if ref.empty:
    st.caption("No E2E rows for this choice, so no reference line.")
else:
    e2e = ref.iloc[0]
    rules = rules.assign(memory_vs_e2e=rules["memory_bytes"] / e2e["memory_bytes"],
                         accuracy_vs_e2e=rules["mean"] - e2e["mean"])

st.subheader("Accuracy vs peak training memory")
w.show_chart(charts.memory_accuracy_chart(pts, ref.head(1)), pts,
             "accuracy vs training memory", key="localtrain-memory")
st.caption("Colour: rule; shape: number of local modules K. Dashed lines: E2E (backprop) "
           "accuracy and memory. Memory: peak saved activations plus parameter, gradient and "
           "optimizer bytes (hwlab.meters.training_memory), auxiliary nets included.")
st.dataframe(rules.sort_values(["method", "variant"]), hide_index=True)
