"""Language models under faults: next-character SDC and bits per character vs BER per fault site
and stage, greedy-generation divergence, and the component x bit-field PVF table
(``faultlab.lm`` rows)."""

import json

import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _widgets as w
from hwlab._figure_data import clean_rows, extra_number
from hwlab.figures import lm_pvf_heatmap, lm_sweep

STUDY = "faultlab.lm"
GEN = ("gen_exact_match", "gen_first_divergence", "gen_nonfinite", "bpc")

st.title("Language models")
df, rows, model, dataset, title = w.study_page(STUDY, "lm", "lm", studies=(STUDY,))
pvf = rows[rows["variant"].astype(str) == "pvf"]
sweep = rows[rows["variant"].astype(str) != "pvf"]
faulty = sweep[~clean_rows(sweep)]

st.subheader("Next-character SDC vs BER per site and stage")
if faulty.empty:
    w.elsewhere(df[~clean_rows(df) & (df["variant"].astype(str) != "pvf")],
                "rate-sweep rows", model, dataset)
else:
    w.show_chart(lm_sweep(sweep), faulty, "lm sdc", key="lm-sdc", title=title)
    st.caption("SDC = share of next-character predictions (teacher forcing, every position) "
               "whose top-1 changes against the fault-free model; series = fault site and "
               "stage: weights, KV-cache entries written in the prompt (prefill) or during "
               "generation (decode), transient activation faults in one pass. "
               + charts.BAND_NOTE + ".")

    st.subheader("Bits per character and greedy generation under faults")
    gen = faulty.assign(**{k: extra_number(faulty, k) for k in GEN})
    table = (gen.groupby(["variant", "fault_rate"], as_index=False)
             .agg(trials=("key", "size"), sdc=("sdc", "mean"), bpc=("bpc", "mean"),
                  exact_match=("gen_exact_match", "mean"),
                  first_divergence=("gen_first_divergence", "mean"),
                  nonfinite=("gen_nonfinite", "mean")))
    clean = sweep[clean_rows(sweep)]
    if not clean.empty:
        ref = extra_number(clean, "bpc").iloc[0]
        st.caption(f"Fault-free: {ref:.3f} bits per character, exact match 1 by definition.")
    st.dataframe(table.rename(columns={"variant": "site", "fault_rate": "BER"}),
                 hide_index=True, use_container_width=True)
    st.caption("Means over the trials of each point: bits per character on the held-out "
               "windows; of the greedy continuations of the prompts, the share equal to the "
               "fault-free continuation (exact match), the mean first divergent position, and "
               "the share of generation steps with a NaN / Inf logit.")

st.subheader("Component vulnerability (PVF)")
if pvf.empty:
    st.info("No PVF rows for this model: run `faultlab.lm` with `--pvf-trials N`.",
            icon=":material/info:")
else:
    st.altair_chart(lm_pvf_heatmap(pvf).properties(title=title, height=260, width=320))
    cells = [json.loads(e) for e in pvf["extra"]]
    show = pd.DataFrame([{k: c.get(k) for k in ("component", "field", "pvf", "pvf_low",
                                                 "pvf_high", "n")} for c in cells])
    st.dataframe(show, hide_index=True, use_container_width=True)
    st.caption("PVF = share of single-bit flips in the component's weights (sign, exponent or "
               "mantissa bit, uniform within the field) that change any top-1 prediction, with "
               "the Wilson 95% interval over n flips.")
