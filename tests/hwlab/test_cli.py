"""hwlab.cli: list, run (flags from Config fields), results, dashboard command, one-line errors."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pandas as pd
import pytest

from hwlab import cli, studies
from hwlab.store import Store

_MODULE = '''
from dataclasses import dataclass
from hwlab.studies import Study, run_items

@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("mlp",)  # one small model
    dataset: str = "digits"  # fast
    seed: int = 0  # reproducible
    fault_rates: tuple[float, ...] = (1e-6, 1e-5)  # two points
    trials: int = 2  # small
    clip: bool = False  # off

class Demo(Study):
    name, module, description, Config = "demo.cli", "demo", "A CLI test study.", Config
    quick = {"trials": 1}

    def run(self, config, store, progress=None, executor=None):
        with self.open_run(store, config) as run_id:
            items = {f"{m}|{r}|{t}": {"model": m, "fault_rate": r, "trial": t,
                                      "seed": config.seed, "accuracy": 0.5 if config.clip else 0.25}
                     for m in config.models for r in config.fault_rates
                     for t in range(config.trials)}
            run_items(store, run_id, items, dict, executor, progress,
                      defaults={"module": "demo", "dataset": config.dataset})
        return run_id

DEMO = Demo()
'''


@pytest.fixture
def registry(tmp_path, monkeypatch):
    (tmp_path / "fake_hwlab_cli_mod.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    group = studies.ENTRY_POINT_GROUP
    eps = {n: importlib.metadata.EntryPoint(n, v, group) for n, v in [
        ("demo.cli", "fake_hwlab_cli_mod:DEMO"), ("demo.broken", "fake_hwlab_nothere:X")]}
    monkeypatch.setattr(studies, "_entry_points", lambda: eps)
    return tmp_path


def test_list_shows_loadable_studies(registry, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["demo.cli  A CLI test study."]


def test_run_then_results(registry, capsys):
    store = str(registry / "s.sqlite")
    argv = ["run", "demo.cli", "--model", "lenet5", "--fault-rates", "1e-7,1e-3,0.5",
            "--trials", "2", "--seed", "4", "--clip", "--store", store]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "6 result rows in" in out.out and "lenet5" in out.out
    df = Store(store).results()
    assert len(df) == 6 and set(df["model"]) == {"lenet5"} and set(df["seed"]) == {4}
    assert sorted(set(df["fault_rate"])) == [1e-7, 1e-3, 0.5] and set(df["accuracy"]) == {0.5}
    assert cli.main(argv) == 0  # resumed: same run, nothing new
    assert len(Store(store).results()) == 6
    assert cli.main(["run", "demo.cli", "--quick", "--no-clip", "--store", store,
                     "--executor", "serial"]) == 0
    capsys.readouterr()
    assert cli.main(["results", "--store", store, "--study", "demo.cli"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 + 8 and "fault_rate" in out and "extra" not in out
    assert cli.main(["results", "--store", store, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("run_id,key,module,")
    assert cli.main(["results", "--store", store, "--format", "parquet",
                     "--out", str(registry / "r")]) == 0
    assert len(pd.read_parquet(registry / "r.parquet")) == 8
    assert cli.main(["results", "--store", store, "--out", str(registry / "r.csv")]) == 0
    assert len(pd.read_csv(registry / "r.csv")) == 8
    assert cli.main(["results", "--store", str(registry / "empty.sqlite")]) == 0
    assert "no results in" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "match"), [
    (["run", "nope"], ("hwlab: error: name of get_study must be one of demo.broken, demo.cli, "
                      "got 'nope'")),
    (["run", "demo.broken"], "hwlab: error: name of get_study must be a study that loads"),
    (["run", "demo.cli", "--trails", "3"], ("hwlab run demo.cli: error: unrecognized arguments: "
                                           "--trails 3")),
    (["run", "demo.cli", "--trials", "many"], ("hwlab: error: trials of study demo.cli must be "
                                              "an integer, got 'many'")),
    (["run", "demo.cli", "--executor", "gpu:1"], "hwlab: error: spec of get_executor must be"),
    (["run"], "hwlab run: error: the following arguments are required: study"),
    (["fly"], "hwlab: error: argument command: invalid choice: 'fly'"),
    (["results", "--format", "xlsx"], "hwlab results: error: argument --format: invalid choice"),
    (["results", "--format", "parquet"], "hwlab results: error: --format parquet needs --out"),
    (["dashboard", "--port", "0"], "hwlab: error: --port of hwlab dashboard must be an integer"),
])
def test_bad_input_is_one_line_and_status_2(registry, capsys, argv, match, tmp_path,
                                            monkeypatch):
    monkeypatch.setenv("HWLAB_HOME", str(tmp_path / "home"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(match), err


def test_foreign_store_is_refused(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a store\n" * 20)
    assert cli.main(["results", "--store", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("hwlab: error: path of Store must be an hwlab store")
    assert bad.read_text() == "not a store\n" * 20


def test_dashboard_runs_streamlit_on_localhost(tmp_path, monkeypatch):
    seen = {}

    def fake_serve(cmd, env):
        seen.update(cmd=cmd, env=env)
        return 0

    monkeypatch.setattr(cli, "_serve", fake_serve)  # the process-group runner: tested below
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (tmp_path / "app" / "main.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    store = tmp_path / "d.sqlite"
    assert cli.main(["dashboard", "--port", "8765", "--store", str(store)]) == 0
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4] == str(tmp_path / "app" / "main.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert seen["env"]["HWLAB_STORE"] == str(store.resolve())


def test_console_script_help_and_error_exit_codes():
    hwlab = [sys.executable, "-c", "import sys; from hwlab.cli import main; sys.exit(main())"]
    ok = subprocess.run([*hwlab, "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "dashboard" in ok.stdout
    bad = subprocess.run([*hwlab, "run", "no.such.study"], check=False, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith(
        "hwlab: error: name of get_study must be one of")
