"""A real browser over the dashboard: Playwright drives Debian's Chromium through every page.

Starts ``streamlit run app/main.py`` on a free 127.0.0.1 port over a seeded store (what
``make run`` / ``hwlab dashboard --store`` run), clicks through the pages in the sidebar, saves a
screenshot of each (to ``$HWLAB_APP_SCREENSHOTS`` when set, else a tmp folder) and asserts that
the charts rendered (an SVG or canvas inside every Vega embed) and that no page shows an
exception or an error box. Skipped when /usr/bin/chromium is missing, unless ``CI=true``.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]
MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
# sidebar label -> number of charts the page draws over the seeded store
PAGES = {"Overview": 2, "Faults": 3, "Memory": 4, "Mitigation": 2, "Systolic array": 1,
         "Number formats": 0, "Training faults": 0, "Language models": 0,  # no demo rows: a note
         "Spiking": 2, "Quantum": 2, "Local learning": 1, "Runs": 1, "Run a study": 1}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("app-browser"),  # one server for both tests under --dist loadgroup
    pytest.mark.skipif(not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true",
                       reason=f"{CHROMIUM} is missing (apt-get install chromium); CI=true runs it"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(seeded_path, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {**os.environ, "HWLAB_STORE": seeded_path, "HWLAB_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "streamlit", "run", str(MAIN), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _settle(page, timeout_s: float = 45) -> None:
    """Wait until Streamlit has finished running the page script."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count()
        skeleton = page.locator('[data-testid="stSkeleton"]').count()
        if not running and not skeleton:
            page.wait_for_timeout(400)
            if not page.locator('[data-testid="stStatusWidget"]').count():
                return
        page.wait_for_timeout(250)
    raise TimeoutError("the page script did not finish")


def test_click_through_every_page(server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("HWLAB_APP_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(server)
        _settle(page)
        for label, n_charts in PAGES.items():
            page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
            _settle(page)
            title = page.locator("h1").first.inner_text()
            assert title == label, f"clicked {label!r}, page says {title!r}"
            charts = page.locator('[data-testid="stVegaLiteChart"]')
            if n_charts:
                charts.nth(n_charts - 1).wait_for(timeout=30_000)
            assert charts.count() == n_charts, label
            for i in range(n_charts):
                drawn = charts.nth(i).locator("svg, canvas")
                drawn.first.wait_for(timeout=30_000)
                box = drawn.first.bounding_box()
                assert box and box["width"] > 100 and box["height"] > 100, (label, i, box)
            assert page.locator('[data-testid="stException"]').count() == 0, label
            errors = page.locator('[data-testid="stAlertContentError"]')
            assert errors.count() == 0, (label, errors.all_inner_texts())
            page.screenshot(path=str(shots / f"{label.lower().replace(' ', '-')}.png"),
                            full_page=True)
        browser.close()
    assert len(list(shots.glob("*.png"))) == len(PAGES)


def test_downloads_and_click_to_run(server, tmp_path):
    """PNG from the chart menu, the chart's data as CSV, the Runs export, and a clicked point."""
    import pandas as pd
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
        page.goto(server)
        _settle(page)
        chart = page.locator('[data-testid="stVegaLiteChart"]').first
        chart.locator("svg, canvas").first.wait_for(timeout=30_000)
        chart.hover()
        png_button = page.locator('button[aria-label="Download as PNG"]').first
        png_button.wait_for(timeout=30_000)
        with page.expect_download(timeout=30_000) as dl:
            # the toolbar floats over the chart: a pointer click can land on the chart's svg
            # (seen under CI load), so the click event goes to the button itself
            png_button.dispatch_event("click")
        png = tmp_path / "chart.png"
        dl.value.save_as(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
        with page.expect_download(timeout=30_000) as dl:
            page.get_by_role("button", name="Download data (CSV)").first.click()
        csv = tmp_path / "points.csv"
        dl.value.save_as(csv)
        points = pd.read_csv(csv)
        assert len(points) == 17 and {"run_id", "model_bytes", "accuracy"} <= set(points)
        assert set(points["dataset"]) == {"mnist5k"}  # the front of one dataset
        with page.expect_download(timeout=60_000) as dl:  # server-side, vl-convert
            page.get_by_role("button", name="SVG").first.click()
        assert dl.value.suggested_filename.startswith("Overview_mnist5k_")
        svg = tmp_path / "fig.svg"
        dl.value.save_as(svg)
        assert svg.read_text()[:200].lstrip().startswith("<svg")

        # click points until one opens its run below the chart (hit testing is the browser's)
        symbols = chart.locator("g.mark-symbol path")
        opened = False
        for i in range(min(symbols.count(), 8)):
            symbols.nth(i).click(force=True)
            _settle(page)
            if page.locator("h3", has_text="Run ").count():
                opened = True
                break
        assert opened, "clicking a point did not open its run"
        run_id = page.locator("h3", has_text="Run ").first.inner_text().removeprefix("Run ")
        assert run_id in set(points["run_id"])

        page.locator('[data-testid="stSidebarNav"] a', has_text="Runs").first.click()
        _settle(page)
        with page.expect_download(timeout=60_000) as dl:
            page.get_by_role("button", name="Download CSV").click()
        assert dl.value.suggested_filename == "hwlab-results.csv"
        export = tmp_path / "export.csv"
        dl.value.save_as(export)
        assert len(pd.read_csv(export)) == 870
        browser.close()
