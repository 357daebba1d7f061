"""Systolic array: accuracy vs fraction of faulty PEs per dataflow, unmitigated / FAP / FAP+T
(``faultlab.systolic`` rows)."""

import streamlit as st

from app import _charts as charts
from app import _widgets as w
from hwlab._figure_data import clean_rows
from hwlab.figures import extra_text

STUDY = "faultlab.systolic"

st.title("Systolic array")
df, rows, model, dataset, title = w.study_page(STUDY, "systolic", "sys")
rows = rows.assign(dataflow=extra_text(rows, "dataflow"))
clean = rows[clean_rows(rows)].assign(series="fault-free")
faulty = rows[~clean_rows(rows)].assign(series=lambda d: d["variant"].astype(str))
if faulty.empty:
    w.elsewhere(df[~clean_rows(df)], "PE-fault rows", model, dataset)
    st.stop()
w.show_chart(charts.fault_curves(faulty, clean, facet="dataflow",
                                 x_title="fraction of faulty PEs"), faulty, "systolic",
             key="sys-curves", title=title)
st.caption("Permanent faults in the PEs' registers (fault model "
           f"{', '.join(sorted(faulty['fault_model'].astype(str).unique()))}); FAP prunes the "
           "weights mapped to faulty PEs, FAP+T also retrains. The x axis is a fraction of PEs, "
           "not a bit error rate. " + charts.BAND_NOTE + ".")
