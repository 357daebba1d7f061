"""What a rendered page shows, as plain numbers: every chart's datasets and every table.

Used to store a reference of every page at a seeded store (made with the code that read whole
stores into pandas) and to check that the pages built on the store's grouped queries show the
same numbers (intervals included). Rows are sorted and floats rounded to 10 significant digits,
so a different summation order (SQLite's sum vs pandas') cannot make a difference.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

_RUN = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")
MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PAGES = ("overview", "faults", "memory", "mitigation", "systolic", "spiking", "quantum",
         "localtrain", "figures", "runs", "run_study")
SKIP = ("run_id", "started", "finished", "seconds", "run", "code_version", "fingerprint",
        "config")  # differ between two seedings of the same rows


def _cell(v):
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return None
        return float(f"{v:.10g}")
    if v is pd.NA or v is pd.NaT:
        return None
    return str(v)


def table(df: pd.DataFrame) -> dict:
    """Columns (sorted, run-dependent ones left out) and rows (sorted) of a frame."""
    cols = sorted(str(c) for c in df.columns if str(c) not in SKIP)
    df = df.rename(columns=str)
    rows = [[_cell(v) for v in r] for r in df[cols].itertuples(index=False, name=None)]
    rows.sort(key=lambda r: json.dumps(r))
    return {"columns": cols, "rows": rows}


def chart_tables(element) -> list[dict]:
    proto = element.proto
    frames = [pa.ipc.open_stream(d.data.data).read_pandas() for d in proto.datasets]
    if proto.data.data:
        frames.append(pa.ipc.open_stream(proto.data.data).read_pandas())
    return sorted((table(f) for f in frames), key=lambda t: json.dumps(t["columns"]))


def numbers(at) -> dict:
    """Every chart's datasets and every dataframe a run of a page shows."""
    return {
        "charts": [chart_tables(c) for c in at.get("vega_lite_chart")],
        "tables": [table(d.value) for d in at.dataframe],
    }


def render(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=300).run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, (page, at.exception)
    return at


def snapshot(store_path: str) -> dict:
    """``{page: numbers}`` of every page over the store at ``store_path`` (sets HWLAB_STORE)."""
    import os

    from app import _queries as q

    os.environ["HWLAB_STORE"] = str(store_path)
    q.clear()
    return {page: numbers(render(page)) for page in PAGES}


def diff(ref: dict, got: dict, rtol: float = 1e-9) -> list[str]:
    """Where ``got`` differs from ``ref`` (floats compared with ``rtol``)."""
    out = []

    def same(a, b):
        if isinstance(a, str) and isinstance(b, str):  # run ids hold their start time
            return _RUN.sub("RUN", a) == _RUN.sub("RUN", b)
        if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
            return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)
        if isinstance(b, float) and isinstance(a, int) and not isinstance(a, bool):
            return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)
        return a == b

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            if set(a) != set(b):
                out.append(f"{where}: keys {sorted(a)} != {sorted(b)}")
                return
            for k in a:
                walk(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                out.append(f"{where}: {len(a)} items != {len(b)}")
                return
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{where}[{i}]")
        elif not same(a, b):
            out.append(f"{where}: {a!r} != {b!r}")

    walk(ref, got, "")
    return out


if __name__ == "__main__":  # PYTHONPATH=. python tests/app/_snapshot.py OUT.json.gz N_ROWS: store a reference
    import gzip
    import logging
    import os
    import sys
    import tempfile

    from app._demo import seed_store
    from hwlab.store import Store

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    out, n_rows = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("HWLAB_HOME", tempfile.mkdtemp(prefix="hwlab-snap-home-"))
    path = Path(tempfile.mkdtemp(prefix="hwlab-snap-")) / "hwlab.sqlite"
    seed_store(Store(path), n_rows=n_rows)
    with gzip.open(out, "wt") as f:
        json.dump({"n_rows": n_rows, "pages": snapshot(str(path))}, f, sort_keys=True)
