"""Faults: accuracy vs fault rate with confidence bands, formats, the layer x bit heatmap and the
FT-ClipAct thresholds, from the faultlab rows in the store."""

import pandas as pd
import streamlit as st

from app import _actions as actions
from app import _charts as charts
from app import _frames as frames
from app import _queries as q
from app import _widgets as w

st.title("Faults")
df = q.module_results("faultlab")
if df.empty:
    w.no_rows("faultlab")
    st.stop()
df = w.choose(df, ("model", "dataset"), key="faults")
FORMATS = ("float32", "float16", "bfloat16", "int8")

# Rows of the layer x bit analysis (extra has layer and bit) are drawn as the heatmap only.
heat = q.module_extra("faultlab", "layer", "bit")
heat = heat[heat["layer"].notna() & heat["bit"].notna() & heat.index.isin(df.index)]
curves = df.drop(index=heat.index, errors="ignore")
curves = curves[curves["fault_rate"].notna() & curves["accuracy"].notna()]
# The number format of the faulty words: extra "dtype", else the run config's dtype, else the
# variant when it names a format (faultlab.campaign's variant is its dtype).
fmt = curves["extra"].astype("str").str.extract(r'"dtype":\s*"([^"]+)"', expand=False)
fmt = fmt.where(curves["extra"].notna()).fillna(q.with_run_field(curves, "dtype"))
fmt = fmt.fillna(curves["variant"].where(curves["variant"].isin(FORMATS)))
curves = curves.assign(format=fmt.fillna("unspecified"))

st.subheader("Accuracy vs fault rate")
if curves.empty:
    w.no_rows("faultlab", "fault-rate sweeps")
else:
    c1, c2, c3 = st.columns(3)
    studies = sorted(curves["study"].astype(str).unique())
    study = c1.selectbox("study", studies, key="faults-study")
    sweep = curves[curves["study"] == study]
    formats = sorted(sweep["format"].astype(str).unique())
    fmt_pick = formats[0]
    if len(formats) > 1:  # no box when the study stores one format (or says none)
        fmt_pick = c2.selectbox("format", formats, key="faults-format",
                                index=formats.index("float32") if "float32" in formats else 0)
    sweep = sweep[sweep["format"] == fmt_pick]
    faults = sorted(sweep.loc[sweep["fault_rate"] > 0, "fault_model"].dropna().unique())
    fault_pick = c3.multiselect("fault models", faults, default=faults, key="faults-models")
    sweep = sweep[sweep["fault_model"].isin(fault_pick) | (sweep["fault_rate"] == 0)]
    positive = sweep[sweep["fault_rate"] > 0]
    summary = frames.mean_ci(positive, ["variant", "fault_model", "fault_rate"])
    if summary.empty:
        st.info("No rows at a positive fault rate for this choice.")
    else:
        w.show_chart(charts.curve_with_band(summary, color="variant", facet="fault_model"),
                     summary, f"accuracy vs fault rate ({study}, {fmt_pick})", key="faults-curve")
        st.caption("Lines: mean accuracy over trials; bands: 95% Student-t confidence interval. "
                   "One panel per fault model (bit flips vs stuck-at).")
    clean = sweep[sweep["fault_rate"] == 0]
    if not clean.empty:
        st.caption("Fault-free accuracy per variant")
        st.dataframe(frames.mean_ci(clean, ["variant"]), hide_index=True)

    known = curves[curves["format"].isin(FORMATS)]
    if known["format"].nunique() > 1:
        st.subheader("Number formats")
        plain = known["variant"].isin(["unprotected", *FORMATS])  # no protection applied
        unprot = known[plain & (known["fault_rate"] > 0)]
        by_fmt = frames.mean_ci(unprot, ["format", "fault_model", "fault_rate"])
        if by_fmt.empty:
            st.info("No unprotected rows to compare formats.")
        else:
            w.show_chart(charts.curve_with_band(by_fmt, color="format", facet="fault_model"),
                         by_fmt, "accuracy vs fault rate by format", key="faults-formats")

st.subheader("Layer x bit vulnerability")
if heat.empty:
    st.info("No layer x bit rows in the store yet (rows whose extra has layer and bit; no "
            "registered study writes them). Compute them here with faultlab.vulnerability on a "
            "zoo model: one bit flipped per trial, per weight layer and bit position.",
            icon=":material/info:")
    with st.form("faults-vuln"):
        c1, c2, c3, c4, c5 = st.columns(5)
        v_model = c1.text_input("model", "lenet5", key="vuln-model")
        v_data = c2.text_input("dataset", "digits", key="vuln-dataset")
        v_trials = c3.number_input("trials", 1, 100, 3, key="vuln-trials")
        v_eval = c4.number_input("eval size", 10, 10_000, 300, key="vuln-eval")
        v_bits = c5.text_input("bits (empty: all)", "", key="vuln-bits")
        go = st.form_submit_button("Compute the layer x bit analysis")
    if go:
        bar = st.progress(0.0, text="faultlab.vulnerability: starting")
        try:
            bits = tuple(int(b) for b in v_bits.replace(" ", "").split(",") if b)
            actions.run_vulnerability(q.get_store(), v_model.strip(), v_data.strip(),
                                      trials=int(v_trials), eval_size=int(v_eval), bits=bits,
                                      progress=w.progress_callback(bar, "vulnerability: "))
        except ValueError as exc:  # bad names or numbers: the template message
            st.error(str(exc))
        else:
            q.clear()
            st.rerun()
else:
    cells = frames.mean_ci(heat.astype({"bit": int}), ["layer", "bit"]).rename(
        columns={"mean": "accuracy"})
    w.show_chart(charts.heatmap_chart(cells), cells, "layer x bit vulnerability", key="faults-heat")
    st.caption("Mean accuracy with faults confined to one layer and one bit position.")

st.subheader("FT-ClipAct thresholds")
th = q.thresholds("faultlab")
th = th[th.index.isin(df.index)]
if th.empty:
    w.no_rows("faultlab", "clipping thresholds (extra 'thresholds' of the clipact rows)",
              studies=("faultlab.clipact",))
else:
    long = pd.DataFrame([
        {"run_id": r.run_id, "variant": r.variant, "layer": layer, "threshold": float(value)}
        for r in th.itertuples() for layer, value in r.thresholds.items()
    ])
    w.show_chart(charts.bar_chart(long, "layer", "threshold", color="variant",
                                  title="chosen threshold"), long, "clipping thresholds",
                 key="faults-thresholds")
    st.dataframe(long, hide_index=True)
