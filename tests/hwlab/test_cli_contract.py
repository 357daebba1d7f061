"""hwlab.cli: flags from declared constraints, negative numbers reach the validator, damaged
stores, and `hwlab dashboard` stops its server when hwlab is killed."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwlab import cli, studies
from hwlab.store import Store

_MODULE = '''
from dataclasses import dataclass
from typing import ClassVar
from hwlab.studies import Study, StudyConfig, param, run_items

@dataclass(frozen=True)
class Config(StudyConfig):
    study: ClassVar[str] = "demo.contract"
    rates: tuple[float, ...] = param((1e-6,), "per-bit rates", range=(0, 1),
                                     inclusive=(False, True), nonempty=True)
    fault: str = param("bitflip", "fault model", choices=("bitflip", "stuck0"))
    trials: int = param(2, "maps per rate", range=(1, None))

class Demo(Study):
    name, module, description, Config = "demo.contract", "demo", "Contract study.", Config

    def run(self, config, store, progress=None, executor=None):
        with self.open_run(store, config) as run_id:
            items = {f"{r}|{t}": {"fault_rate": r, "trial": t} for r in config.rates
                     for t in range(config.trials)}
            run_items(store, run_id, items, dict, executor, progress)
        return run_id

DEMO = Demo()
'''


@pytest.fixture
def registry(tmp_path, monkeypatch):
    (tmp_path / "fake_hwlab_contract_mod.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = {"demo.contract": importlib.metadata.EntryPoint(
        "demo.contract", "fake_hwlab_contract_mod:DEMO", studies.ENTRY_POINT_GROUP)}
    monkeypatch.setattr(studies, "_entry_points", lambda: eps)
    return tmp_path


def test_help_lists_declared_constraints(registry, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "demo.contract", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--fault {bitflip,stuck0} fault model (default: bitflip; one of bitflip, stuck0)" in out
    assert "per-bit rates (default: 1e-06; a non-empty tuple of numbers in (0, 1])" in out
    assert "maps per rate (default: 2; an integer >= 1)" in out


@pytest.mark.parametrize(("argv", "match"), [
    (["--rates", "-1e-4"], (r"rates of study demo.contract must be a non-empty tuple of numbers "
                           r"in \(0, 1\], got \(-0.0001,\)")),
    (["--rates", "-1e-4,1e-5"], r"rates of study demo.contract must be .*got \(-0.0001, 1e-05\)"),
    (["--trials", "-3"], r"trials of study demo.contract must be an integer >= 1, got -3"),
    (["--rates", "nan"], (r"rates of study demo.contract must be a non-empty tuple of numbers in "
                         r"\(0, 1\], got \(nan,\)")),
    (["--fault", "stuck2"], (r"fault of study demo.contract must be one of bitflip, stuck0, got "
                            r"'stuck2'")),
    (["--rates", ""], r"rates of study demo.contract must be a non-empty tuple"),
])
def test_bad_values_reach_the_validator(registry, capsys, argv, match):
    store = registry / "s.sqlite"
    assert cli.main(["run", "demo.contract", "--store", str(store), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    import re

    assert re.search(match, err), err
    assert not store.exists()  # refused before the store was opened


def test_damaged_store_is_exit_2_naming_the_path(tmp_path, capsys):
    good = tmp_path / "good.sqlite"
    s = Store(good)
    run = s.open_run("t", {})
    s.add_results(run, [{"key": f"k{i}", "extra": {"pad": "x" * 300}} for i in range(300)])
    import sqlite3

    with sqlite3.connect(good) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    bad = tmp_path / "t.sqlite"
    bad.write_bytes(good.read_bytes()[:5000])
    r = subprocess.run([sys.executable, "-c", ("import sys; from hwlab.cli import main; "
                        "sys.exit(main())"), "results", "--store", str(bad)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().startswith(f"hwlab: error: path of Store must be an undamaged hwlab "
                                       f"store (restore it from a backup or use another --store), "
                                       f"got '{bad}")


def _children(pid: int) -> list[int]:
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(p.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_hwlab_dashboard_stops_the_server_within_5_s(tmp_path, sig):
    port = _free_port()
    env = {**os.environ, "HWLAB_HOME": str(tmp_path)}
    hwlab = subprocess.Popen([sys.executable, "-c", ("import sys; from hwlab.cli import main; "
                              "sys.exit(main())"), "dashboard", "--port", str(port), "--store",
                              str(tmp_path / "d.sqlite")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        server = []
        while time.monotonic() < deadline and not server:
            server = _children(hwlab.pid)
            time.sleep(0.1)
        assert server, "no server process started"
        while time.monotonic() < deadline:  # wait until streamlit serves (handlers installed)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("streamlit did not start listening")
        t0 = time.monotonic()
        hwlab.send_signal(sig)
        while time.monotonic() - t0 < 10 and any(_alive(p) for p in server):
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert not any(_alive(p) for p in server), "server still running after 10 s"
        assert took < 5.0, took
        hwlab.wait(10)
        if sig == signal.SIGTERM:
            assert hwlab.returncode == 128 + signal.SIGTERM
    finally:
        if hwlab.poll() is None:
            hwlab.kill()
        for p in _children(hwlab.pid):
            os.kill(p, signal.SIGKILL)
