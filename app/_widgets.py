"""Streamlit building blocks shared by the pages: charts with downloads, filters, study runs."""

from __future__ import annotations

import re
import time

import pandas as pd
import streamlit as st

from app import _queries as q

__all__ = ["choose", "elsewhere", "empty_store_panel", "figure_title", "forget_registry",
           "model_dataset", "multiselect", "no_rows", "page_studies", "progress_callback",
           "quick_seconds", "registered_studies", "run_studies", "select", "show_chart", "slug",
           "study_attribute"]


def slug(text: str) -> str:
    """A file-name-safe slug (for download names and widget keys)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "chart"


def select(label: str, options: list, key: str, default=None, container=None, **kw):
    """A select box whose stored choice is reset to ``default`` when it is no longer an option
    (so a stale choice never hides a panel after the data changed)."""
    options = list(options)
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    if key not in st.session_state:  # the default only on first show (no API-value clash)
        kw["index"] = options.index(default) if default in options else 0
    return (container or st).selectbox(label, options, key=key, **kw)


def multiselect(label: str, options: list, key: str, container=None, **kw) -> list:
    """A multiselect (all chosen at first) that drops stored choices that are gone."""
    options = list(options)
    if key in st.session_state:
        kept = [v for v in st.session_state[key] if v in options]
        if kept != st.session_state[key]:
            st.session_state[key] = kept or options
    if key not in st.session_state:
        kw.setdefault("default", options)
    return (container or st).multiselect(label, options, key=key, **kw)


def model_dataset(df: pd.DataFrame, key: str, models: bool = True, combos=None):
    """Model and dataset select boxes over ``df``; returns ``(rows, model, dataset)``.

    The default is the pair with the most rows (so a fresh session opens on data), the model
    box offers only the models that have rows for the chosen dataset, and the choice is kept in
    ``st.session_state["hw-selection"]`` for the forms of other pages to prefill.
    """
    from hwlab._figure_data import combinations

    combos = combinations(df) if combos is None else combos
    if combos.empty:
        return df, None, None
    pending = st.session_state.pop(f"{key}-pending", None)  # e.g. a form just computed these
    if pending:
        st.session_state[f"{key}-dataset"] = pending["dataset"]
        st.session_state[f"{key}-model"] = pending["model"]
    c1, c2, _ = st.columns([2, 2, 3])
    datasets = sorted(combos["dataset"].unique())
    by_rows = combos.groupby("dataset")["rows"].sum().sort_values(ascending=False)
    dataset = select("dataset", datasets, f"{key}-dataset", by_rows.index[0], c1)
    here = combos[combos["dataset"] == dataset]
    model = None
    if models:
        model = select("model", sorted(here["model"].unique()), f"{key}-model",
                       here["model"].iloc[0], c2)
    if df is None:  # the caller reads its rows for the dataset itself (a cached slice)
        st.session_state["hw-selection"] = {"model": model, "dataset": dataset}
        return None, model, dataset
    rows = df[df["dataset"].astype("string").fillna("?") == dataset]
    if model is not None:
        rows = rows[rows["model"].astype("string").fillna("?") == model]
    st.session_state["hw-selection"] = {"model": model, "dataset": dataset}
    return rows, model, dataset


def elsewhere(df: pd.DataFrame, what: str, model: str | None, dataset: str | None) -> None:
    """Say that ``what`` has no rows for this selection, and for which pairs it has rows."""
    from hwlab._figure_data import combinations

    combos = combinations(df)
    here = f"{model}/{dataset}" if model else str(dataset)
    have = ", ".join(f"{m}/{d}" for m, d in zip(combos["model"], combos["dataset"]))
    tail = f"; rows exist for {have}" if have else "; none in the store at all"
    st.info(f"No {what} for {here}{tail}.", icon=":material/info:")


def _figure_bytes(chart, fmt: str) -> bytes:
    import vl_convert as vlc

    spec = chart.to_json()
    if fmt == "svg":
        return vlc.vegalite_to_svg(spec).encode()
    if fmt == "pdf":
        return vlc.vegalite_to_pdf(spec)
    return vlc.vegalite_to_png(spec, scale=2)


def show_chart(chart, data: pd.DataFrame, name: str, key: str | None = None,
               on_select: str = "ignore", title: str | None = None):
    """Draw an Altair chart; offer it as SVG / PDF / PNG (vl-convert, titled ``title``) and its
    data as CSV. The files are named after ``title`` (study, model, dataset, run date)."""
    key = key or slug(name)
    kw = {"on_select": on_select, "key": f"chart-{key}"} if on_select != "ignore" else {}
    shown = chart.properties(title=title) if title else chart
    event = st.altair_chart(shown, **kw)
    from hwlab.figures import stem as figure_stem

    stem = figure_stem(title) if title else slug(name)  # as `hwlab figure` names its files
    cols = st.columns(4)
    mimes = {"svg": "image/svg+xml", "pdf": "application/pdf", "png": "image/png"}
    for col, fmt in zip(cols, ("svg", "pdf", "png")):
        col.download_button(f"{fmt.upper()}", lambda f=fmt: _figure_bytes(shown, f),
                            file_name=f"{stem}.{fmt}", mime=mimes[fmt], key=f"{fmt}-{key}",
                            icon=":material/image:", on_click="ignore",
                            help=f"Download the figure as {fmt.upper()}")
    cols[3].download_button(f"Download data (CSV): {name}",
                            lambda: data.to_csv(index=False).encode(),
                            file_name=f"{stem}.csv", mime="text/csv", key=f"csv-{key}",
                            icon=":material/download:", on_click="ignore")
    return event


def figure_title(study: str, model, dataset, run_ids) -> str:
    """``study · model · dataset · run DATE`` for a chart drawn from ``run_ids``."""
    from hwlab.figures import _dates, title_for

    runs = q.runs()
    return title_for(study, model or "all models", dataset or "all datasets",
                     _dates(runs, pd.DataFrame({"run_id": list(run_ids)})))


def study_page(study: str, page: str, key: str, studies: tuple[str, ...] | None = None):
    """The opening of a study page: ``study``'s rows, the model / dataset boxes (``key``) and the
    charts' title; ``(df, rows, model, dataset, title)`` with ``df`` every row of the study. With
    no rows in the store it says so (:func:`no_rows` for ``page``) and stops the page."""
    df = q.study_results(study)
    if df.empty:
        no_rows(page, studies=studies)
        st.stop()
    rows, model, dataset = model_dataset(df, key)
    return df, rows, model, dataset, figure_title(study, model, dataset, rows["run_id"].unique())


def no_rows(page: str, what: str = "results", studies: tuple[str, ...] | None = None,
            label: str | None = None) -> None:
    """Say plainly that a page has no rows in the store yet, and which studies write them (the
    registered studies whose ``page`` it is, unless ``studies`` names them)."""
    names = studies or page_studies(page)
    hint = " or ".join(f"`{s}`" for s in names)
    how = f" Run {hint} on the **Run a study** page" if hint else ""
    cli = f" (or `hwlab run {names[0]} --quick`)" if names else ""
    st.info(f"No {label or page} {what} in the store yet.{how}{cli}.", icon=":material/info:")


def choose(df: pd.DataFrame, columns: tuple[str, ...], key: str) -> pd.DataFrame:
    """Cascading select boxes (each offers only the values left by the ones before it)."""
    shown = [c for c in columns if c in df and df[c].nunique(dropna=True) > 1]
    if not shown:
        return df
    for col, c in zip(st.columns(len(shown)), shown):
        values = sorted(df[c].dropna().astype(str).unique())
        value = select(c.replace("_", " "), values, f"{key}-{c}", container=col)
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


def study_attribute(name: str, attr: str):
    """A registered study's attribute (None when the study does not load)."""
    from hwlab import studies

    try:
        return getattr(studies.get_study(name), attr, None)
    except Exception:  # noqa: BLE001 -- listed by registered_studies only when it loads
        return None


