"""hwlab.data: built-in datasets, file formats, stratified deterministic splits, clear errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from hwlab.data import DATASETS, Split, batches, load


@pytest.mark.parametrize("name,shape,sizes", [
    ("digits", (1, 8, 8), (1438, 180, 179)),
    ("mnist5k", (1, 28, 28), (4000, 500, 500)),
    ("synthetic", (1, 8, 8), (408, 52, 52)),
])
def test_builtin_shapes_sizes_and_range(name, shape, sizes):
    splits = [load(name, s) for s in ("train", "val", "test")]
    assert [len(s) for s in splits] == list(sizes)
    for s in splits:
        assert s.in_shape == shape and s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert 0.0 <= s.x.min().item() and s.x.max().item() <= 1.0
    assert splits[0].x.max().item() == 1.0  # scaled by the true maximum (16 or 255), not less
    assert name in DATASETS


def test_mnist5k_is_stratified_exactly():
    for split, per_class in (("train", 400), ("val", 50), ("test", 50)):
        assert load("mnist5k", split, seed=3).y.bincount().tolist() == [per_class] * 10


def _fingerprints(s: Split) -> set[bytes]:
    return {row.numpy().tobytes() for row in s.x.reshape(len(s), -1)}


def test_splits_disjoint_deterministic_and_seed_dependent():
    a = [load("digits", s, seed=1) for s in ("train", "val", "test")]
    fa = [_fingerprints(s) for s in a]
    assert not (fa[0] & fa[1]) and not (fa[0] & fa[2]) and not (fa[1] & fa[2])
    b = load("digits", "val", seed=1)
    assert torch.equal(a[1].x, b.x) and torch.equal(a[1].y, b.y)
    c = load("digits", "val", seed=2)
    assert not torch.equal(a[1].x, c.x)


def test_cache_cannot_be_corrupted_by_callers():
    a = load("digits", "test")
    a.x.fill_(7.0)
    assert load("digits", "test").x.max().item() == 1.0


def test_synthetic_is_learnable_and_keyword_shapes():
    s = load("synthetic", "train", shape=(3, 4, 5), n=90, num_classes=3, noise=0.1)
    assert s.in_shape == (3, 4, 5) and s.num_classes == 3 and len(s) == 72
    # nearest class mean separates the classes almost perfectly at low noise
    means = torch.stack([s.x[s.y == k].mean(0) for k in range(3)]).flatten(1)
    pred = torch.cdist(s.x.flatten(1), means).argmin(1)
    assert (pred == s.y).float().mean().item() > 0.95


def test_subset_is_stratified():
    s = load("mnist5k", "train").subset(30, seed=4)
    assert len(s) == 30 and s.y.bincount().tolist() == [3] * 10
    assert load("mnist5k", "train").subset(10**6).x.shape[0] == 4000


def test_batches_cover_once_and_shuffle_is_seeded():
    s = load("synthetic", "train")
    got = torch.cat([y for _, y in batches(s, 50)])
    assert torch.equal(got, s.y)
    sh1 = torch.cat([x[:, 0, 0, 0] for x, _ in batches(s, 50, shuffle=True, seed=5)])
    sh2 = torch.cat([x[:, 0, 0, 0] for x, _ in batches(s, 50, shuffle=True, seed=5)])
    assert torch.equal(sh1, sh2) and not torch.equal(sh1, s.x[:, 0, 0, 0])
    assert torch.equal(sh1.sort().values, s.x[:, 0, 0, 0].sort().values)
    assert [len(y) for _, y in batches((s.x, s.y), 100, drop_last=True)] == [100] * 4


# ----------------------------------------------------------------------------------- file formats
def _idx(path, arr, gz):
    head = struct.pack(">I", 0x800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 100, True), ("t10k", 20, False)):
        suffix = ".gz" if gz else ""
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 6, 6)), gz)
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)
    return tmp_path


def test_mnist_idx_train_val_from_train_and_own_test(idx_dir):
    tr, va, te = (load(f"mnist-idx:{idx_dir}", s) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (90, 10, 20) and tr.in_shape == (1, 6, 6)
    assert te.y.tolist() == [i % 10 for i in range(20)]  # the file's own test set, in order
    assert va.y.bincount().tolist() == [1] * 10


def test_mnist_idx_wrong_magic_and_truncation(idx_dir):
    p = idx_dir / "t10k-images-idx3-ubyte"
    good = p.read_bytes()
    p.write_bytes(good[:-5])
    with pytest.raises(ValueError, match=r"file of load must be an IDX file .*expected 736"):
        load(f"mnist-idx:{idx_dir}", "test")
    p.write_bytes(struct.pack(">I", 1234) + good[4:])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte \(magic 1234\)"):
        load(f"mnist-idx:{idx_dir}", "test")


def test_mnist_idx_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"name of load must be a folder holding "
                       r"train-images-idx3-ubyte.*not found"):
        load(f"mnist-idx:{tmp_path / 'nope'}")


def _cifar(path, n, label=None):
    rng = np.random.default_rng(n)
    rec = rng.integers(0, 256, (n, 3073)).astype(np.uint8)
    rec[:, 0] = np.arange(n) % 10 if label is None else label
    path.write_bytes(rec.tobytes())
    return rec


def test_cifar10_binary_batches(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    recs = [_cifar(d / f"data_batch_{i}.bin", 40) for i in (1, 2)]
    test = _cifar(d / "test_batch.bin", 30)
    te = load(f"cifar10:{tmp_path}", "test")
    assert te.in_shape == (3, 32, 32) and te.classes[0] == "airplane"
    assert torch.equal((te.x[3] * 255).round(), torch.from_numpy(test[3, 1:].reshape(3, 32, 32)).float())
    tr = load(f"cifar10:{d}", "train")
    assert len(tr) == 70 and len(load(f"cifar10:{d}", "val")) == 10  # 7 + 1 of 8 per class
    assert len(recs) == 2
    (d / "test_batch.bin").write_bytes(test.tobytes()[:-1])
    with pytest.raises(ValueError, match=r"3073-byte records.*92189 bytes"):
        load(f"cifar10:{d}", "test")
    _cifar(d / "test_batch.bin", 30, label=11)
    with pytest.raises(ValueError, match=r"labels 0..9.*label 11"):
        load(f"cifar10:{d}", "test")


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(50) % 5
    nhwc = rng.integers(0, 256, (50, 4, 4, 3)).astype(np.uint8)
    np.savez(tmp_path / "a.npz", x=nhwc, y=y)
    s = load(f"npz:{tmp_path / 'a.npz'}", "test")
    assert s.in_shape == (3, 4, 4) and len(s) == 5 and s.num_classes == 5
    full = torch.cat([load(f"npz:{tmp_path / 'a.npz'}", k).x for k in ("train", "val", "test")])
    assert full.mul(255).round().sum().item() == float(nhwc.astype(np.int64).sum())
    np.savez(tmp_path / "b.npz", x=rng.random((50, 6, 6)).astype(np.float32), y=y)
    assert load(f"npz:{tmp_path / 'b.npz'}").in_shape == (1, 6, 6)
    np.savez(tmp_path / "c.npz", x=rng.random((50, 6, 6)) * 3, y=y)
    with pytest.raises(ValueError, match=r"uint8 \(0..255\) or float in \[0, 1\]"):
        load(f"npz:{tmp_path / 'c.npz'}")
    np.savez(tmp_path / "d.npz", x=np.zeros((50, 6, 6), np.float32), y=np.array(["a"] * 50))
    with pytest.raises(ValueError, match=r"integer labels"):
        load(f"npz:{tmp_path / 'd.npz'}")
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 6, 6), np.uint8), y=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"at least one sample"):
        load(f"npz:{tmp_path / 'e.npz'}")
    np.savez(tmp_path / "f.npz", x=np.array([object()] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(ValueError, match=r"readable .npz file \(no pickled objects\)"):
        load(f"npz:{tmp_path / 'f.npz'}")
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"file of load must be a readable .npz"):
        load(f"npz:{tmp_path / 'g.npz'}")


def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match=r"name of load must be one of digits, mnist5k, "
                       r"synthetic, 'mnist-idx:DIR'.*got 'cifar100'"):
        load("cifar100")
    with pytest.raises(ValueError, match=r"name of load must be 'npz:FILE'.*not found"):
        load("npz:/no/such/file.npz")
    with pytest.raises(ValueError, match=r"split of load must be one of train, val, test, "
                       r"got 'valid'"):
        load("digits", "valid")
    with pytest.raises(ValueError, match=r"seed of load must be an integer >= 0, got -1"):
        load("digits", seed=-1)
    with pytest.raises(ValueError, match=r"keyword arguments of load must be empty for digits"):
        load("digits", n=5)
    with pytest.raises(ValueError, match=r"shape of load must be a \(C, H, W\) tuple"):
        load("synthetic", shape=(8, 8))
    with pytest.raises(ValueError, match=r"batch_size of batches must be an integer >= 1, got 0"):
        batches(load("digits"), 0)
