"""Memory: unprotected vs parity vs SEC-DED weight memory per hardware error model, the words
each code corrected / detected / miscorrected, and accuracy vs voltage and relative energy
(``faultlab.memory`` rows)."""

import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _widgets as w
from hwlab._figure_data import clean_rows, extra_number

STUDY = "faultlab.memory"
WORDS = ("corrected_words", "detected_words", "miscorrected_words", "silent_words")

st.title("Memory")
df, rows, model, dataset, title = w.study_page(STUDY, "memory", "mem")
volt = extra_number(rows, "voltage")
sweep = rows[volt.isna()]
clean = sweep[clean_rows(sweep)].assign(series=lambda d: d["variant"].astype(str))
faulty = sweep[~clean_rows(sweep)].assign(series=lambda d: d["variant"].astype(str))

st.subheader("Accuracy vs BER per protection and error model")
if faulty.empty:
    w.elsewhere(df[~clean_rows(df)], "faulty memory rows", model, dataset)
else:
    w.show_chart(charts.fault_curves(faulty, clean), faulty, "memory protection",
                 key="mem-curves", title=title)
    st.caption("Variant = protection of the weight words (none, byte parity reading a detected "
               "word as 0, Hsiao SEC-DED 72/64); panels: uniform flips, bursts, whole rows, "
               "asymmetric errors, on the same nested maps. " + charts.BAND_NOTE + ".")

    st.subheader("What each code did with the faulty words")
    fms = sorted(faulty["fault_model"].astype(str).unique())
    fm = w.select("error model", fms, "mem-words-fault", "bitflip")
    one = faulty[faulty["fault_model"] == fm]
    words = pd.concat([one[["variant", "fault_rate"]].assign(outcome=k.removesuffix("_words"),
                                                             words=extra_number(one, k))
                       for k in WORDS], ignore_index=True).dropna(subset=["words"])
    words = words.groupby(["variant", "fault_rate", "outcome"], as_index=False)["words"].mean()
    if words.empty:
        st.info("These rows carry no word counts (extra corrected_words / detected_words / ...).")
    else:
        w.show_chart(charts.words_chart(words), words, f"word outcomes ({fm})", key="mem-words",
                     title=f"{title} · {fm}")
        st.caption("Mean words per fault map: corrected (SEC-DED fixed a single-bit error), "
                   "detected (read as 0), miscorrected (a multi-bit error decoded to a wrong "
                   "word), silent (a wrong word read without any detection).")

st.subheader("Accuracy vs voltage and relative energy")
volts = rows[volt.notna()]
if volts.empty:
    w.elsewhere(df[extra_number(df, "voltage").notna()], "voltage-sweep rows", model, dataset)
    st.caption("A voltage sweep is stored by `hwlab run faultlab.memory --voltages 0.9,0.8,0.7 "
               "--curve CURVE.csv` (a CSV of voltage,ber points).")
else:
    v = volts.assign(voltage=extra_number(volts, "voltage"),
                     relative_energy=extra_number(volts, "relative_energy"),
                     series=volts["variant"].astype(str))
    ref = clean if not clean.empty else None
    c1, c2 = st.columns(2)
    with c1:
        w.show_chart(charts.fault_curves(v, ref, x="voltage", facet=None, x_title="voltage (V)",
                                         log_x=False, width=300), v, "accuracy vs voltage",
                     key="mem-volt", title=f"{title} · voltage")
    with c2:
        w.show_chart(charts.fault_curves(v, ref, x="relative_energy", facet=None,
                                         x_title="relative dynamic energy (V/V_nominal)^2",
                                         log_x=False, width=300), v, "accuracy vs energy",
                     key="mem-energy", title=f"{title} · energy")
    st.caption("The BER at each voltage comes from the stored BER curve; energy is relative to "
               "the nominal voltage.")