def page_studies(page: str) -> tuple[str, ...]:
    """Names of the registered studies that fill ``page`` (their ``Study.page``)."""
    return tuple(n for n in registered_studies() if study_attribute(n, "page") == page)


def quick_seconds(name: str) -> float | None:
    """The measured wall time of a study's --quick run (``Study.quick_seconds``), or None."""
    return study_attribute(name, "quick_seconds")


def _duration(name: str) -> str:
    s = quick_seconds(name)
    if s is None:
        return "not measured"
    return "under 1 s" if s < 1 else (f"about {s:.0f} s" if s < 90 else f"about {s / 60:.0f} min")


def empty_store_panel() -> None:
    """The entry page on an empty store: offer to run the quick studies, with progress bars."""
    st.subheader("No results yet")
    names = registered_studies()
    st.write(f"The store `{q.store_path()}` holds no result rows. Run the quick studies (the "
             "`--quick` configuration of each study) to fill it; every page then shows its "
             "charts. Measured once on a busy 2-core machine with the zoo weights cached "
             "(training a zoo model the first time adds to it):")
    known = [n for n in names if quick_seconds(n) is not None]
    st.dataframe(pd.DataFrame({"study": names, "quick run": [_duration(n) for n in names]}),
                 hide_index=True)
    if known:
        total = sum(quick_seconds(n) for n in known)
        st.caption(f"Measured studies together: about {total / 60:.0f} min.")
    if not names:
        st.warning("No studies are registered (check that the method packages are installed).")
        return
    chosen = st.multiselect("Quick studies to run", names, default=names, key="start-studies")
    if st.button("Run the quick studies", type="primary", key="start-run", disabled=not chosen):
        out = run_studies(chosen, quick=True)
        st.session_state["start-report"] = [(n, e, s) for n, _, e, s in out]
        st.rerun()  # the whole app again: sidebar counts and this page see the new rows


def forget_registry() -> None:
    """Forget the cached study registry (the next page run reads the entry points again)."""
    _registered.clear()
