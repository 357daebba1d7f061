"""Dashboard page render time at 100,000 and 1,000,000 result rows (targets at 1M rows: every
page cold < 1.5 s, warm < 0.5 s; peak memory of a cold Overview < 300 MB).

    python benchmarks/app_render.py --rows 100000 1000000

For each row count: seeds a temporary store (app._demo.seed_store: every study's shapes, the
bulk being float32 fault-campaign trials), brings the store's summary table up to date (timed
and printed: a store pays it once for the rows written since the last read), then renders every
page with Streamlit's AppTest:

* cold: the dashboard's query caches cleared first (each page asks the store for its sums and
  narrow reads again);
* warm: the same page again over the unchanged store (cached queries, no SQL).

Median of three runs each. Baselines in the same run: ``Store.results()`` (reading every row,
what each page cost before it asked for sums) and the pages over a small store (870 rows).
Peak memory: a fresh process renders the Overview on a small store (imports, study registry),
resets its peak RSS (/proc/self/clear_refs), then renders it cold on the big store; printed as
the process's peak RSS and the rise over the imports. Module imports are paid once in a warm-up
pass and are not counted. Writes benchmarks/results/app_render.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
PAGES = ("overview", "faults", "memory", "mitigation", "systolic", "spiking", "quantum",
         "localtrain", "figures", "runs", "run_study")
REPEATS = 3
TARGET_COLD_S, TARGET_WARM_S, TARGET_MB = 1.5, 0.5, 300


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


def _pages(path: str, repeats: int = REPEATS) -> dict:
    os.environ["HWLAB_STORE"] = path
    out = {}
    for page in PAGES:
        cold = [_render(page, clear=True) for _ in range(repeats)]
        warm = [_render(page, clear=False) for _ in range(repeats)]
        out[page] = {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm)}
    return out


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _memory_child(small: str, big: str) -> None:
    """In a fresh process: warm imports on ``small``, reset the peak, render Overview cold on
    ``big``; print JSON with the peak RSS and the RSS before."""
    sys.path.insert(0, str(ROOT))
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    os.environ["HWLAB_STORE"] = small
    _render("overview", clear=True)
    before = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    os.environ["HWLAB_STORE"] = big
    t = _render("overview", clear=True)
    print(json.dumps({"rss_before_mb": before / 1024, "peak_mb": _rss_kb("VmHWM") / 1024,
                      "cold_s": t}))


def _memory(small: str, big: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", small, big],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["rise_mb"] = res["peak_mb"] - res["rss_before_mb"]
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000],
                        help="row counts to measure (default 100000)")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child)
        return 0
    sys.path.insert(0, str(ROOT))
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # bare-mode cache warnings
    os.environ.setdefault("HWLAB_HOME", tempfile.mkdtemp(prefix="hwlab-bench-home-"))
    from app._demo import seed_store
    from hwlab.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="hwlab-bench-app-"))
    small = tmp / "small.sqlite"
    seed_store(Store(small))
    _pages(str(small), 1)  # warm-up: imports and the study registry, not counted
    small_t = _pages(str(small))
    result = {"repeats": REPEATS, "cpu_count": os.cpu_count(), "pages_small": small_t,
              "sizes": {}}
    for n_rows in args.rows:
        big = tmp / f"rows{n_rows}.sqlite"
        t0 = time.perf_counter()
        seed_store(Store(big), n_rows=n_rows)
        seed_s = time.perf_counter() - t0
        store = Store(big)
        t0 = time.perf_counter()
        n = store.count()  # brings the summary table up to the newest row (once)
        summary_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.results()
        read_s = time.perf_counter() - t0
        load = os.getloadavg()
        big_t = _pages(str(big))
        mem = _memory(str(small), str(big))
        size_mb = big.stat().st_size / 2**20
        print(f"\n{n:,} rows ({size_mb:.0f} MB file) seeded in {seed_s:.1f} s; summary table "
              f"brought up to date in {summary_s:.2f} s (once); Store.results() of every row "
              f"{read_s:.2f} s; load average {load[0]:.2f} on {os.cpu_count()} cores")
        print(f"{'page':<11} {'cold (s)':>9} {'warm (s)':>9} {'small cold':>11} {'small warm':>11}")
        for page in PAGES:
            c, w = big_t[page]["cold_s"], big_t[page]["warm_s"]
            print(f"{page:<11} {c:9.3f} {w:9.3f} {small_t[page]['cold_s']:11.3f} "
                  f"{small_t[page]['warm_s']:11.3f}")
        worst_cold = max(v["cold_s"] for v in big_t.values())
        worst_warm = max(v["warm_s"] for v in big_t.values())
        print(f"worst page: cold {worst_cold:.3f} s (target < {TARGET_COLD_S}), warm "
              f"{worst_warm:.3f} s (target < {TARGET_WARM_S})")
        print(f"cold Overview in a fresh process: peak RSS {mem['peak_mb']:.0f} MB (imports "
              f"{mem['rss_before_mb']:.0f} MB, rise {mem['rise_mb']:.0f} MB; target < "
              f"{TARGET_MB} MB)")
        result["sizes"][str(n)] = {
            "rows": n, "file_mb": size_mb, "seed_s": seed_s, "summary_catch_up_s": summary_s,
            "store_results_s": read_s, "pages": big_t, "worst_cold_s": worst_cold,
            "worst_warm_s": worst_warm, "overview_memory": mem, "load_avg": load}
        big.unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{big}{suffix}").unlink(missing_ok=True)
    out = ROOT / "benchmarks" / "results" / "app_render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
