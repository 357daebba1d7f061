"""Reading a store imports no study: what a study's latency / memory columns mean is recorded in
the store when the study opens a run, so a cold dashboard page stays light (issue 30's memory)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hwlab import _figure_data as fd
from hwlab.store import Store
from hwlab.studies import get_study


def test_a_study_records_its_kinds_and_readers_use_them(tmp_path, monkeypatch):
    store = Store(tmp_path / "s.sqlite")
    assert store.study_kinds() == {}  # a store written before: the registry is asked
    study = get_study("localtrain.compare")
    with study.open_run(store, study.make_config(quick=True)) as run_id:
        store.add_results(run_id, [{"key": "e2e", "module": "localtrain", "variant": "e2e",
                                    "accuracy": 0.9, "latency_ms": 2.0,
                                    "memory_bytes": 2 ** 20}])
    assert store.study_kinds() == {"localtrain.compare": (study.latency_kind,
                                                          study.memory_kind)}

    def no_registry(name):
        raise AssertionError(f"the registry was asked for {name}")

    monkeypatch.setattr("hwlab.studies.find_study", no_registry)
    out = fd.with_metrics(store.select(aggregates=False), store.study_kinds())
    assert out["train_step_ms"].iloc[0] == 2.0 and out["train_memory_bytes"].iloc[0] == 1.0  # MiB
    assert out["inference_ms"].isna().all() and out["model_bytes"].isna().all()


def test_the_overview_of_a_seeded_store_imports_no_study(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from hwlab.store import Store
        from app._demo import seed_store
        seed_store(Store({str(tmp_path / "d.sqlite")!r}))
        for m in [m for m in sys.modules if m.split(".")[0] in
                  ("faultlab", "spiking", "quantum", "localtrain", "torch")]:
            del sys.modules[m]
        os.environ["HWLAB_STORE"] = {str(tmp_path / "d.sqlite")!r}
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file("app/app_pages/overview.py", default_timeout=120).run()
        assert not at.exception, at.exception
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} &
                       {{"faultlab", "spiking", "quantum", "localtrain", "torch"}})
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
                         timeout=300, check=False)
    assert "HEAVY []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
