"""Streamlit building blocks shared by the pages: charts with downloads, filters, study runs."""

from __future__ import annotations

import re
import time

import pandas as pd
import streamlit as st

from app import _queries as q

__all__ = ["STUDY_HINTS", "choose", "empty_store_panel", "forget_registry", "no_rows",
           "progress_callback", "registered_studies", "run_studies", "show_chart", "slug"]

# The study that fills each page (named in the "no rows yet" message).
STUDY_HINTS = {
    "faultlab": ("faultlab.campaign", "faultlab.clipact"),
    "spiking": ("spiking.dynamic-confidence",),
    "quantum": ("quantum.creep",),
    "localtrain": ("localtrain.compare",),
}


def slug(text: str) -> str:
    """A file-name-safe lower-case slug (for download names and widget keys)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "chart"


def show_chart(chart, data: pd.DataFrame, name: str, key: str | None = None,
               on_select: str = "ignore"):
    """Draw an Altair chart and offer its data as CSV (PNG: the chart's own toolbar menu)."""
    key = key or slug(name)
    kw = {"on_select": on_select, "key": f"chart-{key}"} if on_select != "ignore" else {}
    event = st.altair_chart(chart, **kw)
    st.download_button(f"Download data (CSV): {name}", lambda: data.to_csv(index=False).encode(),
                       file_name=f"{slug(name)}.csv", mime="text/csv", key=f"csv-{key}",
                       icon=":material/download:", on_click="ignore")
    return event


def no_rows(module: str, what: str = "results", studies: tuple[str, ...] | None = None) -> None:
    """Say plainly that a module has no rows in the store yet, and which study writes them."""
    names = studies or STUDY_HINTS.get(module, ())
    hint = " or ".join(f"`{s}`" for s in names)
    how = f" Run {hint} on the **Run a study** page" if hint else ""
    cli = f" (or `hwlab run {names[0]} --quick`)" if names else ""
    st.info(f"No {module} {what} in the store yet.{how}{cli}.", icon=":material/info:")


def choose(df: pd.DataFrame, columns: tuple[str, ...], key: str) -> pd.DataFrame:
    """Cascading select boxes (each offers only the values left by the ones before it).

    One box per column that has more than one value; returns the filtered rows. Filtering
    happens in pandas on the cached frame (user choices never reach SQL).
    """
    shown = [c for c in columns if c in df and df[c].nunique(dropna=True) > 1]
    if not shown:
        return df
    for col, c in zip(st.columns(len(shown)), shown):
        values = sorted(df[c].dropna().astype(str).unique())
        if not values:
            continue
        value = col.selectbox(c.replace("_", " "), values, key=f"{key}-{c}")
        df = df[df[c].astype(str) == value]
    return df


def progress_callback(bar, prefix: str = ""):
    """A study ``progress(done, total, message="")`` callback that moves an ``st.progress`` bar."""
    def progress(done: int, total: int, message: str = "") -> None:
        frac = min(max(done / total, 0.0), 1.0) if total else 0.0
        bar.progress(frac, text=f"{prefix}{done}/{total} {message}".strip())

    return progress


def run_studies(names: list[str], quick: bool = True, overrides: dict | None = None) -> list:
    """Run registered studies one after another into the dashboard's store, with progress bars.

    Returns ``[(name, run_id or None, error or None, seconds)]``; a failing study is reported and
    the next one still runs. Caches are cleared afterwards so every page sees the new rows.
    """
    from hwlab import studies

    store = q.get_store()
    overall = st.progress(0.0, text=f"0/{len(names)} studies")
    out = []
    for i, name in enumerate(names):
        bar = st.progress(0.0, text=f"{name}: starting")
        t0 = time.perf_counter()
        try:
            run_id = studies.run_study(name, store=store, quick=quick,
                                       progress=progress_callback(bar, f"{name}: "),
                                       **(overrides or {}))
            bar.progress(1.0, text=f"{name}: done ({time.perf_counter() - t0:.1f} s)")
            out.append((name, run_id, None, time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001 -- a study's error is shown, the others still run
            bar.progress(1.0, text=f"{name}: failed")
            st.error(f"{name} failed: {exc}")
            out.append((name, None, str(exc), time.perf_counter() - t0))
        overall.progress((i + 1) / len(names), text=f"{i + 1}/{len(names)} studies")
    q.clear()
    return out


@st.cache_resource(show_spinner="Loading the study registry…")
def _registered() -> list[str]:
    from hwlab import studies

    return list(studies.list_studies())


def registered_studies() -> list[str]:
    """Names of the registered studies ([] with an error shown when the registry fails).

    Cached per server process (importing every method package takes seconds); the sidebar's
    Reload button forgets it, so a study that lands later shows up without a restart.
    """
    try:
        return _registered()
    except Exception as exc:  # noqa: BLE001 -- the registry is optional for reading results
        st.error(f"The study registry could not be read: {exc}")
        return []


def empty_store_panel() -> None:
    """The entry page on an empty store: offer to run the quick studies, with progress bars."""
    st.subheader("No results yet")
    st.write(f"The store `{q.store_path()}` holds no result rows. Run the quick studies "
             "(the `--quick` configuration of each study, about a minute each on 2 cores) "
             "to fill it; every page then shows its charts.")
    names = registered_studies()
    if not names:
        st.warning("No studies are registered (check that the method packages are installed).")
        return
    chosen = st.multiselect("Quick studies to run", names, default=names, key="start-studies")
    if st.button("Run the quick studies", type="primary", key="start-run", disabled=not chosen):
        out = run_studies(chosen, quick=True)
        failed = [name for name, _, err, _ in out if err]
        done = len(out) - len(failed)
        st.success(f"{done} of {len(out)} quick studies finished.")
        if not failed:
            st.rerun()
        st.button("Show the results", key="start-show")


def forget_registry() -> None:
    """Forget the cached study registry (the next page run reads the entry points again)."""
    _registered.clear()
