"""Runs: the runs table with sortable summary columns, one run's config and rows, a two-run
comparison joined point by point, and exports.

Exports are built in memory when the button is clicked and handed to the browser
(st.download_button); nothing is written to a path, so nothing a user types names a server file.
"""

import numpy as np
import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w

st.title("Runs")
runs = q.runs()
if runs.empty:
    st.info(f"No runs in `{q.store_path()}` yet. Start one on the **Run a study** page "
            "(or `hwlab run STUDY --quick`).")
    st.stop()
clean = q.clean_metrics()  # fault-free rows; weight-fault points and per-run sums below
ber_pts = q.ber_points()

studies = sorted(runs["study"].unique())
c1, c2 = st.columns([3, 1])
pick = w.multiselect("studies", studies, "runs-studies", c1)
rates = sorted(ber_pts["fault_rate"].unique())
ber = w.select("accuracy at BER", rates or [None], "runs-ber",
               1e-4 if 1e-4 in rates else (rates[len(rates) // 2] if rates else None), c2,
               format_func=lambda r: "-" if r is None else f"{r:.0e}")
at = ber_pts[np.isclose(ber_pts["fault_rate"], ber or -1)].groupby("run_id")[
    ["accuracy_sum", "accuracy_n"]].sum(min_count=1)
summary = pd.DataFrame({
    "best accuracy": clean.groupby("run_id")["accuracy"].max(),
    f"accuracy at {ber:.0e}" if ber else "accuracy at BER": at["accuracy_sum"] / at["accuracy_n"],
    **q.run_summary(),
}).rename_axis("run_id").reset_index()
shown = runs[runs["study"].isin(pick)].merge(summary, on="run_id", how="left")
first = ["run_id", "study", "status", *summary.columns[1:], "n_results", "started"]
st.dataframe(shown[first + [c for c in shown.columns if c not in first
                            and c not in ("config", "fingerprint")]], hide_index=True)
st.caption("Click a column header to sort. Best accuracy: the run's highest fault-free "
           "accuracy; accuracy at a BER: mean over the run's weight-fault rows at that rate.")

st.subheader("A run")
ids = list(shown["run_id"])
if ids:
    run_id = w.select("run", ids, "runs-one", ids[-1])
    c1, c2 = st.columns([1, 2])
    with c1:
        st.caption("config")
        st.json(q.run_config(run_id))
    with c2:
        n = int(runs.loc[runs["run_id"] == run_id, "n_results"].iloc[0])
        rows = q.run_rows(run_id, limit=2000)  # the first page of the run's rows, read alone
        st.caption(f"{n:,} result rows" + (f" (the first {len(rows):,} shown)"
                                           if n > len(rows) else ""))
        st.dataframe(rows.drop(columns=["run_id", "study"]), hide_index=True)

st.subheader("Compare two runs")
if len(runs) < 2:
    st.info("The comparison needs two runs in the store.")
else:
    all_ids = list(runs["run_id"])
    last = runs.iloc[-1]
    same = runs[(runs["study"] == last["study"]) & (runs["run_id"] != last["run_id"])]
    a_default = same["run_id"].iloc[-1] if len(same) else all_ids[-2]
    c1, c2 = st.columns(2)
    a = w.select("run A", all_ids, "runs-a", a_default, c1)
    b = w.select("run B", all_ids, "runs-b", last["run_id"], c2)
    study_a, study_b = (runs.loc[runs["run_id"] == r, "study"].iloc[0] for r in (a, b))
    if study_a != study_b:
        st.warning(f"The runs are of different studies ({study_a} vs {study_b}): only points "
                   "with the same model, dataset, variant, fault model and rate are lined up.")
    ca, cb = q.run_config(a), q.run_config(b)
    diff = pd.DataFrame([{"option": k, "A": str(ca.get(k)), "B": str(cb.get(k))}
                         for k in sorted(set(ca) | set(cb))])
    diff["differs"] = diff["A"] != diff["B"]
    with st.expander("config (options that differ first)"):
        st.dataframe(diff.sort_values("differs", ascending=False), hide_index=True)
    both, keys, labels = frames.compare_runs(q.run_points(a), q.run_points(b))
    tag = {s: " · ".join(str(v[i]) for v in labels.values()) for i, s in enumerate("AB")}
    side = {s: f"{s}: {r}" + (f" · {tag[s]}" if tag[s] else "") for s, r in (("A", a), ("B", b))}
    st.caption(f"Joined on {', '.join(keys)}; "
               + (f"the runs differ in {', '.join(labels)} ({side['A']} vs {side['B']})."
                  if labels else "the runs share every identity column."))
    shared = both[both["accuracy B - A"].notna()]
    if both.empty:
        st.info("Neither run has accuracy rows to compare.")
    else:
        st.dataframe(both.rename(columns={"accuracy A": f"accuracy ({side['A']})",
                                          "accuracy B": f"accuracy ({side['B']})"}),
                     hide_index=True)
        st.caption(f"{len(shared)} shared points (both runs measured them); mean difference "
                   f"B - A {shared['accuracy B - A'].mean():+.4f}." if len(shared) else
                   "No point is measured by both runs.")
        long = pd.concat([both.assign(side=side[s], accuracy=both[f"accuracy {s}"])
                          for s in "AB"], ignore_index=True).dropna(subset=["accuracy"])
        varying = [k for k in keys if long[k].nunique() > 1]
        x = next((k for k in ("fault_rate", "timesteps") if k in varying), None)
        others = [k for k in varying if k != x]
        if x is None:
            long["point"] = long[others].astype(str).agg(" · ".join, axis=1) if others else "all"
            chart = charts.compare_chart(long, "point", facet=None)
        else:
            long = long[long[x].notna() & (long[x] > 0 if x == "fault_rate" else True)]
            facet = next((k for k in ("fault_model", "dataset") if k in others), None)
            dash = next((k for k in others if k != facet), None)
            chart = charts.compare_chart(long, x, dash=dash, facet=facet)
        w.show_chart(chart, long, "run comparison", key="runs-compare",
                     title=f"{side['A']}  vs  {side['B']}")

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
