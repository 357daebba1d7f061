"""The Run-a-study page and the empty-store entry page, with a small registered test study."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from hwlab import studies
from hwlab.store import Store
from hwlab.studies import Study, StudyConfig, param, run_items


@dataclass(frozen=True)
class _Config(StudyConfig):
    study: ClassVar[str] = "faultlab.tiny"
    model: str = param("lenet5", "model to test")  # a text field
    rates: tuple[float, ...] = param((1e-6, 1e-5), "per-bit fault rates", range=(0, 1),
                                     inclusive=(False, True), nonempty=True)  # comma-separated
    trials: int = param(3, "fault maps per rate", range=(1, 50))  # a number input
    fault: str = param("bitflip", "fault model", choices=("bitflip", "stuck0"))  # a select box
    protect: bool = param(False, "clip activations")  # a checkbox


def _trial(item):
    rate, trial, protect, fault = item
    return {"module": "faultlab", "method": "campaign", "fault_model": fault,
            "variant": "clipact-zero" if protect else "unprotected", "fault_rate": rate,
            "trial": trial, "accuracy": 0.9 - 1000 * rate - 0.01 * trial, "model": "lenet5"}


class _TinyStudy(Study):
    name, module, description = "faultlab.tiny", "faultlab", "A tiny study for the app tests."
    Config = _Config
    quick = {"trials": 2}  # noqa: RUF012 -- the base class declares a mapping

    def run(self, config, store, progress=None, executor=None):
        with self.open_run(store, config) as run_id:
            items = {f"{r:g}|{t}": (r, t, config.protect, config.fault) for r in config.rates
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


def test_form_is_built_from_declared_constraints_and_runs(app_at, tmp_path, tiny_registry, ui):
    path = tmp_path / "s.sqlite"
    at = app_at(path, "run_study")
    assert not at.exception
    assert at.selectbox(key="rs-study").value == TINY.name
    k = f"rs-{TINY.name}-True-False-"
    trials = at.number_input(key=k + "trials")
    assert trials.value == 2 and trials.min == 1 and trials.max == 50  # quick default, range
    assert "fault maps per rate" in trials.help and "an integer in [1, 50]" in trials.help
    fault = at.selectbox(key=k + "fault")
    assert fault.options == ["bitflip", "stuck0"] and fault.help.startswith("fault model")
    assert "0 runs, 0 rows" in ui.texts(at)
    at.text_input(key=k + "rates").set_value("1e-7, 1e-4, 3e-4")
    at.checkbox(key=k + "protect").check()
    at.selectbox(key=k + "fault").set_value("stuck0")
    at.button[0].click().run()
    assert not at.exception
    df = Store(path).results()
    assert len(df) == 3 * 2 and set(df["variant"]) == {"clipact-zero"}
    assert set(df["fault_model"]) == {"stuck0"}
    assert sorted(df["fault_rate"].unique()) == [1e-7, 1e-4, 3e-4]
    assert "finished with 6 result rows" in at.success[0].value
    assert len(at.dataframe[-1].value) == 6  # the new rows appear on the page
    assert "1 runs, 6 rows" in ui.texts(at)  # the sidebar counts include them (app reran)


def test_form_rejects_a_bad_value_in_the_template(app_at, tmp_path, tiny_registry):
    path = tmp_path / "s.sqlite"
    at = app_at(path, "run_study")
    at.toggle(key=f"rs-quick-{TINY.name}").set_value(False).run()
    k = f"rs-{TINY.name}-False-False-"
    assert at.number_input(key=k + "trials").value == 3
    at.text_input(key=k + "rates").set_value("1e-4, three'; DROP TABLE runs;--")
    at.button[0].click().run()
    assert not at.exception
    assert at.error[0].value == ("rates of study faultlab.tiny must be a number, "
                                 "got \"three'; DROP TABLE runs;--\"")
    assert Store(path).runs().empty  # nothing ran


def test_empty_store_offers_the_quick_studies(app_at, tmp_path, tiny_registry, ui):
    path = tmp_path / "empty.sqlite"
    at = app_at(path)
    assert not at.exception
    assert not at.get("vega_lite_chart")
    assert [s.value for s in at.subheader] == ["No results yet"]
    assert "about a minute" not in ui.texts(at)  # measured durations, not a guess
    table = at.dataframe[0].value
    assert table["study"].tolist() == [TINY.name] and table["quick run"].tolist() == [
        "not measured"]
    assert studies.get_study("faultlab.campaign").quick_seconds > 0  # measured, on the class
    assert at.multiselect(key="start-studies").value == [TINY.name]
    at.button(key="start-run").click().run()
    assert not at.exception
    df = Store(path).results()
    assert len(df) == 2 * 2  # the quick config: 2 rates x 2 trials
    assert "faultlab.tiny: done" in at.success[0].value  # the app reran over the new rows
    assert "No results yet" not in [s.value for s in at.subheader]
    assert "1 runs, 4 rows" in ui.texts(at)
