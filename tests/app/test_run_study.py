"""The Run-a-study page and the empty-store entry page, with a small registered test study."""

from dataclasses import dataclass

import pytest

from hwlab import studies
from hwlab.store import Store
from hwlab.studies import Study, run_items


@dataclass(frozen=True)
class _Config:
    model: str = "lenet5"  # shown as a text field
    rates: tuple[float, ...] = (1e-6, 1e-5)  # comma-separated on the form
    trials: int = 3  # rows per rate
    protect: bool = False  # a checkbox


def _trial(item):
    rate, trial, protect = item
    return {"module": "faultlab", "method": "campaign", "fault_model": "bitflip",
            "variant": "clipact-zero" if protect else "unprotected", "fault_rate": rate,
            "trial": trial, "accuracy": 0.9 - 1000 * rate - 0.01 * trial, "model": "lenet5"}


class _TinyStudy(Study):
    name, module, description = "faultlab.tiny", "faultlab", "A tiny study for the app tests."
    Config = _Config
    quick = {"trials": 2}  # noqa: RUF012 -- the base class declares a mapping

    def run(self, config, store, progress=None, executor=None):
        with self.open_run(store, config) as run_id:
            items = {f"{r:g}|{t}": (r, t, config.protect) for r in config.rates
                     for t in range(config.trials)}
            run_items(store, run_id, items, _trial, executor, progress)
        return run_id


TINY = _TinyStudy()


@pytest.fixture
def tiny_registry(monkeypatch):
    """Only the tiny study is registered (no method package is imported)."""
    from app import _widgets

    original = studies.get_study
    monkeypatch.setattr(studies, "list_studies", lambda: [TINY.name])
    monkeypatch.setattr(studies, "get_study",
                        lambda name: TINY if name in (TINY.name, TINY) else original(name))
    _widgets.forget_registry()
    yield
    _widgets.forget_registry()


def test_form_runs_the_study_with_progress(app_at, tmp_path, tiny_registry):
    path = tmp_path / "s.sqlite"
    at = app_at(path, "run_study")
    assert not at.exception
    assert at.selectbox(key="rs-study").value == TINY.name
    assert at.text_input(key=f"rs-{TINY.name}-True-trials").value == "2"  # quick default
    at.text_input(key=f"rs-{TINY.name}-True-rates").set_value("1e-7, 1e-4, 3e-4")
    at.checkbox(key=f"rs-{TINY.name}-True-protect").check()
    at.button[0].click().run()
    assert not at.exception
    bar = at.get("progress")[-1].proto
    assert bar.value == 100 and "done" in bar.text
    df = Store(path).results()
    assert len(df) == 3 * 2 and set(df["variant"]) == {"clipact-zero"}
    assert sorted(df["fault_rate"].unique()) == [1e-7, 1e-4, 3e-4]
    assert "finished with 6 result rows" in at.success[0].value
    assert len(at.dataframe[-1].value) == 6  # the new rows appear on the page


def test_form_rejects_a_bad_value_in_the_template(app_at, tmp_path, tiny_registry):
    path = tmp_path / "s.sqlite"
    at = app_at(path, "run_study")
    at.toggle(key=f"rs-quick-{TINY.name}").set_value(False).run()
    assert at.text_input(key=f"rs-{TINY.name}-False-trials").value == "3"
    at.text_input(key=f"rs-{TINY.name}-False-trials").set_value("three'; DROP TABLE runs;--")
    at.button[0].click().run()
    assert not at.exception
    assert at.error[0].value == ("trials of study faultlab.tiny must be an integer, "
                                 "got \"three'; DROP TABLE runs;--\"")
    assert Store(path).runs().empty  # nothing ran


def test_empty_store_offers_the_quick_studies(app_at, tmp_path, tiny_registry, ui):
    path = tmp_path / "empty.sqlite"
    at = app_at(path)
    assert not at.exception
    assert not at.get("vega_lite_chart")
    assert [s.value for s in at.subheader] == ["No results yet"]
    assert at.multiselect(key="start-studies").value == [TINY.name]
    at.button(key="start-run").click().run()
    assert not at.exception
    df = Store(path).results()
    assert len(df) == 2 * 2  # the quick config: 2 rates x 2 trials
    charts = at.get("vega_lite_chart")  # after the rerun the Overview draws the new rows
    assert len(charts) == 1
    pts = ui.frame_with(charts[0], "fault_rate", "accuracy", "run_id")
    assert len(pts) == 2 and set(pts["n"]) == {2}
