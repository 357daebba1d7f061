"""hwlab.studies: config validation, the entry-point registry, run_study and run_items resume."""

from __future__ import annotations

import importlib.metadata
import logging
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest

from hwlab import studies
from hwlab.executors import get_executor
from hwlab.store import Store
from hwlab.studies import Study, derive_seed, get_study, list_studies, run_items, run_study


@dataclass(frozen=True)
class DemoConfig:
    models: tuple[str, ...] = ("mlp",)  # one small model
    dataset: str = "digits"  # fast
    seed: int = 0  # reproducible
    rates: tuple[float, ...] = (1e-6, 1e-5)  # two points of a curve
    trials: int = 3  # enough for a test
    clip: bool = False  # off by default
    note: str | None = None  # optional


class DemoStudy(Study):
    name, module, description = "demo.study", "demo", "A study for the tests."
    Config = DemoConfig
    quick: ClassVar[dict] = {"trials": 1}

    def run(self, config, store, progress=None, executor=None):
        with self.open_run(store, config) as run_id:
            items = {f"{m}|{r}|trial={t}": {"model": m, "fault_rate": r, "trial": t,
                                             "seed": derive_seed(config.seed, f"{m}|{r}|{t}")}
                     for m in config.models for r in config.rates for t in range(config.trials)}
            run_items(store, run_id, items, dict, executor, progress,
                      defaults={"module": "demo", "method": "demo", "dataset": config.dataset})
        return run_id


DEMO = DemoStudy()


def test_make_config_converts_cli_strings():
    c = DEMO.make_config(rates="1e-7, 1e-3", trials="5", clip="true", seed="2", model="lenet5")
    assert c == DemoConfig(models=("lenet5",), rates=(1e-7, 1e-3), trials=5, clip=True, seed=2)
    assert DEMO.make_config(clip="0", note="none").clip is False
    assert DEMO.make_config(note="hi", models=["a", "b"]).models == ("a", "b")
    assert DEMO.make_config(quick=True).trials == 1
    assert DEMO.make_config(quick=True, trials=4).trials == 4  # explicit beats quick
    assert DEMO.make_config(model=None, dataset=None, seed=None) == DemoConfig()
    assert DEMO.options()["rates"] == tuple[float, ...]


@pytest.mark.parametrize(("overrides", "match"), [
    ({"trails": 3}, (r"option of study demo.study must be one of clip, dataset, models, note, "
                     r"rates, seed, trials, got 'trails'")),
    ({"trials": "many"}, r"trials of study demo.study must be an integer, got 'many'"),
    ({"trials": 2.5}, r"trials of study demo.study must be an integer, got 2.5"),
    ({"trials": True}, r"trials of study demo.study must be an integer, got True"),
    ({"rates": "1e-6,x"}, r"rates of study demo.study must be a number, got 'x'"),
    ({"rates": 0.1}, r"rates of study demo.study must be a tuple"),
    ({"clip": "maybe"}, r"clip of study demo.study must be a bool \(true or false\)"),
    ({"dataset": 3}, r"dataset of study demo.study must be a str, got 3"),
])
def test_make_config_rejects_bad_names_and_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        DEMO.make_config(**overrides)


def test_run_study_writes_rows_and_resumes(tmp_path):
    calls = []
    path = tmp_path / "s.sqlite"
    run = run_study(DEMO, store=path, trials=2, progress=lambda *a: calls.append(a))
    store = Store(path)
    df = store.results(run_id=run)
    assert len(df) == 4 and set(df["module"]) == {"demo"} and set(df["dataset"]) == {"digits"}
    assert calls[0] == (0, 4, "0 stored") and calls[-1][:2] == (4, 4)
    assert store.runs().set_index("run_id").loc[run, "status"] == "done"
    calls.clear()
    assert run_study(DEMO, store=store, trials=2, progress=lambda *a: calls.append(a)) == run
    assert calls == [(4, 4, "4 stored")] and len(store.results()) == 4  # nothing re-run
    other = run_study(DEMO, store=store, quick=True, executor="serial")
    assert other != run and len(store.results(run_id=other)) == 2
    with pytest.raises(ValueError, match=r"executor of run_study must be None, an executor"):
        run_study(DEMO, store=store, executor=4)


def _boom(item):
    raise ZeroDivisionError("bad item")


