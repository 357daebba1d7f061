"""hwlab.zoo: trained once, cached, safely loaded, locked across processes, corruption caught."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from filelock import FileLock

from hwlab import zoo
from hwlab.data import load
from hwlab.train import evaluate

TINY = zoo.Recipe(epochs=2, batch_size=64, lr=1e-2)  # mlp on synthetic: well under a second


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HWLAB_HOME", str(tmp_path))
    return tmp_path


def test_lenet5_mnist5k_reaches_95_percent():
    e = zoo.entry("lenet5", "mnist5k")  # trains once per test run (shared HWLAB_HOME)
    assert e.test_accuracy >= 0.95
    assert e.path.name.startswith("lenet5-mnist5k-s0-") and e.path.suffix == ".pt"
    assert not e.model.training and next(e.model.parameters()).device.type == "cpu"
    # the recorded accuracy is the loaded model's accuracy on the held-out test split
    assert evaluate(e.model, load("mnist5k", "test")) == pytest.approx(e.test_accuracy, abs=1e-6)
    again = zoo.pretrained("lenet5", "mnist5k")
    assert all(torch.equal(a, b) for a, b in zip(e.model.state_dict().values(),
                                                 again.state_dict().values()))


def test_cache_key_home_and_reuse(home):
    t0 = time.perf_counter()
    a = zoo.entry("mlp", "synthetic", recipe=TINY)
    assert a.path.parent == home / "zoo" and a.path.exists()
    meta = json.loads(a.path.with_suffix(".json").read_text())
    assert meta["recipe"]["epochs"] == 2 and meta["test_accuracy"] == a.test_accuracy
    assert 0.0 < a.seconds < time.perf_counter() - t0
    mtime = a.path.stat().st_mtime_ns
    b = zoo.entry("mlp", "synthetic", recipe=TINY)
    assert b.key == a.key and b.path.stat().st_mtime_ns == mtime  # loaded, not retrained
    c = zoo.entry("mlp", "synthetic", recipe=TINY, seed=1)
    d = zoo.entry("mlp", "synthetic", recipe=zoo.Recipe(epochs=2, batch_size=64, lr=5e-3))
    assert len({a.key, c.key, d.key}) == 3 and c.path.name.startswith("mlp-synthetic-s1-")
    assert a.test_accuracy > 0.9  # learnable toy data


def test_second_process_waits_for_the_lock_then_loads(home):
    key = zoo._key("mlp", "synthetic", 0, TINY)
    pt, meta = zoo._paths("mlp", "synthetic", 0, key)
    pt.parent.mkdir(parents=True)
    log = home / "child.log"
    code = ("import logging, sys, torch; torch.set_num_threads(1)\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
            "from hwlab import zoo\n"
            "e = zoo.entry('mlp', 'synthetic', recipe=zoo.Recipe(epochs=2, batch_size=64, lr=1e-2))\n"
            "print(e.key, e.test_accuracy)\n")
    with FileLock(str(pt) + ".lock"):  # this process plays the trainer
        with open(log, "w") as err:
            child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                     stderr=err, text=True)
        deadline = time.monotonic() + 60
        while "waiting" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "is being trained by another process; waiting" in log.read_text()
        assert child.poll() is None and not meta.exists()  # the child is blocked on the lock
        zoo._train("mlp", "synthetic", 0, TINY, key, pt, meta, False)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, log.read_text()
    assert "was trained by another process; loading it" in log.read_text()
    assert "training zoo entry" not in log.read_text()
    mine = json.loads(meta.read_text())
    assert out.split() == [key, repr(mine["test_accuracy"])]


def test_corrupt_files_raise_naming_the_path(home):
    a = zoo.entry("mlp", "synthetic", recipe=TINY)
    raw = bytearray(a.path.read_bytes())
    raw[-100] ^= 0x01  # one flipped bit in the weights file
    a.path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"file of zoo.entry must be a valid hwlab zoo file.*"
                       + str(a.path.name) + r".*SHA-256 does not match"):
        zoo.entry("mlp", "synthetic", recipe=TINY)
    assert a.path.read_bytes() == bytes(raw)  # left untouched, never retrained over
    meta = a.path.with_suffix(".json")
    meta.write_text("{not json")
    with pytest.raises(ValueError, match=r"\.json \(unreadable metadata"):
        zoo.pretrained("mlp", "synthetic", recipe=TINY)


def test_recipes_and_errors(home):
    assert zoo.recipe_for("lenet5", "mnist5k").epochs == 8
    assert zoo.recipe_for("lenet5", "digits").epochs == 20  # fewer batches per epoch: more epochs
    cfg = zoo.recipe_for("vit-tiny", "digits").train_config()
    assert cfg.optimizer == "adamw" and cfg.device == "auto"
    # any model spec is accepted now (#12): unknown names are still refused, naming the kinds
    with pytest.raises(ValueError, match=r"model_name of recipe_for must be a model spec: a zoo "
                       r"name \(alexnet-s, .*'module.path:callable' or a hwlab.models entry "
                       r"point, got 'resnet99'"):
        zoo.recipe_for("resnet99", "digits")
    with pytest.raises(ValueError, match=r"model of entry must be a model spec: a zoo name "
                       r"\(alexnet-s.*got 'resnet99'"):
        zoo.entry("resnet99", "digits")
    assert zoo.recipe_for("hwlab.models:create_model", "digits") == zoo.Recipe()
    with pytest.raises(ValueError, match=r"lr of entry must be a finite number > 0, got -1"):
        zoo.entry("mlp", "digits", recipe=zoo.Recipe(lr=-1))
    with pytest.raises(ValueError, match=r"dataset of entry must be one of digits, mnist5k"):
        zoo.entry("mlp", "imagenet")
    assert not (home / "zoo").exists() or not list((home / "zoo").glob("*.pt"))
