"""``load(name, split, seed)``: one entry point for built-in and file datasets."""

from __future__ import annotations

import numpy as np
import torch

from hwlab.data import _builtin, _files, _images
from hwlab.data._split import SPLITS, Split, _split_indices
from hwlab.data._text import TextSplit, load_text
from hwlab.errors import (
    check,
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    fail,
    is_int,
)

DATASETS = ("digits", "mnist5k", "synthetic", "pydoc")
FILE_KINDS = ("mnist-idx", "cifar10", "npz", "imagefolder", "text")
FRACTIONS = (0.8, 0.1, 0.1)  # train / val / test of a dataset without its own test set
VAL_FRACTION = 0.1  # val share of the train part when the dataset ships its own test set
_ALLOWED = ("one of digits, mnist5k, synthetic, 'mnist-idx:DIR', 'cifar10:DIR', 'npz:FILE', "
            "'imagefolder:DIR', pydoc, 'text:FILE'")


def load(name: str, split: str = "train", seed: int = 0, **kw) -> Split | TextSplit:
    """Load one split of a dataset as float32 images in [0, 1] and int64 labels.

    Names: ``digits`` (1x8x8, 1,797), ``mnist5k`` (1x28x28, 4,000/500/500), ``synthetic`` (kw:
    ``shape=(1, 8, 8)``, ``n=512``, ``num_classes=4``, ``noise=0.5``), ``mnist-idx:DIR``,
    ``cifar10:DIR`` (binary batches), ``npz:FILE``, ``imagefolder:DIR`` (class subfolders of
    images; options ``?size=HxW&mode=L|RGB`` or kw ``size``, ``mode``). Text: ``pydoc`` and
    ``text:FILE`` (UTF-8) give a character-level :class:`~hwlab.data.TextSplit` (kw ``block=64``,
    contiguous 90/5/5 % cut, ``seed`` unused; see :mod:`hwlab.data._text`). Image splits are stratified, disjoint and
    deterministic for ``seed``: 80/10/10 % per class, or, for files with their own test set, that
    test set plus a 90/10 % train/val cut of their train part.
    """
    check(isinstance(name, str), "name", "load", _ALLOWED, name)
    check_choice(split, SPLITS, "split", "load")
    seed = check_int(seed, "seed", "load", 0)
    if name == "pydoc" or name.startswith("text:"):
        check(set(kw) <= {"block"}, "keyword arguments", "load", "only block for text",
              sorted(kw))
        check(name == "pydoc" or len(name) > 5, "name", "load", _ALLOWED, name)
        return load_text(name, split, **kw)
    raw = _raw(name, kw)
    if len(raw.y) == 0:
        raise fail("name", "load", "a dataset with at least one sample", f"{name} (empty)")
    return _load(raw, name, split, seed)


def _raw(name: str, kw: dict) -> _builtin.Raw:
    kind, sep, arg = name.partition(":")
    if sep:
        check(kind in FILE_KINDS and arg != "", "name", "load", _ALLOWED, name)
        if kind == "imagefolder":
            return _images.imagefolder(arg, name, kw)
        check(not kw, "keyword arguments", "load", f"empty for {kind}", kw)
        return {"mnist-idx": _files.mnist_idx, "cifar10": _files.cifar10, "npz": _files.npz}[
            kind](arg, name)
    check(name in DATASETS, "name", "load", _ALLOWED, name)
    if name == "synthetic":
        return _builtin.synthetic(*_synthetic_args(**kw))
    check(not kw, "keyword arguments", "load", f"empty for {name}", kw)
    return _builtin.digits() if name == "digits" else _builtin.mnist5k()


def check_dataset(name, param: str = "dataset", caller: str = "load") -> str:
    """``name`` if it is a dataset spec whose file or folder exists (nothing is parsed), else an
    error in the template for ``param`` of ``caller``. Cheap: for config validation."""
    check(isinstance(name, str) and name != "", param, caller, _ALLOWED, name)
    kind, sep, arg = name.partition(":")
    if not sep:
        check(name in DATASETS, param, caller, _ALLOWED, name)
        return name
    check(kind in FILE_KINDS and arg != "", param, caller, _ALLOWED, name)
    from pathlib import Path

    path = Path(arg.partition("?")[0] if kind == "imagefolder" else arg).expanduser()
    is_file = kind in ("npz", "text")
    ok = path.is_file() if is_file else path.is_dir()
    check(ok, param, caller, f"'{kind}:{'FILE' if is_file else 'DIR'}' naming an existing "
          f"{'file' if is_file else 'folder'}", name)
    return name


def _synthetic_args(shape=(1, 8, 8), n=512, num_classes=4, noise=0.5):
    ok = isinstance(shape, (tuple, list)) and len(shape) == 3
    ok = ok and all(is_int(s, 1) for s in shape)
    check(ok, "shape", "load", "a (C, H, W) tuple of positive integers", shape)
    num_classes = check_positive_int(num_classes, "num_classes", "load", minimum=2)
    n = check_positive_int(n, "n", "load", minimum=num_classes)
    noise = check_number(noise, "noise", "load", 0)
    return tuple(map(int, shape)), n, num_classes, noise


def _load(raw: _builtin.Raw, name: str, split: str, seed: int) -> Split:
    if raw.test is None:
        parts = _split_indices(raw.y, seed, FRACTIONS)
        x, y, idx = raw.x, raw.y, parts[SPLITS.index(split)]
    elif split == "test":
        x, y = raw.test
        idx = np.arange(len(y))
    else:
        parts = _split_indices(raw.y, seed, (1 - VAL_FRACTION, VAL_FRACTION))
        x, y, idx = raw.x, raw.y, parts[0 if split == "train" else 1]
    if len(idx) == 0:
        raise fail("split", "load", f"a split with at least one sample ({name} has {len(raw.y)} "
                   "samples, too few for a stratified 80/10/10 % split)", split)
    xs = torch.from_numpy(x[idx].astype(np.float32))  # fancy indexing copies: cache stays intact
    xs /= raw.scale  # N x C x H x W in [0, 1]
    label = name.split(":", 1)[0]
    return Split(xs, torch.from_numpy(y[idx].astype(np.int64)), raw.classes, f"{label}/{split}")
