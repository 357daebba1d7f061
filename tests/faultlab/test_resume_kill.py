"""A campaign killed with SIGKILL mid-run and started again ends with the uninterrupted table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import torch

import faultlab as fl
from hwlab.store import Store

CHILD = """
import sys, time, torch
torch.set_num_threads(1)
import faultlab as fl
from hwlab.data import load
from hwlab.models import create_model
from hwlab.store import Store
state, path, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=(32,))
model.load_state_dict(torch.load(state, weights_only=True))
progress = (lambda done, total, key="": time.sleep(0.15)) if slow else None
fl.campaign(model.eval(), load("digits", "test"), [fl.BitFlip(rate=1e-3), fl.StuckAt(0, rate=3e-3)],
            trials=10, seed=5, store=Store(path), progress=progress)
"""


def _table(df):
    extra = df["extra"].map(json.loads).map(lambda e: e["n_faults"])
    cols = ["key", "fault_model", "fault_rate", "trial", "seed", "accuracy"]
    return df.assign(n_faults=extra)[[*cols, "n_faults"]].sort_values("key").reset_index(drop=True)


def test_sigkill_then_resume_gives_the_uninterrupted_table(digits_mlp, digits, tmp_path):
    state = tmp_path / "w.pt"
    torch.save(digits_mlp.state_dict(), state)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "killed.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(script), str(state), str(path), "1"], env=env)
    try:
        deadline = time.monotonic() + 120
        n = 0
        while time.monotonic() < deadline and child.poll() is None:
            if path.exists():
                try:
                    n = len(Store(path).results())
                except Exception:  # noqa: BLE001 - the child may be creating the schema
                    n = 0
            if n >= 6:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the child finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    killed_at = len(Store(path).results())
    assert 6 <= killed_at < 21
    assert Store(path).runs()["status"].iloc[0] == "running"  # no chance to mark it
    done = subprocess.run([sys.executable, str(script), str(state), str(path), "0"], env=env,
                          timeout=300, check=False)
    assert done.returncode == 0
    store = Store(path)
    resumed = store.results()
    assert len(resumed) == 21 and resumed["key"].is_unique
    assert list(store.runs()["status"]) == ["done"] and len(store.runs()) == 1
    straight = fl.campaign(digits_mlp, digits[1], [fl.BitFlip(rate=1e-3), fl.StuckAt(0, rate=3e-3)],
                           trials=10, seed=5)
    pd.testing.assert_frame_equal(_table(resumed), _table(straight))
