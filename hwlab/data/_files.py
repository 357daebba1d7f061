"""Datasets from local files a user points to: ``mnist-idx:DIR``, ``cifar10:DIR``, ``npz:FILE``.

Nothing is downloaded and nothing is unpickled: IDX and CIFAR-10 binary batches are fixed-size
records parsed with NumPy, ``.npz`` files are opened with ``allow_pickle=False``. Parsed arrays are
cached per process, keyed by path, size and modification time (an edited file is parsed again).
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from hwlab.data._builtin import DIGIT_CLASSES, Raw, _frozen
from hwlab.errors import fail

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte + 3 x 32 x 32 pixel bytes


def _corrupt(path: Path, what: str, detail: str):
    return fail("file", "load", what, f"{path} ({detail})")


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _find(directory: Path, names: tuple[str, ...], spec: str) -> Path:
    for name in names:
        for cand in (directory / name, directory / f"{name}.gz"):
            if cand.is_file():
                return cand
    raise fail("name", "load", f"a folder holding {names[0]}[.gz]", f"{spec} (not found)")


def _read(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as exc:
            raise _corrupt(path, "a readable gzip file", str(exc)) from None
    return path.read_bytes()


# ---------------------------------------------------------------------------------------- IDX
def _parse_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes: magic 0x0000 08 ndim, ndim big-endian int32 sizes, data."""
    raw = _read(path)
    what = f"an IDX file of {ndim}-d unsigned bytes (magic {0x800 + ndim})"
    if len(raw) < 4 + 4 * ndim:
        raise _corrupt(path, what, f"truncated: {len(raw)} bytes")
    head = np.frombuffer(raw, dtype=">i4", count=1 + ndim)
    if head[0] != 0x800 + ndim:
        raise _corrupt(path, what, f"magic {int(head[0])}")
    dims = tuple(int(d) for d in head[1:])
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise _corrupt(path, what, f"{len(raw)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=4)
def _mnist_idx_cached(stamps: tuple[tuple[str, int, int], ...]) -> Raw:
    xs, ys = [], []
    for (img, _, _), (lab, _, _) in zip(stamps[::2], stamps[1::2]):
        x, y = _parse_idx(Path(img), 3), _parse_idx(Path(lab), 1)
        if len(x) != len(y) or len(x) == 0:
            raise _corrupt(Path(lab), f"a label file matching {img}",
                           f"{len(y)} labels for {len(x)} images")
        if y.max() > 9:
            raise _corrupt(Path(lab), "a label file with labels 0..9", f"label {int(y.max())}")
        xs.append(x[:, None])  # N x 1 x H x W
        ys.append(y.astype(np.int64))
    train = Raw(_frozen(xs[0]), _frozen(ys[0]), DIGIT_CLASSES, 255.0,
                test=(_frozen(xs[1]), _frozen(ys[1])))
    return train


def mnist_idx(directory: str, spec: str) -> Raw:
    """MNIST (or Fashion-MNIST) IDX files in ``directory``: train-* and t10k-*, gzipped or not."""
    d = Path(directory).expanduser()
    files = []
    for prefix in ("train", "t10k"):
        for kind, ext in (("images", "idx3-ubyte"), ("labels", "idx1-ubyte")):
            names = (f"{prefix}-{kind}-{ext}", f"{prefix}-{kind}.{ext}")
            files.append(_stamp(_find(d, names, spec)))
    return _mnist_idx_cached(tuple(files))


# ------------------------------------------------------------------------------------ CIFAR-10
def _parse_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
        raise _corrupt(path, f"a CIFAR-10 binary batch of {_CIFAR_RECORD}-byte records",
                       f"{len(raw)} bytes")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    y = rec[:, 0].astype(np.int64)
    if y.max() > 9:
        raise _corrupt(path, "a CIFAR-10 binary batch with labels 0..9", f"label {int(y.max())}")
    return rec[:, 1:].reshape(-1, 3, 32, 32), y  # N x 3 x 32 x 32 (stored channel-major)


@functools.lru_cache(maxsize=2)
def _cifar_cached(stamps: tuple[tuple[str, int, int], ...]) -> Raw:
    parts = [_parse_cifar(Path(p)) for p, _, _ in stamps]
    x = np.concatenate([p[0] for p in parts[:-1]])
    y = np.concatenate([p[1] for p in parts[:-1]])
    return Raw(_frozen(x), _frozen(y), CIFAR10_CLASSES, 255.0,
               test=(_frozen(parts[-1][0]), _frozen(parts[-1][1])))


def cifar10(directory: str, spec: str) -> Raw:
    """CIFAR-10 binary version: data_batch_1..5.bin (those present, at least one) + test_batch.bin.

    ``directory`` may be the folder of the batches or its parent holding ``cifar-10-batches-bin``.
    """
    d = Path(directory).expanduser()
    if (d / "cifar-10-batches-bin").is_dir():
        d = d / "cifar-10-batches-bin"
    train = [d / f"data_batch_{i}.bin" for i in range(1, 6) if (d / f"data_batch_{i}.bin").is_file()]
    if not train or not (d / "test_batch.bin").is_file():
        raise fail("name", "load", "'cifar10:DIR' with DIR holding data_batch_1.bin .. "
                   "data_batch_5.bin and test_batch.bin", f"{spec} (not found)")
    return _cifar_cached(tuple(_stamp(p) for p in [*train, d / "test_batch.bin"]))


# ----------------------------------------------------------------------------------------- npz
def _to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]  # N x H x W -> N x 1 x H x W
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x  # already N x C x H x W
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return x.transpose(0, 3, 1, 2)  # N x H x W x C -> N x C x H x W
    raise _corrupt(path, "an npz whose x is N x H x W, N x C x H x W or N x H x W x C "
                   "with C in (1, 3)", f"x has shape {x.shape}")


@functools.lru_cache(maxsize=4)
def _npz_cached(stamp: tuple[str, int, int]) -> Raw:
    path = Path(stamp[0])
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files or "y" not in f.files:
                raise _corrupt(path, "an npz with arrays x and y", f"arrays {f.files}")
            x, y = f["x"], f["y"]
            classes = tuple(str(c) for c in f["classes"]) if "classes" in f.files else None
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("file of load"):
            raise
        raise _corrupt(path, "a readable .npz file (no pickled objects)", str(exc)) from None
    x = _to_nchw(x, path)
    if x.dtype == np.uint8:
        scale = 255.0
    elif x.dtype.kind == "f" and x.size and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1:
        x, scale = x.astype(np.float32), 1.0
    else:
        raise _corrupt(path, "an npz whose x is uint8 (0..255) or float in [0, 1]",
                       f"x has dtype {x.dtype}")
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu" or (y.size and y.min() < 0):
        raise _corrupt(path, "an npz whose y holds len(x) integer labels >= 0",
                       f"y has shape {y.shape} and dtype {y.dtype}")
    y = y.astype(np.int64)
    k = int(y.max()) + 1 if y.size else 0
    if classes is None or len(classes) < k:
        classes = tuple(str(i) for i in range(k))
    return Raw(_frozen(x), _frozen(y), classes, scale)


def npz(file: str, spec: str) -> Raw:
    """An ``.npz`` with ``x`` (images) and ``y`` (integer labels), optionally ``classes`` (str)."""
    path = Path(file).expanduser()
    if not path.is_file():
        raise fail("name", "load", "'npz:FILE' with an existing .npz FILE", f"{spec} (not found)")
    return _npz_cached(_stamp(path))
