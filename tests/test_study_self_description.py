"""A study describes itself: a study registered like a plugin (no central edit) is seen by
`hwlab list`, `hwlab run --help`, `hwlab figure`, the figure data and the dashboard; every
registered study says how it is seen, and its name is written once."""

from __future__ import annotations

import importlib.metadata
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import pytest

from hwlab import cli, studies
from hwlab._figure_data import with_metrics
from hwlab.store import Store
from hwlab.studies import (
    LATENCY_KINDS,
    MEMORY_KINDS,
    Study,
    StudyConfig,
    param,
    register_study,
    run_items,
    unregister_study,
)

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
NAME = "plugin.self-described"


@dataclass(frozen=True)
class _Config(StudyConfig):  # no `study` here: the Study's name is the one place it is written
    level: float = param(0.5, "the accuracy its one row reports", range=(0, 1))


def _row(level: float) -> dict:
    return {"module": "plugin", "method": "dummy", "variant": "only", "model": "lenet5",
            "dataset": "digits", "accuracy": level, "latency_ms": 3.0,
            "memory_bytes": 2 ** 20}


def _draw(rows):
    return alt.Chart(rows).mark_point().encode(x="variant:N", y="accuracy:Q")


class _SelfDescribed(Study):
    name, module, description = NAME, "plugin", "A study a test registers like a plugin."
    Config = _Config
    quick = {"level": 0.25}  # noqa: RUF012 -- the base class declares a mapping
    figure = _draw  # a plain function: not bound as a method
    figure_title = "the one row's accuracy"
    latency_kind = "train_step_ms"
    memory_kind = "train_memory_bytes"
    page = "figures"  # no page of its own: the Key figures page draws it
    quick_seconds = 3

    def run(self, config, store, progress=None, executor=None):
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, {"only": config.level}, _row, executor, progress)
        return run_id


DUMMY = _SelfDescribed()


@pytest.fixture
def registered():
    """The dummy study registered in this process (as an entry point would register it)."""
    from app import _widgets

    register_study(DUMMY)
    _widgets.forget_registry()  # the dashboard's cached list of names
    yield DUMMY
    unregister_study(NAME)
    _widgets.forget_registry()


def test_the_name_is_written_once():
    assert _Config.study == NAME  # set by the Study class
    with pytest.raises(ValueError, match=f"level of study {NAME} must be a number in"):
        _Config(level=2.0)
    with pytest.raises(TypeError, match="leave it out, the name is written once"):
        @dataclass(frozen=True)
        class Other(StudyConfig):
            study = "plugin.other"
            n: int = param(1, "n")

        type("Mismatch", (Study,), {"name": "plugin.mismatch", "Config": Other})


