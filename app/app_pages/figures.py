"""Key figures: the key figure of any registered study (``Study.figure``), drawn from the store by
the builder ``hwlab figure`` uses, so a study without a page of its own is seen here too."""

import streamlit as st

from app import _queries as q
from app import _widgets as w
from hwlab import figures, studies

st.title("Key figures")
counts = q.study_rows()
drawn = [n for n in w.registered_studies()
         if w.study_attribute(n, "figure") is not None and counts.get(n, 0) > 0]
if not drawn:
    w.no_rows("figures", label="key-figure")
    st.stop()
own = [n for n in drawn if w.study_attribute(n, "page") == "figures"]  # no page of their own
c0, _ = st.columns([2, 3])
name = w.select("study", drawn, "fig-study", own[0] if own else drawn[0], c0)
study = studies.get_study(name)
# a fault sweep is drawn from its points (the store's sums: same curves and intervals), any
# other figure from the study's rows
base = q.study_points(name) if study.figure is figures.fault_sweep else q.study_results(name)
every_model = study.figure_models == "all"
rows, model, dataset = w.model_dataset(base, "fig", models=not every_model)
try:
    chart, _ = figures.figure_rows(base, q.runs(), name, model, dataset)
except Exception as exc:  # noqa: BLE001 -- a study's builder that cannot draw these rows
    st.info(f"{name} draws no key figure from these rows: {exc}", icon=":material/info:")
    st.stop()
w.show_chart(chart, rows, f"{name} key figure", key=f"fig-{w.slug(name)}",
             title=w.figure_title(name, model, dataset, rows["run_id"].unique()))
st.caption(f"{study.figure_title or 'The key figure'} (`{study.module}`: {study.description}) "
           f"The same figure as `hwlab figure {name} --out FILE.pdf`.")
