"""``imagefolder:DIR``: a folder of class subfolders of images, decoded with Pillow.

Layouts (the torchvision ``ImageFolder`` convention)::

    DIR/cat/001.png, DIR/dog/002.jpg, ...            -> stratified 80/10/10 % train/val/test
    DIR/train/cat/..., DIR/test/cat/...              -> that test set; train cut 90/10 % into
                                                        train/val

Class names are the sorted subfolder names (label = index); files are read in sorted order.
Options go after a ``?`` in the spec or as keyword arguments of ``load``: ``size=32`` or
``size=28x32`` (H x W; bilinear resize, Pillow's default filter for downscaling photos), and
``mode=L`` (grey) or ``mode=RGB``. Without ``size`` every image must already have the size of the
first one; without ``mode`` the images are read as grey when all of them are single-channel, else
as RGB. Pixel values are the decoded 8-bit values / 255, exactly. Everything is held in memory;
for a set that does not fit, build a ``torch.utils.data.DataLoader`` and pass it to the
evaluators directly.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from hwlab.data._builtin import Raw, _frozen
from hwlab.errors import check, fail, is_int

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MODES = ("L", "RGB")


def parse_options(arg: str, kw: dict, spec: str) -> tuple[str, tuple[int, int] | None, str | None]:
    """(directory, size, mode) from ``DIR?size=..&mode=..`` and keyword arguments."""
    directory, _, query = arg.partition("?")
    opts = dict(kw)
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        check(eq == "=" and key in ("size", "mode"), "name", "load",
              "'imagefolder:DIR' with options ?size=N|HxW&mode=L|RGB", spec)
        opts[key] = value
    unknown = sorted(set(opts) - {"size", "mode"})
    check(not unknown, "keyword arguments", "load", "size and mode for imagefolder", unknown)
    size = opts.get("size")
    if isinstance(size, str):
        try:
            hw = tuple(int(v) for v in size.lower().split("x"))
        except ValueError:
            raise fail("size", "load", "N or HxW with positive integers", size) from None
        size = hw * 2 if len(hw) == 1 else hw
    elif is_int(size):
        size = (size, size)
    ok = size is None or (isinstance(size, (tuple, list)) and len(size) == 2 and all(
        is_int(s, 1) for s in size))
    check(ok, "size", "load", "None, N or (H, W) with positive integers", opts.get("size"))
    mode = opts.get("mode")
    check(mode is None or mode in MODES, "mode", "load", "None, 'L' or 'RGB'", mode)
    return directory, None if size is None else tuple(map(int, size)), mode


def _classes(root: Path, spec: str) -> list[tuple[str, list[Path]]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = [(d.name, sorted(f for f in d.iterdir()
                           if f.is_file() and f.suffix.lower() in EXTENSIONS)) for d in folders]
    out = [(name, files) for name, files in out if files]
    check(len(out) >= 1, "name", "load", "'imagefolder:DIR' with DIR holding class subfolders of "
          f"images ({', '.join(EXTENSIONS)})", f"{spec} (no images found)")
    return out


def _stamp(files: list[Path]) -> tuple:
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def imagefolder(arg: str, spec: str, kw: dict) -> Raw:
    directory, size, mode = parse_options(arg, kw, spec)
    root = Path(directory).expanduser()
    check(root.is_dir(), "name", "load", "'imagefolder:DIR' with an existing folder DIR",
          f"{spec} (not found)")
    parts = {}
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = {"train": _classes(root / "train", spec), "test": _classes(root / "test", spec)}
        names = [n for n, _ in parts["train"]]
        check(names == [n for n, _ in parts["test"]], "name", "load", "an imagefolder whose "
              "train and test folders hold the same classes", f"{spec} ({names} vs "
              f"{[n for n, _ in parts['test']]})")
    else:
        parts = {"train": _classes(root, spec)}
    stamps = tuple((k, tuple((n, _stamp(fs)) for n, fs in v)) for k, v in parts.items())
    return _cached(stamps, size, mode, spec)


@functools.lru_cache(maxsize=4)
def _cached(stamps: tuple, size, mode, spec: str) -> Raw:
    from PIL import Image, UnidentifiedImageError

    decoded = {}
    for part, classes in stamps:
        images, labels = [], []
        for label, (_, files) in enumerate(classes):
            for path, _, _ in files:
                try:
                    with Image.open(path) as im:
                        im.load()
                        images.append(im.copy())
                except (UnidentifiedImageError, OSError) as exc:
                    raise fail("file", "load", "an image Pillow can decode",
                               f"{path} ({exc})") from None
                labels.append(label)
        decoded[part] = (images, labels)
    every = [im for images, _ in decoded.values() for im in images]
    if mode is None:
        mode = "L" if all(im.mode in ("1", "L", "I", "I;16") for im in every) else "RGB"
    first = every[0].size[::-1]  # (H, W)
    target = size or first
    arrays = {}
    for part, (images, labels) in decoded.items():
        xs = []
        for im, path in zip(images, [p for _, fs in dict(stamps)[part] for p, _, _ in fs]):
            im = im.convert(mode)
            if im.size[::-1] != tuple(target):
                if size is None:
                    raise fail("file", "load", f"an image of {first[0]}x{first[1]} pixels like "
                               "the first one (or give size=HxW to resize)",
                               f"{path} ({im.size[1]}x{im.size[0]})")
                im = im.resize((target[1], target[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)  # H x W or H x W x 3
            xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))  # C x H x W
        arrays[part] = (np.stack(xs), np.asarray(labels, dtype=np.int64))
    classes = tuple(n for n, _ in dict(stamps)["train"])
    x, y = arrays["train"]
    test = arrays.get("test")
    return Raw(_frozen(x), _frozen(y), classes, 255.0,
               test=None if test is None else (_frozen(test[0]), _frozen(test[1])))
