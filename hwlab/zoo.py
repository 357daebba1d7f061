"""Trained weights, trained once: ``pretrained(model, dataset, seed)`` and ``entry(...)``.

An entry is trained with ``hwlab.train.fit`` and a fixed :class:`Recipe` per model, then cached
under ``$HWLAB_HOME/zoo/<model>-<dataset>-s<seed>-<hash>.pt`` (a ``state_dict`` saved with
``torch.save``) plus a ``.json`` with the test / val accuracy, training seconds and the SHA-256 of
the weights file. The hash covers (model, dataset, seed, recipe, recipe version, zoo format), so a
changed recipe gives a new entry. A ``filelock.FileLock`` makes a second process wait while the
first trains, then load. Weights are loaded with ``torch.load(weights_only=True)``.

The model is any spec of :func:`hwlab.models.resolve` (a zoo name, ``module:callable`` or a
``hwlab.models`` entry point). A model outside the zoo trains with the default :class:`Recipe`;
its cache key also covers the SHA-256 of the module file that defines it, so an edited model is
trained again. With ``weights=FILE`` nothing is trained: the state dict is loaded (strictly) and
the test accuracy measured.

A cached file that does not verify (unreadable JSON, a SHA-256 mismatch, a state dict that does not
fit the model) raises an error naming the file; it is never retrained over silently, since a
corrupt checkpoint in a reliability lab is a finding to look at. Delete the two files to retrain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from torch import nn

from hwlab.data import check_dataset, load
from hwlab.errors import check, check_int, fail
from hwlab.models import check_spec, list_models, resolve, spec_digest
from hwlab.models._spec import _load_weights
from hwlab.train import TrainConfig, _check_config, evaluate, fit

__all__ = ["Recipe", "ZooEntry", "entry", "pretrained", "recipe_for", "zoo_dir"]

log = logging.getLogger(__name__)
ZOO_FORMAT = 1  # bump when the file layout or the training procedure of every entry changes


@dataclass(frozen=True)
class Recipe:
    """A fixed training recipe: a ``TrainConfig`` without the device, plus a version."""

    epochs: int = 10  # short schedules: every zoo entry trains on a CPU in about a minute
    batch_size: int = 64  # small batches: more steps per epoch on 1k-5k image datasets
    lr: float = 1e-3  # Adam's default step size (Kingma & Ba 2015)
    optimizer: str = "adam"  # needs no per-model tuning of the step size
    weight_decay: float = 0.0  # off: the short schedules do not overfit much
    schedule: str = "cosine"  # cosine decay per step (Loshchilov & Hutter 2017)
    seed: int = 0  # replaced by the ``seed`` argument of entry / pretrained
    momentum: float = 0.9  # SGD only
    version: int = 1  # bump when a recipe's numbers change, so old cache entries are not reused

    def train_config(self, device: str = "auto") -> TrainConfig:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)
                  if f.name != "device"}
        return TrainConfig(**fields, device=device)


# One recipe per model, chosen on mnist5k (lenet5: >= 95 % test accuracy in about 10 s) ...
_RECIPES = {
    "mlp": Recipe(epochs=15, lr=1e-3),
    "lenet5": Recipe(epochs=8, lr=3e-3),
    "alexnet-s": Recipe(epochs=10, lr=2e-3),
    "vgg-s": Recipe(epochs=8, lr=1e-3),
    "resnet20": Recipe(epochs=8, lr=2e-3, weight_decay=1e-4),
    "resnet32": Recipe(epochs=8, lr=2e-3, weight_decay=1e-4),
    "vit-tiny": Recipe(epochs=15, lr=1e-3, optimizer="adamw", weight_decay=0.05),
}
# ... and where a smaller dataset needs more steps (digits has 23 batches an epoch, mnist5k 63).
_OVERRIDES = {
    ("lenet5", "digits"): {"epochs": 20},  # 8 epochs: 91.1 %, 20 epochs: 96.6 % test accuracy
    ("alexnet-s", "digits"): {"epochs": 20},
}


def recipe_for(model_name: str, dataset: str) -> Recipe:
    """The fixed recipe for ``model_name``, with more epochs on small datasets where needed.

    A model spec outside the zoo (``module:callable``, an entry point) gets the default
    :class:`Recipe` (10 epochs of Adam at 1e-3, cosine decay, batch 64).
    """
    check(isinstance(dataset, str) and dataset != "", "dataset", "recipe_for",
          "a dataset name", dataset)
    if model_name not in _RECIPES:
        check_spec(model_name, "model_name", "recipe_for")
        return Recipe()
    return dataclasses.replace(_RECIPES[model_name], **_OVERRIDES.get((model_name, dataset), {}))


@dataclass(frozen=True)
class ZooEntry:
    """A loaded zoo entry. ``model`` is on the CPU in eval mode."""

    model: nn.Module
    test_accuracy: float
    val_accuracy: float
    seconds: float  # training time when the entry was made
    path: Path  # the weights file
    recipe: Recipe
    key: str  # hash of (model, dataset, seed, recipe, versions)
    meta: dict
    # recipe is None for an entry made from a weights file (nothing trained)


def zoo_dir() -> Path:
    """``$HWLAB_HOME/zoo`` (``HWLAB_HOME`` read at call time; default ``./hwlab-runs``)."""
    return Path(os.environ.get("HWLAB_HOME") or "hwlab-runs") / "zoo"


def entry(model: str, dataset: str, seed: int = 0, recipe: Recipe | None = None,
          progress: bool = False, weights: str | os.PathLike | None = None) -> ZooEntry:
    """Train (once, under a file lock) or load the zoo entry for (model, dataset, seed, recipe).

    ``model`` is any model spec (see :func:`hwlab.models.resolve`). With ``weights`` (a state
    dict file) nothing is trained: the weights are loaded strictly and measured on the test
    split; ``recipe`` must then be None.
    """
    check_spec(model, "model", "entry")
    seed = check_int(seed, "seed", "entry", 0)
    check_dataset(dataset, "dataset", "entry")
    if weights is not None:
        check(recipe is None, "recipe", "entry", "None when weights are given", recipe)
        ok = isinstance(weights, (str, os.PathLike)) and Path(weights).expanduser().is_file()
        check(ok, "weights", "entry", "an existing state dict file or None", weights)
        return _weights_entry(model, dataset, seed, weights)
    if recipe is None:
        recipe = recipe_for(model, dataset)
    check(isinstance(recipe, Recipe), "recipe", "entry", "a Recipe or None", type(recipe).__name__)
    recipe = dataclasses.replace(recipe, seed=seed)
    _check_config(recipe.train_config(), "entry")  # bad numbers fail before any training
    return _entry(model, dataset, seed, recipe, progress)


def pretrained(model: str, dataset: str, seed: int = 0, recipe: Recipe | None = None,
               progress: bool = False, weights: str | os.PathLike | None = None) -> nn.Module:
    """The trained model of ``entry(...)``: on the CPU, in eval mode, loaded safely."""
    return entry(model, dataset, seed=seed, recipe=recipe, progress=progress,
                 weights=weights).model


def _weights_entry(model: str, dataset: str, seed: int, weights) -> ZooEntry:
    """A user's state dict for ``model``: loaded strictly, measured, not cached."""
    test, val = load(dataset, "test", seed=seed), load(dataset, "val", seed=seed)
    path = Path(weights).expanduser()
    net = _load_weights(resolve(model, in_shape=test.in_shape, num_classes=test.num_classes),
                        path, "entry")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    test_acc, val_acc = evaluate(net, test), evaluate(net, val)
    info = {"model": model, "dataset": dataset, "seed": seed, "weights": str(path),
            "sha256": digest, "in_shape": list(test.in_shape), "num_classes": test.num_classes,
            "test_accuracy": test_acc, "val_accuracy": val_acc}
    return ZooEntry(net.eval(), test_acc, val_acc, 0.0, path, None, digest[:16], info)


