"""Runs: the runs table, one run's config and rows, a two-run comparison, and exports.

Exports are built in memory when the button is clicked and handed to the browser
(st.download_button); nothing is written to a path, so nothing a user types names a server file.
"""

import pandas as pd
import streamlit as st

from app import _frames as frames
from app import _queries as q
from app import _widgets as w

st.title("Runs")
runs = q.runs()
if runs.empty:
    st.info(f"No runs in `{q.store_path()}` yet. Start one on the **Run a study** page "
            "(or `hwlab run STUDY --quick`).")
    st.stop()

studies = sorted(runs["study"].unique())
pick = st.multiselect("studies", studies, default=studies, key="runs-studies")
shown = runs[runs["study"].isin(pick)]
st.dataframe(shown.drop(columns=["config", "fingerprint"]), hide_index=True)

st.subheader("A run")
ids = list(shown["run_id"])
if ids:
    run_id = st.selectbox("run", ids, index=len(ids) - 1, key="runs-one")
    c1, c2 = st.columns([1, 2])
    with c1:
        st.caption("config")
        st.json(q.run_config(run_id))
    with c2:
        rows = q.results()
        rows = rows[rows["run_id"] == run_id]
        st.caption(f"{len(rows):,} result rows")
        st.dataframe(rows.drop(columns=["run_id", "study"]).head(2000), hide_index=True)


def _summary(run_rows: pd.DataFrame) -> pd.DataFrame:
    keys = ["module", "method", "variant", "fault_model", "fault_rate"]
    metrics = [m for m in frames.METRICS if m != "fault_rate" and run_rows[m].notna().any()]
    if not metrics:
        return pd.DataFrame(columns=keys)
    return (run_rows.astype({m: "float64" for m in metrics})
            .groupby(keys, dropna=False)[metrics].mean().reset_index())


st.subheader("Compare two runs")
if len(runs) < 2:
    st.info("The comparison needs two runs in the store.")
else:
    all_ids = list(runs["run_id"])
    c1, c2 = st.columns(2)
    a = c1.selectbox("run A", all_ids, index=len(all_ids) - 2, key="runs-a")
    b = c2.selectbox("run B", all_ids, index=len(all_ids) - 1, key="runs-b")
    ca, cb = q.run_config(a), q.run_config(b)
    diff = pd.DataFrame([{"option": k, "A": str(ca.get(k)), "B": str(cb.get(k))}
                         for k in sorted(set(ca) | set(cb))])
    diff["differs"] = diff["A"] != diff["B"]
    st.caption("config (options that differ first)")
    st.dataframe(diff.sort_values("differs", ascending=False), hide_index=True)
    res = q.results()
    sa, sb = _summary(res[res["run_id"] == a]), _summary(res[res["run_id"] == b])
    keys = ["module", "method", "variant", "fault_model", "fault_rate"]
    both = sa.merge(sb, on=keys, how="outer", suffixes=(" A", " B"))
    if "accuracy A" in both and "accuracy B" in both:
        both["accuracy B - A"] = both["accuracy B"] - both["accuracy A"]
    st.caption("mean metrics per point (trials averaged), side by side")
    st.dataframe(both, hide_index=True)

st.subheader("Export")
c1, c2 = st.columns(2)
scope = c1.selectbox("results of", ["all studies", *studies], key="runs-export-scope")
fmt = c2.radio("format", ["CSV", "Parquet"], horizontal=True, key="runs-export-format")


name = "hwlab-results" if scope == "all studies" else f"hwlab-{scope}"
file_name = f"{w.slug(name)}.{fmt.lower()}"
mime = "text/csv" if fmt == "CSV" else "application/vnd.apache.parquet"
st.download_button(f"Download {fmt}", lambda f=fmt, s=scope: q.export_bytes(f, s),
                   file_name=file_name, mime=mime, key="runs-export",
                   icon=":material/download:", on_click="ignore")