def test_run_items_checks_input_and_names_a_failing_item(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    run = store.open_run("t", {})
    with pytest.raises(RuntimeError, match=r"item 'k' of run_items failed: ZeroDivisionError"):
        run_items(store, run, {"k": 1}, _boom)
    with pytest.raises(ValueError, match=r"result for 'k' of run_items must be a dict"):
        run_items(store, run, {"k": 1}, abs)
    with pytest.raises(ValueError, match=r"key of the row for 'k' of run_items must be absent or"):
        run_items(store, run, {"k": {"key": "other"}}, dict)
    with pytest.raises(ValueError, match=r"items of run_items must be keyed by non-empty strings"):
        run_items(store, run, {3: {}}, dict)
    assert store.done_keys(run) == set()


def test_rows_are_written_as_items_complete_with_flush_rows_1(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    run = store.open_run("t", {})
    seen, stored_at_call = [], []

    def progress(done, total, key):  # each call comes after the item's row is committed
        seen.append((done, len(store.done_keys(run))))

    def fn(item):  # with the serial executor each item runs after the previous row is stored
        stored_at_call.append(len(store.done_keys(run)))
        return item

    with get_executor("serial") as ex:
        assert run_items(store, run, {f"k{i}": {"trial": i} for i in range(5)}, fn, ex,
                         progress, flush_rows=1) == 5
    assert seen == [(i, i) for i in range(6)]
    assert stored_at_call == [0, 1, 2, 3, 4]


def test_rows_are_written_in_batches_of_flush_rows(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    run = store.open_run("t", {})
    stored_at_call = []

    def fn(item):
        stored_at_call.append(len(store.done_keys(run)))
        return item

    items = {f"k{i}": {"trial": i} for i in range(7)}
    assert run_items(store, run, items, fn, flush_rows=3, flush_seconds=3600) == 7
    assert stored_at_call == [0, 0, 0, 3, 3, 3, 6]  # one transaction per 3 rows, then the rest
    assert store.done_keys(run) == set(items)
    stored_at_call.clear()  # by age: flush_seconds=0 writes every row at once
    run2 = store.open_run("t2", {})
    run_items(store, run2, items, lambda i: (stored_at_call.append(len(store.done_keys(run2))),
                                             i)[1], flush_rows=100, flush_seconds=0)
    assert stored_at_call == list(range(7))


def test_rows_finished_before_a_failure_are_written(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    run = store.open_run("t", {})

    def fn(item):
        if item["trial"] == 4:
            raise KeyError("boom")
        return item

    with pytest.raises(RuntimeError, match=r"item 'k4' of run_items failed: KeyError"):
        run_items(store, run, {f"k{i}": {"trial": i} for i in range(6)}, fn, flush_rows=100,
                  flush_seconds=3600)
    assert store.done_keys(run) == {"k0", "k1", "k2", "k3"}


def test_failed_study_run_is_marked_failed(tmp_path):
    class Broken(DemoStudy):
        name = "demo.broken"

        def run(self, config, store, progress=None, executor=None):
            with self.open_run(store, config):
                raise KeyError("boom")

    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(KeyError):
        run_study(Broken(), store=store)
    assert store.runs()["status"].tolist() == ["failed"]


def test_derive_seed_is_stable_and_key_dependent():
    assert derive_seed(0, "a") == derive_seed(0, "a") == 1814709002494958226  # sha256("0|a")[:8] >> 1
    assert len({derive_seed(s, k) for s in range(3) for k in "abc"}) == 9
    assert all(0 <= derive_seed(s, "x") < 2**63 for s in range(50))


_MODULE = '''
from dataclasses import dataclass
from typing import ClassVar
from hwlab.studies import Study

@dataclass(frozen=True)
class C:
    n: int = 1  # one item

class S(Study):
    name, module, description, Config = "fake.ok", "fake", "The fake study.", C
    def run(self, config, store, progress=None, executor=None):
        return "r"

OK = S()
NOT_A_STUDY = 42
'''


def test_registry_loads_entry_points_and_skips_broken_ones(tmp_path, monkeypatch, caplog):
    (tmp_path / "fake_hwlab_study_mod.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    group = studies.ENTRY_POINT_GROUP
    eps = {n: importlib.metadata.EntryPoint(n, v, group) for n, v in [
        ("fake.ok", "fake_hwlab_study_mod:OK"),
        ("fake.missing", "fake_hwlab_no_such_module:X"),
        ("fake.wrong", "fake_hwlab_study_mod:NOT_A_STUDY"),
    ]}
    monkeypatch.setattr(studies, "_entry_points", lambda: eps)
    with caplog.at_level(logging.WARNING, logger="hwlab.studies"):
        assert list_studies() == ["fake.ok"]
    assert "skipping study fake.missing: ModuleNotFoundError" in caplog.text
    assert "skipping study fake.wrong: TypeError" in caplog.text
    assert get_study("fake.ok").description == "The fake study."
    assert get_study(DEMO) is DEMO
    with pytest.raises(ValueError, match=r"name of get_study must be one of fake.missing, "
                                         r"fake.ok, fake.wrong, got 'nope'"):
        get_study("nope")
    with pytest.raises(ValueError, match=r"name of get_study must be a study that loads "
                                         r"\(ModuleNotFoundError"):
        get_study("fake.missing")


def test_real_entry_points_are_discovered():
    names = set(studies._entry_points())
    assert {"hwlab.zoo", "faultlab.campaign", "localtrain.compare"} <= names


_KILLED = textwrap.dedent("""
    import sys, time
    from hwlab.store import Store
    from hwlab.studies import run_items

    def slow(item):
        time.sleep(0.05)
        return {"trial": item}

    store = Store(sys.argv[1])
    run = store.open_run("killme", {"n": 40})
    run_items(store, run, {f"t{i}": i for i in range(40)}, slow)
""")


def _record_trial(item):
    _record_trial.seen.append(item)
    return {"trial": item}


def test_run_items_resumes_after_sigkill(tmp_path):
    path = tmp_path / "k.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists() and len(Store(path).results()) >= 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = Store(path)
    first = set(store.results()["key"])
    assert 5 <= len(first) < 40
    run = store.open_run("killme", {"n": 40})  # the same run comes back
    assert store.done_keys(run) == first
    _record_trial.seen = []
    assert run_items(store, run, {f"t{i}": i for i in range(40)}, _record_trial) == 40 - len(first)
    assert sorted(f"t{i}" for i in _record_trial.seen) == sorted(
        {f"t{i}" for i in range(40)} - first)  # only the missing items ran
    df = store.results()
    assert sorted(df["trial"].tolist()) == list(range(40)) and df["key"].is_unique


_KILLED_BATCHED = textwrap.dedent("""
    import os, sys, time
    from hwlab.store import Store
    from hwlab.studies import run_items

    def slow(item):
        time.sleep(0.02)
        return {"trial": item, "accuracy": item / 100}

    log = open(sys.argv[2], "a")

    def progress(done, total, key):  # after the item's row was buffered (and any flush)
        log.write(key + "\\n")
        log.flush()
        os.fsync(log.fileno())

    store = Store(sys.argv[1])
    run = store.open_run("killme", {"n": 60})
    run_items(store, run, {f"t{i}": i for i in range(60)}, slow, progress=progress,
              flush_rows=4, flush_seconds=3600)
""")


def test_batched_writes_lose_at_most_the_open_batch_on_sigkill(tmp_path):
    path, log = tmp_path / "k.sqlite", tmp_path / "finished.txt"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BATCHED, str(path), str(log)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill in the middle of a batch
            lines = log.read_text().split() if log.exists() else []
            keys = [k for k in lines if k.startswith("t")]
            if len(keys) >= 10 and len(keys) % 4 == 2:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = {k for k in log.read_text().split() if k.startswith("t")}
    store = Store(path)
    stored = set(store.results()["key"])
    assert 8 <= len(stored) < 60 and len(stored) % 4 == 0  # whole batches only
    assert len(stored - finished) <= 1  # a flush may land just before its progress line
    assert len(finished - stored) <= 3  # lost: at most the open batch (flush_rows - 1 rows)
    run = store.open_run("killme", {"n": 60})
    _record_trial.seen = []
    items = {f"t{i}": i for i in range(60)}
    assert run_items(store, run, items, _record_trial, flush_rows=4) == 60 - len(stored)
    assert sorted(f"t{i}" for i in _record_trial.seen) == sorted(set(items) - stored)
    df = store.results().sort_values("trial")
    assert df["trial"].tolist() == list(range(60)) and df["key"].is_unique
    killed_rows = df[df["key"].isin(stored)]
    assert (killed_rows["accuracy"] == killed_rows["trial"] / 100).all()  # intact, not torn


def test_a_bad_row_in_a_batch_keeps_the_good_rows_before_it(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    run = store.open_run("t", {})
    items = {f"k{i}": ({"trial": i} if i != 3 else {"trial": "three"}) for i in range(6)}
    with pytest.raises(ValueError, match=r"trial of Store.add_results must be a number or None, "
                                         r"got 'three'"):
        run_items(store, run, items, dict, flush_rows=100, flush_seconds=3600)
    assert store.done_keys(run) == {"k0", "k1", "k2"}  # not lost with the batch