def _key(model: str, dataset: str, seed: int, recipe: Recipe) -> str:
    fields = {"model": model, "dataset": dataset, "seed": seed, "zoo": ZOO_FORMAT,
              "recipe": dataclasses.asdict(recipe)}
    if model not in list_models():  # a user's model: its definition is part of the key
        fields["spec"] = spec_digest(model)
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _paths(model: str, dataset: str, seed: int, key: str) -> tuple[Path, Path]:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset)[-40:]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[-60:]
    stem = zoo_dir() / f"{name}-{safe}-s{seed}-{key}"
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


def _entry(model, dataset, seed, recipe, progress) -> ZooEntry:
    key = _key(model, dataset, seed, recipe)
    pt, meta = _paths(model, dataset, seed, key)
    if not meta.exists():  # the .json is written last: its presence marks a finished entry
        pt.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(pt) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("zoo entry %s is being trained by another process; waiting", pt.name)
            lock.acquire()
        try:
            if not meta.exists():  # nobody finished it while we waited for the lock
                _train(model, dataset, seed, recipe, key, pt, meta, progress)
            else:
                log.info("zoo entry %s was trained by another process; loading it", pt.name)
        finally:
            lock.release()
    return _load_entry(model, recipe, key, pt, meta)


def _train(model, dataset, seed, recipe, key, pt, meta, progress) -> None:
    train, val, test = (load(dataset, s, seed=seed) for s in ("train", "val", "test"))
    log.info("training zoo entry %s (%s)", pt.name, recipe)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = resolve(model, in_shape=train.in_shape, num_classes=train.num_classes)
    hist = fit(net, train, recipe.train_config(), val=val, progress=progress)
    test_acc = evaluate(net, test)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    tmp = pt.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, pt)  # atomic: a reader never sees half a file
    info = {"model": model, "dataset": dataset, "seed": seed, "key": key, "zoo_format": ZOO_FORMAT,
            "recipe": dataclasses.asdict(recipe), "in_shape": list(train.in_shape),
            "num_classes": train.num_classes, "classes": list(train.classes),
            "test_accuracy": test_acc, "val_accuracy": hist.val_accuracy[-1],
            "seconds": hist.seconds, "epochs_run": len(hist.losses),
            "final_loss": hist.losses[-1], "device": str(next(net.parameters()).device),
            "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()),
            "sha256": hashlib.sha256(pt.read_bytes()).hexdigest()}
    tmp = meta.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, meta)
    log.info("zoo entry %s: test accuracy %.4f in %.1f s", pt.name, test_acc, hist.seconds)


