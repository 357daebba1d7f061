"""A researcher's own model (residual add, F.relu, x.relu(), BatchNorm, no nn.Sequential) through
`hwlab run hwlab.zoo --model mod:factory [--weights FILE]`: trained with the zoo recipe, stored
like a zoo model, weights loaded strictly (torch.save and safetensors)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hwlab.models import resolve
from hwlab.store import Store

USER_MODULE = textwrap.dedent('''
    import torch.nn.functional as F
    from torch import nn


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return F.relu(x + self.bn(self.conv(x)))  # residual add, functional ReLU


    class TinyRes(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.stem = nn.Conv2d(in_shape[0], 8, 3, padding=1)
            self.block = Block(8)
            self.head = nn.Linear(8 * in_shape[1] * in_shape[2] // 4, num_classes)

        def forward(self, x):
            h = self.block(self.stem(x).relu())
            return self.head(F.max_pool2d(h, 2).flatten(1))


    def factory(in_shape=(1, 28, 28), num_classes=10):
        return TinyRes(in_shape, num_classes)
''')
HWLAB = [sys.executable, "-c", "import sys; from hwlab.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    (d / "usermods_hwlab_test.py").write_text(USER_MODULE)  # in the CWD, not installed
    return d


def _hwlab(workdir, *argv):
    env = {**os.environ, "HWLAB_HOME": str(workdir / "home"), "PYTHONPATH": ""}
    return subprocess.run([*HWLAB, *argv], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_user_model_trains_with_the_zoo_recipe_and_is_stored_like_a_zoo_model(workdir):
    store = workdir / "s.sqlite"
    # synthetic (4 classes, 1x8x8, 408 training images): the zoo recipe trains in seconds
    r = _hwlab(workdir, "run", "hwlab.zoo", "--model", "usermods_hwlab_test:factory",
               "--dataset", "synthetic", "--latency-repeats", "2", "--store", str(store))
    assert r.returncode == 0, r.stderr
    r2 = _hwlab(workdir, "run", "hwlab.zoo", "--model", "mlp", "--dataset", "synthetic",
                "--latency-repeats", "2", "--store", str(store))
    assert r2.returncode == 0, r2.stderr
    df = Store(store).results().set_index("model")
    user, zoo = df.loc["usermods_hwlab_test:factory"], df.loc["mlp"]
    for col in ("module", "method", "dataset", "variant", "dtype", "seed", "study"):
        assert user[col] == zoo[col], col  # the same row shape as a zoo model's
    assert user["key"] == "usermods_hwlab_test:factory|synthetic|s0"
    assert user["accuracy"] >= 0.6  # a real training run (chance is 0.25; measured 0.75)
    assert user["params"] == 8 * 9 + 8 + 8 * 8 * 9 + 16 + 8 * 16 * 4 + 4
    extra = json.loads(user["extra"])
    assert extra["recipe"]["epochs"] == 10 and extra["train_seconds"] > 0  # the default Recipe
    # the cache is keyed by the spec and the module's source: an edit trains a new entry
    cached = sorted(p.name for p in (workdir / "home" / "zoo").glob("usermods*.pt"))
    assert len(cached) == 1 and cached[0].startswith("usermods_hwlab_test_factory-synthetic-s0-")


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_user_weights_are_loaded_and_measured(workdir, fmt):
    sys.path.insert(0, str(workdir))
    try:
        with torch.random.fork_rng():
            torch.manual_seed(3)
            net = resolve("usermods_hwlab_test:factory", (1, 8, 8), 10)
    finally:
        sys.path.remove(str(workdir))
    path = workdir / f"w.{fmt}"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if fmt == "pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    store = workdir / f"w-{fmt}.sqlite"
    r = _hwlab(workdir, "run", "hwlab.zoo", "--model", "usermods_hwlab_test:factory",
               "--weights", str(path), "--dataset", "digits", "--latency-repeats", "1",
               "--store", str(store))
    assert r.returncode == 0, r.stderr
    row = Store(store).results().iloc[0]
    from hwlab.data import load
    from hwlab.train import evaluate

    assert row["accuracy"] == evaluate(net.eval(), load("digits", "test"))  # exactly those weights
    assert json.loads(row["extra"])["weights"] == str(path)


def test_wrong_weights_are_one_error_and_leave_the_store_alone(workdir):
    lenet = resolve("lenet5", (1, 8, 8), 10)
    bad = workdir / "lenet.pt"
    torch.save(lenet.state_dict(), bad)
    store = workdir / "bad.sqlite"
    Store(store)
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    r = _hwlab(workdir, "run", "hwlab.zoo", "--model", "usermods_hwlab_test:factory",
               "--weights", str(bad), "--dataset", "digits", "--store", str(store))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("hwlab: error: weights of resolve must be a state dict with "
                           "exactly the model's keys, got ") and "missing: ['block.bn.bias'" in line
    assert hashlib.sha256(store.read_bytes()).hexdigest() == digest
    assert Store(store).runs().empty  # the refused run was not left behind
    r = _hwlab(workdir, "run", "hwlab.zoo", "--model", "usermods_hwlab_test:nothere",
               "--store", str(store))
    assert r.returncode == 2 and "module usermods_hwlab_test has no attribute nothere" in r.stderr


def test_check_fits_names_a_model_data_mismatch():
    from hwlab.models import check_fits

    lenet = resolve("lenet5", (1, 28, 28), 10).train()
    check_fits(lenet, (1, 28, 28), 10, "campaign")
    assert lenet.training  # modes restored
    with pytest.raises(ValueError, match=r"model of campaign must be a model that accepts inputs "
                                         r"of shape \(N, 1, 8, 8\) \(the data's\), got 'Sequential "
                                         r"\(RuntimeError: mat1 and mat2 shapes"):
        check_fits(resolve("mlp", (1, 28, 28), 10), (1, 8, 8), 10, "campaign")
    with pytest.raises(ValueError, match=r"model of campaign must be a model with 4 outputs per "
                                         r"sample \(the data's classes\), got 'Sequential \(output "
                                         r"shape \(2, 10\) for 2 inputs\)'"):
        check_fits(lenet, (1, 28, 28), 4, "campaign")


def test_hwlab_models_entry_points_resolve_and_broken_ones_are_skipped(workdir, monkeypatch,
                                                                       caplog):
    import importlib.metadata

    from hwlab.models import _spec, model_names

    monkeypatch.syspath_prepend(str(workdir))
    group = _spec.ENTRY_POINT_GROUP
    eps = {n: importlib.metadata.EntryPoint(n, v, group) for n, v in [
        ("tinyres", "usermods_hwlab_test:factory"), ("gone", "no_such_pkg_hwlab:f"),
        ("notcallable", "usermods_hwlab_test:__name__")]}
    monkeypatch.setattr(_spec, "_entry_points", lambda: eps)
    with caplog.at_level("WARNING", logger="hwlab.models._spec"):
        names = model_names()
    assert "tinyres" in names and "lenet5" in names
    assert "gone" not in names and "notcallable" not in names
    assert "skipping model entry point gone: ModuleNotFoundError" in caplog.text
    assert "skipping model entry point notcallable: TypeError" in caplog.text
    net = resolve("tinyres", (1, 8, 8), 10)
    assert type(net).__name__ == "TinyRes" and net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"spec of resolve must be a model spec: .*got \"gone "
                                         r"\(entry point failed to load: ModuleNotFoundError"):
        resolve("gone", (1, 8, 8), 10)
