"""Dashboard page render time with 100,000 result rows in the store (target: < 2 s per page).

Seeds a temporary store with 100,000 synthetic rows (app._demo.fake_results: every study's
shapes, the bulk being fault-campaign trials), then renders every page with Streamlit's AppTest:

* cold: the data caches cleared first (the page reads the store through Store.results / runs);
* warm: the same page again over the unchanged store (cached queries, no SQL).

Baselines measured in the same run: the bare ``Store.results()`` read of all rows (the floor a
cold page cannot beat without a narrower store query) and the same pages over a small store
(870 rows). Module imports (streamlit, altair, torch and the method packages that the study
registry loads) are paid once in a warm-up pass and are not counted. Writes
benchmarks/results/app_render.json.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
PAGES = ("overview", "faults", "memory", "mitigation", "systolic", "spiking", "quantum",
         "localtrain", "runs", "run_study")
N_ROWS = int(os.environ.get("HWLAB_BENCH_ROWS", "100000"))
REPEATS = 3


def _render(page: str, clear: bool) -> float:
    from streamlit.testing.v1 import AppTest

    from app import _queries as q

    at = AppTest.from_file(MAIN, default_timeout=300)
    if page == "overview":
        if clear:
            q.clear()
        t0 = time.perf_counter()
        at.run()
    else:
        at.run()
        if clear:
            q.clear()
        at.switch_page(f"app_pages/{page}.py")
        t0 = time.perf_counter()
        at.run()
    dt = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].value}")
    return dt


def _pages(path: str) -> dict:
    os.environ["HWLAB_STORE"] = path
    out = {}
    for page in PAGES:
        cold = [_render(page, clear=True) for _ in range(REPEATS)]
        warm = [_render(page, clear=False) for _ in range(REPEATS)]
        out[page] = {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm)}
    return out


def main() -> int:
    sys.path.insert(0, str(ROOT))
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # bare-mode cache warnings
    os.environ.setdefault("HWLAB_HOME", tempfile.mkdtemp(prefix="hwlab-bench-home-"))
    from app._demo import seed_store
    from hwlab.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="hwlab-bench-app-"))
    small, big = tmp / "small.sqlite", tmp / "big.sqlite"
    seed_store(Store(small))
    t0 = time.perf_counter()
    seed_store(Store(big), n_rows=N_ROWS)
    seed_s = time.perf_counter() - t0
    store = Store(big)
    read = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        n = len(store.results())
        read.append(time.perf_counter() - t0)
    read_s = statistics.median(read)

    _pages(str(small))  # warm-up: imports and the study registry, not counted
    small_t = _pages(str(small))
    big_t = _pages(str(big))

    print(f"{n:,} rows seeded in {seed_s:.1f} s; Store.results() reads them in {read_s:.3f} s")
    print(f"{'page':<11} {'cold (s)':>9} {'warm (s)':>9} {'small warm':>11} {'cold/2s':>8} "
          f"{'warm/2s':>8} {'cold/read':>10}")
    for page in PAGES:
        c, w = big_t[page]["cold_s"], big_t[page]["warm_s"]
        print(f"{page:<11} {c:9.3f} {w:9.3f} {small_t[page]['warm_s']:11.3f} {c / 2:8.2f} "
              f"{w / 2:8.2f} {c / read_s:10.2f}")
    worst_cold = max(v["cold_s"] for v in big_t.values())
    worst_warm = max(v["warm_s"] for v in big_t.values())
    print(f"worst page: cold {worst_cold:.3f} s, warm {worst_warm:.3f} s (target < 2 s)")
    result = {"rows": n, "seed_s": seed_s, "store_read_s": read_s, "repeats": REPEATS,
              "pages_100k": big_t, "pages_small": small_t, "worst_cold_s": worst_cold,
              "worst_warm_s": worst_warm, "target_s": 2.0, "cpu_count": os.cpu_count(),
              "load_avg": os.getloadavg()}
    out = ROOT / "benchmarks" / "results" / "app_render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
