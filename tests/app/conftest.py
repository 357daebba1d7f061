"""Fixtures for the dashboard tests: seeded stores and an AppTest factory over app/main.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pytest

from app._demo import seed_store
from hwlab.store import Store

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture(scope="session")
def seeded_path(tmp_path_factory) -> str:
    """A store with every module's fake rows (744 rows in 5 runs), shared by the page tests."""
    path = tmp_path_factory.mktemp("seeded") / "hwlab.sqlite"
    seed_store(Store(path))
    return str(path)


@pytest.fixture
def app_at(monkeypatch):
    """``app_at(store_path, page=None)``: run the app (optionally switched to a page)."""
    from streamlit.testing.v1 import AppTest

    def make(store_path, page: str | None = None):
        monkeypatch.setenv("HWLAB_STORE", str(store_path))
        at = AppTest.from_file(MAIN, default_timeout=60).run()
        if page is not None:
            at.switch_page(f"app_pages/{page}.py").run()
        return at

    return make


def chart_frames(element) -> list[pd.DataFrame]:
    """The data frames a rendered Vega-Lite chart element carries (one per named dataset)."""
    proto = element.proto
    frames = [pa.ipc.open_stream(d.data.data).read_pandas() for d in proto.datasets]
    if proto.data.data:
        frames.append(pa.ipc.open_stream(proto.data.data).read_pandas())
    return frames


def chart_spec(element) -> dict:
    return json.loads(element.proto.spec)


def frame_with(element, *columns: str) -> pd.DataFrame:
    """The one dataset of a chart that has all ``columns``."""
    hits = [f for f in chart_frames(element) if set(columns) <= set(f.columns)]
    assert hits, f"no dataset with {columns}: {[list(f.columns) for f in chart_frames(element)]}"
    return hits[0]


def texts(at) -> str:
    """Every info/warning/error/caption/markdown text of a run, joined (for message checks)."""
    out = []
    for kind in ("info", "warning", "error", "success", "caption", "markdown"):
        out += [str(e.value) for e in at.get(kind)]
    return "\n".join(out)


@pytest.fixture
def ui():
    """Helpers to read what a page rendered: chart data, specs and message texts."""
    return SimpleNamespace(chart_frames=chart_frames, chart_spec=chart_spec,
                           frame_with=frame_with, texts=texts)
