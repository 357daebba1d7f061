"""Faults: accuracy vs fault rate per variant and number format, the layer x bit heatmap
(``faultlab.vulnerability``) and the FT-ClipAct thresholds, from the faultlab rows."""

import pandas as pd
import streamlit as st

from app import _charts as charts
from app import _queries as q
from app import _widgets as w
from hwlab._figure_data import clean_rows
from hwlab.figures import series_label

SWEEPS = ("faultlab.campaign", "faultlab.clipact")
VULN = "faultlab.vulnerability"

st.title("Faults")
counts = q.study_rows()
have = [s for s in SWEEPS if counts.get(s, 0) > 0]
vuln_all = q.study_results(VULN) if counts.get(VULN, 0) > 0 else q.empty_results()
if not have and vuln_all.empty:
    w.no_rows("faults", label="faultlab")
    st.stop()

c0, _ = st.columns([2, 3])
study = w.select("study", have or [VULN], "faults-study", container=c0,
                 help="faultlab.campaign: variant = number format; faultlab.clipact: variant = "
                      "protection (FT-ClipAct, Ranger)")
# a sweep's points (sums per run and condition), the vulnerability study's rows
base = q.study_points(study) if study in SWEEPS else vuln_all
rows, model, dataset = w.model_dataset(base, "faults")
title = w.figure_title(study, model, dataset, rows["run_id"].unique())

if study in SWEEPS:
    st.subheader("Accuracy vs fault rate")
    fmt = rows["dtype"].astype("string")
    fmt = fmt.fillna(rows["extra.dtype"].astype("string"))
    fmt = fmt.fillna(q.with_run_field(rows, "dtype").astype("string"))
    rows = rows.assign(dtype=fmt.fillna("unspecified"))
    c1, c2 = st.columns(2)
    formats = w.multiselect("number formats", sorted(rows["dtype"].unique()), "faults-formats",
                            c1)
    faulty = rows[~clean_rows(rows) & rows["accuracy"].notna()]
    fms = sorted(faulty["fault_model"].astype(str).unique())
    chosen = w.multiselect("fault models", fms, "faults-models", c2)
    rows = rows[rows["dtype"].isin(formats)]
    rows = rows.assign(series=series_label(rows))
    faulty = rows[~clean_rows(rows) & rows["fault_model"].astype(str).isin(chosen)]
    clean = rows[clean_rows(rows) & rows["accuracy"].notna()]
    if faulty.empty:
        w.elsewhere(base[~clean_rows(base)], "rows at a positive fault rate for this choice",
                    model, dataset)
    else:
        w.show_chart(charts.fault_curves(faulty, clean), faulty, "accuracy vs fault rate",
                     key="faults-curve", title=title)
        st.caption(charts.BAND_NOTE + ". One panel per fault model; colour: variant and, when "
                   "several are stored, number format.")
    if not clean.empty:
        st.caption("Fault-free accuracy per variant")
        t = clean.groupby("series", as_index=False)[["accuracy_sum", "accuracy_n"]].sum()
        st.dataframe(t.assign(accuracy=t["accuracy_sum"] / t["accuracy_n"])[
            ["series", "accuracy"]], hide_index=True)

st.subheader("Layer x bit vulnerability")
heat = vuln_all[(vuln_all["model"].astype(str) == str(model))
                & (vuln_all["dataset"].astype(str) == str(dataset))]
if heat.empty:
    w.elsewhere(vuln_all, "layer x bit rows (faultlab.vulnerability)", model, dataset)
    st.caption("Compute them here with the registered `faultlab.vulnerability` study (also "
               f"`hwlab run {VULN} --model {model} --dataset {dataset}`).")
    with st.form("faults-vuln"):
        c1, c2, c3, c4, c5 = st.columns(5)
        v_model = c1.text_input("model", model or "lenet5", key="vuln-model",
                                help="zoo name, module:callable or hwlab.models entry point")
        v_data = c2.text_input("dataset", dataset or "mnist5k", key="vuln-dataset")
        v_trials = c3.number_input("trials", 1, 100, 2, key="vuln-trials",
                                   help="fault maps per (layer, bit)")
        v_eval = c4.number_input("eval size", 0, 100_000, 100, key="vuln-eval",
                                 help="test images evaluated (stratified subset); 0 = all")
        v_bits = c5.text_input("bits (empty: all)", "0,23,30,31", key="vuln-bits")
        go = st.form_submit_button("Compute the layer x bit analysis")
    if go:
        from hwlab import studies

        bar = st.progress(0.0, text=f"{VULN}: starting")
        try:
            studies.run_study(VULN, store=q.get_store(), model=v_model.strip(),
                              dataset=v_data.strip(), trials=int(v_trials),
                              eval_size=int(v_eval), bits=v_bits,
                              progress=w.progress_callback(bar, f"{VULN}: "))
        except ValueError as exc:  # bad names or numbers: the template message
            st.error(str(exc))
        else:
            q.clear()
            st.session_state["faults-pending"] = {"model": v_model.strip(),
                                                  "dataset": v_data.strip()}  # show it next
            st.rerun()
else:
    cells = q.parse_extra(heat, ("layer", "order", "bit", "ci_low", "ci_high"))
    cells = cells[cells["layer"].notna() & cells["bit"].notna()]
    cells = cells.groupby(["layer", "bit"], as_index=False).agg(
        accuracy=("accuracy", "mean"), order=("order", "min"), lo=("ci_low", "min"),
        hi=("ci_high", "max"), dtype=("dtype", "first")).astype({"bit": int})
    w.show_chart(charts.heatmap(cells), cells, "layer x bit vulnerability", key="faults-heat",
                 title=w.figure_title(VULN, model, dataset, heat["run_id"].unique()))
    st.caption("Mean accuracy with faults confined to one weight layer (top to bottom in network "
               "order, by module name) and one bit position; the tooltip gives the cell's 95% "
               "proportion interval.")

st.subheader("FT-ClipAct thresholds")
th = q.thresholds("faultlab")
th = th[(th["model"].astype(str) == str(model)) & (th["dataset"].astype(str) == str(dataset))]
if th.empty:
    w.elsewhere(q.thresholds("faultlab"), "clipping thresholds", model, dataset)
else:
    long = pd.DataFrame([
        {"study": r.study, "variant": r.variant, "site": site, "threshold": float(value)}
        for r in th.itertuples() for site, value in r.thresholds.items()
    ])
    w.show_chart(charts.bar_chart(long, "site", "threshold", color="variant",
                                  title="chosen threshold"), long, "clipping thresholds",
                 key="faults-thresholds", title=f"thresholds · {model} · {dataset}")
    st.dataframe(long, hide_index=True)