def test_a_registered_study_is_seen_by_the_cli(registered, tmp_path, capsys):
    assert NAME not in studies._entry_points()  # registered here only, no pyproject edit
    assert cli.main(["list"]) == 0
    listed = {line.split()[0]: " ".join(line.split()[1:])
              for line in capsys.readouterr().out.splitlines()}
    assert listed[NAME] == "A study a test registers like a plugin."
    with pytest.raises(SystemExit) as done:
        cli.main(["run", NAME, "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--level LEVEL" in out and "the accuracy its one row reports" in out
    store = tmp_path / "s.sqlite"
    assert cli.main(["run", NAME, "--level", "0.75", "--store", str(store)]) == 0
    svg = tmp_path / "f.svg"
    assert cli.main(["figure", NAME, "--store", str(store), "--out", str(svg)]) == 0
    texts = " ".join(t.text or "" for t in ET.parse(svg).getroot().iter()
                     if t.tag.endswith("text"))
    assert NAME in texts and "the one row's accuracy" in texts
    # the figure data reads what its latency_ms and memory_bytes mean from the study
    m = with_metrics(Store(store).results())
    assert m["train_step_ms"].tolist() == [3.0] and m["train_memory_bytes"].tolist() == [1.0]
    assert m[["inference_ms", "trial_ms", "model_bytes"]].isna().all().all()


def test_a_registered_study_is_seen_by_the_dashboard(registered, tmp_path):
    from streamlit.testing.v1 import AppTest

    def texts(at) -> str:
        return "\n".join(str(e.value) for kind in ("info", "caption", "success")
                         for e in at.get(kind))

    path = tmp_path / "s.sqlite"
    Store(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWLAB_STORE", str(path))
        at = AppTest.from_file(MAIN, default_timeout=90).run()
        table = at.dataframe[0].value  # the empty store lists the quick studies ...
        assert table.loc[table["study"] == NAME, "quick run"].tolist() == ["about 3 s"]
        at.switch_page("app_pages/figures.py").run()  # ... and its page names it
        assert re.search(rf"Run (`[^`]+`,? (or )?)*`{re.escape(NAME)}` on the \*\*Run a study\*\* "
                         "page", texts(at))  # other key-figure studies may be named too
        at.switch_page("app_pages/run_study.py").run()
        at.selectbox(key="rs-study").set_value(NAME).run()
        assert not at.exception
        assert "quick run measured at about 3 s" in texts(at)
        level = at.number_input(key=f"rs-{NAME}-True-False-level")
        assert level.value == 0.25 and "the accuracy its one row reports" in level.help
        level.set_value(0.5)
        at.button[0].click().run()
        assert not at.exception
        assert Store(path).results()["accuracy"].tolist() == [0.5]
        at.switch_page("app_pages/figures.py").run()  # its key figure, drawn from the store
        assert not at.exception
        assert at.selectbox(key="fig-study").value == NAME
        (chart,) = at.get("vega_lite_chart")
        assert str(chart.proto.spec).count(NAME) >= 1


def test_every_registered_study_says_how_it_is_seen():
    pages = {p.stem for p in (ROOT / "app" / "app_pages").glob("*.py")}
    described = studies.all_studies()
    assert {s.name for s in described} == set(studies._entry_points())  # every one loads
    for s in described:
        assert s.Config.study == s.name, s.name
        assert s.latency_kind in (None, *LATENCY_KINDS), s.name
        assert s.memory_kind in (None, *MEMORY_KINDS), s.name
        assert s.figure is None or (callable(s.figure) and s.figure_title), s.name
        assert s.figure_models in ("one", "all"), s.name
        assert s.page is None or s.page in pages, (s.name, s.page)
        if s.page not in (None, "figures", "overview"):  # a page of its own draws its rows
            assert s.name in (ROOT / "app" / "app_pages" / f"{s.page}.py").read_text(), s.name
        assert s.quick_seconds is None or s.quick_seconds >= 0, s.name


def _declared() -> dict[str, str]:
    """The ``hwlab.studies`` entry points written in pyproject.toml (name -> target)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split(f'[project.entry-points."{studies.ENTRY_POINT_GROUP}"]', 1)[1]
    section = section.split("\n[", 1)[0]
    return dict(re.findall(r'^"([^"]+)"\s*=\s*"([^"]+)"', section, re.MULTILINE))


def test_entry_point_names_are_the_study_names():
    declared = _declared()
    assert declared and set(declared) == set(studies._entry_points())  # installed as written
    for name, target in declared.items():
        group = studies.ENTRY_POINT_GROUP
        assert importlib.metadata.EntryPoint(name, target, group).load().name == name


def test_the_loader_and_register_study_refuse_what_is_not_a_usable_study(monkeypatch, caplog):
    eps = {"plugin.alias": importlib.metadata.EntryPoint(
        "plugin.alias", f"{__name__}:DUMMY", studies.ENTRY_POINT_GROUP)}
    monkeypatch.setattr(studies, "_entry_points", lambda: eps)
    with caplog.at_level(logging.WARNING, logger="hwlab.studies"):
        assert studies.list_studies() == []
    assert f"holds the study named '{NAME}', not 'plugin.alias'" in caplog.text
    with pytest.raises(TypeError, match="latency_kind must be None or one of inference_ms"):
        type("Bad", (Study,), {"name": "plugin.bad", "latency_kind": "ms"})
    with pytest.raises(ValueError, match="study of register_study must be a Study instance"):
        register_study(_SelfDescribed)
    monkeypatch.setattr(studies, "_entry_points", lambda: {NAME: None})
    with pytest.raises(ValueError, match=f"must be a name no other study has, got '{NAME}'"):
        register_study(DUMMY)


def test_docs_leave_the_list_of_studies_to_the_registry():
    contract = (ROOT / "docs" / "CONTRACT.md").read_text()
    assert "hwlab list" in contract
    for target in _declared().values():
        assert target not in contract  # no hand-kept copy of the entry points
