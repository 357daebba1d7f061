"""Number formats: accuracy vs BER per storage format (faults in all words, element codes only,
block scale codes only, scales under SEC-DED) and accuracy vs stored bytes at one BER
(``faultlab.formats`` rows)."""

import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _widgets as w
from hwlab._figure_data import clean_rows
from hwlab.stats import proportion_ci

STUDY = "faultlab.formats"

st.title("Number formats")
df, rows, model, dataset, title = w.study_page(STUDY, "formats", "fmt", studies=(STUDY,))
clean = rows[clean_rows(rows)].assign(series=lambda d: d["variant"].astype(str))
faulty = rows[~clean_rows(rows)].assign(series=lambda d: d["variant"].astype(str))
if faulty.empty:
    w.elsewhere(df[~clean_rows(df)], "faulty format rows", model, dataset)
    st.stop()

st.subheader("Accuracy vs BER per format")
w.show_chart(charts.fault_curves(faulty, clean), faulty, "formats", key="fmt-curves",
             title=title)
st.caption("Series = storage format (faultlab.quantize; float32 unquantised, bfloat16 cast); "
           "panels: faults in all stored words, in the element codes only, in the block scale "
           "codes only, and all words with the scale words under SEC-DED (72/64). Every format "
           "meets the same nested maps per target. " + charts.BAND_NOTE + ".")

st.subheader("Accuracy vs stored bytes at one BER")
targets = sorted(faulty["fault_model"].astype(str).unique())
c1, c2 = st.columns(2)
target = w.select("faults in", targets, "fmt-bytes-target", "bitflip-all", c1)
one = faulty[faulty["fault_model"] == target]
rates = sorted(one["fault_rate"].unique())
rate = w.select("BER", rates, "fmt-bytes-rate", rates[len(rates) // 2], c2,
                format_func=lambda r: f"{r:.0e}")
at = one[one["fault_rate"] == rate]


def _point(g: pd.DataFrame) -> pd.Series:
    mean, lo, hi = proportion_ci(g["accuracy"].to_numpy())
    return pd.Series({"accuracy": mean, "lo": lo, "hi": hi, "trials": len(g),
                      "memory_bytes": g["memory_bytes"].max()})


points = at.groupby("variant").apply(_point, include_groups=False).reset_index()
points = points.merge(clean.groupby("variant", as_index=False)["accuracy"].mean().rename(
    columns={"accuracy": "fault_free"}), on="variant", how="left")
st.altair_chart(charts.format_bytes_chart(points, rate).properties(title=title))
table = points.sort_values("accuracy", ascending=False)[
    ["variant", "memory_bytes", "fault_free", "accuracy", "lo", "hi", "trials"]]
st.dataframe(table.rename(columns={"variant": "format", "accuracy": f"accuracy at {rate:.0e}",
                                   "lo": "95% low", "hi": "95% high"}),
             hide_index=True, use_container_width=True)
st.caption("Bytes = the stored weight words (element codes + scale codes; protected: + check "
           "bits). Mean accuracy over the fault maps at the chosen BER with the 95% interval "
           "(hwlab.stats.proportion_ci); the fault-free accuracy of each format beside it.")
