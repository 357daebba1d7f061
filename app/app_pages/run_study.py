"""Run a study: a form per registered study built from its Config's declared constraints
(choices: select boxes, ranges: number inputs, help text from the config), a live progress bar,
and the new rows when it is done.

Values go through the study's own ``make_config``, so the page accepts exactly what
``hwlab run`` accepts (tuples are typed comma-separated, as on the command line).
"""

import streamlit as st

from app import _queries as q
from app import _widgets as w
from hwlab import studies

st.title("Run a study")
names = w.registered_studies()
if not names:
    st.warning("No studies are registered (check that the method packages are installed).")
    st.stop()

name = w.select("study", names, "rs-study")
study = studies.get_study(name)
took = study.quick_seconds  # measured, or None
st.caption(f"module `{study.module}` · {study.description}"
           + (f" · quick run measured at about {took:.0f} s" if took else ""))
quick = st.toggle("quick (the small `--quick` configuration)", value=True, key=f"rs-quick-{name}")
defaults = study.make_config(quick=quick)
declared = study.constraints()
selection = st.session_state.get("hw-selection") or {}
use_sel = False
if selection.get("dataset") and ({"model", "dataset"} & set(declared)):
    use_sel = st.checkbox(f"use the pages' selection ({selection.get('model') or 'any model'} / "
                          f"{selection['dataset']})", value=False, key=f"rs-sel-{name}",
                          help="Prefill model and dataset with what the result pages show.")
EXECUTORS = ("serial", "process:2", "dask-local:2")


def _text(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def _widget(col, field: str, c: dict, default, key: str):
    tip = c["help"] or field
    tip = f"{tip} ({c['text']})" if c.get("text") else tip
    if c["type"] is bool:
        return col.checkbox(field, value=bool(default), key=key, help=tip)
    if c["choices"] is not None and c["is_tuple"]:
        return col.multiselect(field, list(c["choices"]), default=list(default), key=key,
                               help=tip)
    if c["choices"] is not None:
        choices = list(c["choices"])
        return col.selectbox(field, choices, index=choices.index(default), key=key, help=tip)
    if c["type"] in (int, float) and not c["is_tuple"]:
        lo, hi = c["range"] or (None, None)
        lo_in, hi_in = c["inclusive"]
        number = c["type"]
        kw = {"min_value": number(lo) if lo is not None and lo_in else None,
              "max_value": number(hi) if hi is not None and hi_in else None}
        if number is float:
            kw.update(format="%.6g", step=None)
        return col.number_input(field, value=number(default), key=key, help=tip, **kw)
    return col.text_input(field, value=_text(default), key=key, help=tip)


with st.form(f"rs-form-{name}-{quick}-{use_sel}"):
    values = {}
    cols = st.columns(3)
    for i, (field, c) in enumerate(declared.items()):
        default = getattr(defaults, field)
        if use_sel and field in ("model", "dataset") and selection.get(field):
            default = selection[field]
        values[field] = _widget(cols[i % 3], field, c, default,
                                f"rs-{name}-{quick}-{use_sel}-{field}")
    executor = st.selectbox("executor", EXECUTORS, key=f"rs-exec-{name}")
    submitted = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")

if submitted:
    try:
        study.make_config(quick=quick, **values)  # the CLI's validation: one clear message
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    bar = st.progress(0.0, text=f"{name}: starting")
    try:
        run_id = studies.run_study(name, store=q.get_store(), quick=quick,
                                   executor=None if executor == "serial" else executor,
                                   progress=w.progress_callback(bar, f"{name}: "), **values)
    except Exception as exc:  # noqa: BLE001 -- shown to the user; the run is marked failed
        q.clear()
        st.error(f"{name} failed: {type(exc).__name__}: {exc}")
        st.stop()
    bar.progress(1.0, text=f"{name}: done")
    q.clear()
    st.session_state["rs-last-run"] = run_id
    st.rerun()  # the whole app again, so the sidebar counts include the new rows

done = q.runs()
done = done[(done["study"] == name) & done["finished"].notna()]
if len(done):
    import altair as alt
    import pandas as pd

    took_s = (pd.to_datetime(done["finished"]) - pd.to_datetime(done["started"])).dt.total_seconds()
    hist = done.assign(seconds=took_s, run=done["run_id"].str[-6:])
    st.subheader(f"Stored runs of {name}")
    w.show_chart(alt.Chart(hist).mark_bar().encode(
        x=alt.X("run:N", sort=None, title="run (id suffix)"),
        y=alt.Y("seconds:Q", title="time inside the run (s)"),
        color=alt.Color("status:N"), tooltip=["run_id", "status", "n_results",
                                             alt.Tooltip("seconds:Q", format=".1f")]),
        hist[["run_id", "status", "started", "finished", "seconds", "n_results"]],
        f"runs of {name}", key="rs-history", title=f"{name} · stored runs")
    st.caption("From the store's runs table (started to finished; model training that happens "
               "before a run opens is not included).")

last = st.session_state.get("rs-last-run")
if last:
    rows = q.run_rows(last)
    st.success(f"Run `{last}` finished with {len(rows):,} result rows; every page shows them now.")
    st.dataframe(rows.drop(columns=["run_id", "study"]), hide_index=True)
