"""run_context / Study.open_run: the one place a run's status is decided (#13 item 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from hwlab.errors import fail
from hwlab.store import Store
from hwlab.studies import Study, StudyConfig, param, run_context, run_items


@dataclass(frozen=True)
class Cfg(StudyConfig):
    study: ClassVar[str] = "demo.ctx"
    n: int = param(3, "items", range=(1, None))


class Refusing(Study):
    """Refuses a resume when the 'weights' differ from the stored ones (like a campaign)."""

    name, module, description, Config = "demo.ctx", "demo", "run_context test.", Cfg

    def run(self, config, store, progress=None, executor=None, weights="w1"):
        with self.open_run(store, config) as run_id:
            stored = store.results(run_id=run_id)
            if len(stored) and stored["variant"].iloc[0] != weights:
                raise fail("weights", f"study {self.name}", f"the weights of the stored run "
                           f"({stored['variant'].iloc[0]})", weights)
            run_items(store, run_id, {f"k{i}": {"variant": weights} for i in range(config.n)},
                      dict)
        return run_id


def test_a_refused_resume_leaves_the_finished_run_done(tmp_path):
    store, study = Store(tmp_path / "s.sqlite"), Refusing()
    run = study.run(Cfg(), store)
    before = store.run_state(run)
    assert before["status"] == "done" and before["n_results"] == 3
    with pytest.raises(ValueError, match=r"weights of study demo.ctx must be the weights of the "
                                         r"stored run \(w1\), got 'w2'"):
        study.run(Cfg(), store, weights="w2")
    assert store.run_state(run) == before  # still done, same finish time, same rows
    assert len(store.runs()) == 1


def test_a_refusal_on_a_new_run_leaves_no_run_row(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(ValueError, match="x of demo must be"):
        with run_context(store, "demo.new", {"a": 1}):
            raise fail("x", "demo", "positive", -1)
    assert store.runs().empty


def test_failures_after_rows_or_other_errors_mark_the_run_failed(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(ValueError), run_context(store, "demo.rows", {}) as run:
        store.add_results(run, [{"key": "k"}])
        raise fail("x", "demo", "positive", -1)  # rows were written: a real failure
    assert store.run_state(run)["status"] == "failed"
    with pytest.raises(KeyboardInterrupt), run_context(store, "demo.ctrl-c", {}) as run2:
        raise KeyboardInterrupt
    assert store.run_state(run2)["status"] == "failed"
    with run_context(store, "demo.rows", {}) as again:  # resumed, then finished
        assert again == run
    assert store.run_state(run)["status"] == "done"


def test_config_validates_itself(tmp_path):
    with pytest.raises(ValueError, match=r"n of study demo.ctx must be an integer >= 1, got 0"):
        Cfg(n=0)
    with pytest.raises(ValueError, match=r"n of study demo.ctx must be an integer, got '3'"):
        Cfg(n="3")  # no string conversion outside make_config
    assert Refusing().make_config(n="4").n == 4
    c = Refusing().constraints()["n"]
    assert (c["help"], c["range"], c["text"], c["default"]) == ("items", (1, None),
                                                                 "an integer >= 1", 3)
