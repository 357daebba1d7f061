"""Run a study: a form per registered study built from its Config fields, a live progress bar,
and the new rows when it is done.

Values are typed as text (tuples comma-separated, as on the command line) and checked by the
study's own ``make_config``, so the page accepts exactly what ``hwlab run`` accepts.
"""

import dataclasses
import typing

import streamlit as st

from app import _queries as q
from app import _widgets as w
from hwlab import studies

st.title("Run a study")
names = w.registered_studies()
if not names:
    st.warning("No studies are registered (check that the method packages are installed).")
    st.stop()

name = st.selectbox("study", names, key="rs-study")
study = studies.get_study(name)
st.caption(f"module `{study.module}` · {study.description}")
quick = st.toggle("quick (the small `--quick` configuration)", value=True, key=f"rs-quick-{name}")
defaults = dataclasses.asdict(study.make_config(quick=quick))
options = study.options()
EXECUTORS = ("serial", "process:2", "dask-local:2")


def _text(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


with st.form(f"rs-form-{name}-{quick}"):
    values = {}
    cols = st.columns(3)
    for i, field in enumerate(dataclasses.fields(study.Config)):
        tp, col, key = options[field.name], cols[i % 3], f"rs-{name}-{quick}-{field.name}"
        default = defaults[field.name]
        if tp is bool:
            values[field.name] = col.checkbox(field.name, value=bool(default), key=key)
        elif typing.get_origin(tp) is typing.Literal:
            choices = list(typing.get_args(tp))
            values[field.name] = col.selectbox(field.name, choices, key=key,
                                               index=choices.index(default))
        else:
            values[field.name] = col.text_input(field.name, value=_text(default), key=key,
                                                help=f"type: {getattr(tp, '__name__', tp)}")
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

last = st.session_state.get("rs-last-run")
if last:
    rows = q.results()
    rows = rows[rows["run_id"] == last]
    st.success(f"Run `{last}` finished with {len(rows):,} result rows; every page shows them now.")
    st.dataframe(rows.drop(columns=["run_id", "study"]), hide_index=True)
