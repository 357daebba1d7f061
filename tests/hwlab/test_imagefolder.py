"""hwlab.data imagefolder:DIR on hand-made PNGs: labels, exact pixel values, resize, layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hwlab.data import check_dataset, load


def _png(path, array, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _tree(root, n_per_class=10, rgb=False):
    """Class 'a' images hold value 10*i + 1 everywhere (+ a marker pixel), class 'b' 200 - i."""
    expected = {}
    for cls, base in (("b", 200), ("a", 1)):  # created out of order: classes are sorted
        for i in range(n_per_class):
            v = base + 10 * i if cls == "a" else base - i
            a = np.full((4, 5), v, np.uint8)
            a[0, 0] = 255 - v  # a distinct pixel: the layout is kept (H x W, not transposed)
            if rgb:
                a = np.stack([a, a // 2, np.full_like(a, 7)], axis=-1)
            _png(root / cls / f"{i:03d}.png", a, "RGB" if rgb else "L")
            expected[(cls, v)] = a
    return expected


def test_labels_and_pixel_values_are_exact(tmp_path):
    expected = _tree(tmp_path / "imgs")
    parts = [load(f"imagefolder:{tmp_path / 'imgs'}", s, seed=0) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [16, 2, 2]  # 80/10/10 % of 10 per class, stratified
    assert parts[0].classes == ("a", "b") and parts[0].in_shape == (1, 4, 5)
    seen = set()
    for split in parts:
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        for x, y in zip(split.x, split.y):
            cls = split.classes[int(y)]
            v = round(float(x[0, 1, 1]) * 255)
            assert (cls, v) in expected  # the label matches the folder of that image
            assert torch.equal(x[0], torch.from_numpy(expected[(cls, v)]).float() / 255)
            seen.add((cls, v))
    assert seen == set(expected)  # disjoint splits covering every image once


def test_rgb_resize_and_own_test_folder(tmp_path):
    _tree(tmp_path / "r" / "train", rgb=True)
    test_expected = _tree(tmp_path / "r" / "test", n_per_class=2, rgb=True)
    test = load(f"imagefolder:{tmp_path / 'r'}", "test")
    assert len(test) == 4 and test.in_shape == (3, 4, 5)
    assert torch.equal(test.x[0], torch.from_numpy(
        test_expected[("a", 1)].transpose(2, 0, 1).copy()).float() / 255)
    assert len(load(f"imagefolder:{tmp_path / 'r'}", "train")) == 18  # 90 % of 20
    small = load(f"imagefolder:{tmp_path / 'r'}?size=2x3&mode=L", "test")
    assert small.in_shape == (1, 2, 3)
    same = load(f"imagefolder:{tmp_path / 'r'}", "test", size=(2, 3), mode="L")
    assert torch.equal(small.x, same.x)
    uniform = load(f"imagefolder:{tmp_path / 'r'}?size=8", "test")  # a constant image stays
    assert uniform.in_shape == (3, 8, 8) and float(uniform.x[0, 2].max()) == pytest.approx(7 / 255)


def test_bad_trees_are_clear_errors(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"name of load must be 'imagefolder:DIR' with DIR "
                                         r"holding class subfolders of images.*no images found"):
        load(f"imagefolder:{tmp_path / 'empty'}")
    _png(tmp_path / "mixed" / "a" / "1.png", np.zeros((4, 4), np.uint8), "L")
    _png(tmp_path / "mixed" / "b" / "2.png", np.zeros((5, 4), np.uint8), "L")
    with pytest.raises(ValueError, match=r"file of load must be an image of 4x4 pixels like the "
                                         r"first one \(or give size=HxW to resize\)"):
        load(f"imagefolder:{tmp_path / 'mixed'}")
    (tmp_path / "mixed" / "b" / "3.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"file of load must be an image Pillow can decode"):
        load(f"imagefolder:{tmp_path / 'mixed'}?size=4")
    with pytest.raises(ValueError, match=r"name of load must be 'imagefolder:DIR' with options"):
        load(f"imagefolder:{tmp_path / 'mixed'}?colour=1")
    with pytest.raises(ValueError, match=r"dataset of study x must be 'imagefolder:DIR' naming an "
                                         r"existing folder, got 'imagefolder:/no/such'"):
        check_dataset("imagefolder:/no/such", "dataset", "study x")
    assert check_dataset(f"imagefolder:{tmp_path / 'mixed'}?size=4").startswith("imagefolder:")