def _corrupt(path: Path, reason: str):
    return fail("file", "zoo.entry", "a valid hwlab zoo file (delete it and its .pt/.json twin "
                "to retrain)", f"{path} ({reason})")


def _load_entry(model, recipe, key, pt, meta) -> ZooEntry:
    try:
        info = json.loads(meta.read_text())
        in_shape, num_classes, digest = tuple(info["in_shape"]), info["num_classes"], info["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _corrupt(meta, f"unreadable metadata: {exc}") from None
    try:
        raw = pt.read_bytes()
    except OSError as exc:
        raise _corrupt(pt, f"unreadable: {exc}") from None
    if hashlib.sha256(raw).hexdigest() != digest:
        raise _corrupt(pt, "SHA-256 does not match the one recorded at training time")
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
        net = resolve(model, in_shape=in_shape, num_classes=num_classes)
        net.load_state_dict(state)
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, EOFError, OSError) as exc:
        raise _corrupt(pt, f"{type(exc).__name__}: {exc}") from None
    return ZooEntry(net.eval(), info["test_accuracy"], info["val_accuracy"], info["seconds"], pt,
                    recipe, key, info)


# The language model's zoo entry (char-gpt on pydoc or text:FILE): hwlab._zoo_lm.
from hwlab._zoo_lm import LMEntry, LMRecipe, lm_entry, lm_loss  # noqa: E402

__all__ += ["LMEntry", "LMRecipe", "lm_entry", "lm_loss"]
