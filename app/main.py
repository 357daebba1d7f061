"""The hwlab dashboard's entry script: ``streamlit run app/main.py`` (or ``hwlab dashboard``).

Reads the store named by ``$HWLAB_STORE`` (set by ``hwlab dashboard --store PATH``), else the
embedded default ``$HWLAB_HOME/hwlab.sqlite``. Pages live in ``app/app_pages/`` and are thin:
they read cached queries of the store (:mod:`app._queries`) and call the public API.
"""

import streamlit as st

from app import _queries as q
from app import _widgets as w

st.set_page_config(page_title="hwlab dashboard", page_icon=":material/memory:", layout="wide")

PAGES = {
    "Results": [
        st.Page("app_pages/overview.py", title="Overview", icon=":material/scatter_plot:",
                default=True),
        st.Page("app_pages/faults.py", title="Faults", icon=":material/bolt:"),
        st.Page("app_pages/memory.py", title="Memory", icon=":material/memory_alt:"),
        st.Page("app_pages/mitigation.py", title="Mitigation", icon=":material/shield:"),
        st.Page("app_pages/systolic.py", title="Systolic array", icon=":material/grid_on:"),
        st.Page("app_pages/formats.py", title="Number formats", icon=":material/data_array:"),
        st.Page("app_pages/training.py", title="Training faults", icon=":material/model_training:"),
        st.Page("app_pages/lm.py", title="Language models", icon=":material/text_fields:"),
        st.Page("app_pages/spiking.py", title="Spiking", icon=":material/timeline:"),
        st.Page("app_pages/quantum.py", title="Quantum", icon=":material/blur_on:"),
        st.Page("app_pages/localtrain.py", title="Local learning", icon=":material/layers:"),
        st.Page("app_pages/figures.py", title="Key figures", icon=":material/insert_chart:"),
    ],
    "Runs": [
        st.Page("app_pages/runs.py", title="Runs", icon=":material/table:"),
        st.Page("app_pages/run_study.py", title="Run a study", icon=":material/play_arrow:"),
    ],
}
page = st.navigation(PAGES, expanded=True)  # 16 pages: none hidden behind "View more"

with st.sidebar:
    st.caption(f"Store: `{q.store_path()}`")
    try:
        q.get_store()
    except ValueError as exc:  # a foreign file or a newer schema: say so, touch nothing
        st.error(str(exc))
        st.stop()
    runs = q.runs()  # fresh after a run: every page that runs a study reruns the app
    st.caption(f"{len(runs)} runs, {int(runs['n_results'].sum()) if len(runs) else 0:,} rows",
               help="Counted from the store's files now; a study run from a page reruns the "
                    "app when it finishes, so these counts include its rows.")
    if st.button("Reload", icon=":material/refresh:", key="reload"):
        q.clear()
        w.forget_registry()
        st.rerun()

page.run()
