"""Training faults: outcome shares (masked / recovered / drift / degraded / NaN) per fault rate
and recovery policy, with Wilson intervals, detection latency and the cost per step
(``faultlab.training`` rows)."""

import streamlit as st

import faultlab as fl
from app import _widgets as w
from hwlab._figure_data import clean_rows
from hwlab.figures import outcome_shares

STUDY = "faultlab.training"

st.title("Training faults")
df, rows, model, dataset, title = w.study_page(STUDY, "training", "trn", studies=(STUDY,))
faulty = rows[~clean_rows(rows)]
if faulty.empty:
    w.elsewhere(df[~clean_rows(df)], "runs under faults", model, dataset)
    st.stop()
w.show_chart(outcome_shares(rows), faulty, "training outcomes", key="trn-shares", title=title)
clean = rows[clean_rows(rows)]
if not clean.empty:
    st.caption(f"Fault-free reference: accuracy {clean['accuracy'].iloc[0]:.4f}, "
               f"{clean['latency_ms'].iloc[0]:.1f} ms per step. Each faulty run starts from "
               "the same initial weights and batches; the policies of one trial meet the same "
               "faults.")
table = fl.outcome_table(rows)
cols = ["fault_model", "fault_rate", "policy", "runs", "masked", "recovered", "drift",
        "degraded", "nan", "latency_steps_median", "accuracy_mean", "ms_per_step"]
st.dataframe(table[cols], hide_index=True, use_container_width=True,
             column_config={c: st.column_config.NumberColumn(format="%.2f")
                            for c in ("masked", "recovered", "drift", "degraded", "nan")})
st.caption("Shares of runs per outcome class against the fault-free run (masked: bit-identical "
           "weights; recovered: a detector fired and the policy acted, accuracy within the "
           "threshold; drift: weights differ, accuracy within it; degraded: below it; nan: "
           "training diverged). Wilson 95% intervals in the CSV (columns *_lo, *_hi).")
st.download_button("Download the outcome table (CSV)", table.to_csv(index=False).encode(),
                   file_name="training-outcomes.csv", mime="text/csv", key="trn-csv")
