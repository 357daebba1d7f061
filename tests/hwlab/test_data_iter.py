"""hwlab.data.iter_batches / as_xy: Split, pair, DataLoader, iterable; validation; empty splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from hwlab.data import Split, as_xy, iter_batches, load


@pytest.fixture(scope="module")
def test_split():
    return load("digits", "test", seed=0)


def _cat(batches):
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


def test_every_kind_of_data_gives_the_same_samples(test_split):
    s = test_split
    loader = DataLoader(TensorDataset(s.x, s.y), batch_size=50, shuffle=False)
    kinds = {"split": s, "pair": (s.x, s.y), "numpy": (s.x.numpy(), s.y.numpy()),
             "loader": loader, "list": [(s.x[:100], s.y[:100]), [s.x[100:], s.y[100:]]],
             "generator": ((s.x[i:i + 7], s.y[i:i + 7]) for i in range(0, len(s), 7))}
    for name, data in kinds.items():
        x, y = _cat(iter_batches(data, 64, "campaign"))
        assert torch.equal(x, s.x) and torch.equal(y, s.y), name
        assert y.dtype == torch.int64
    sizes = [len(y) for _, y in iter_batches(s, 64)]
    assert sizes == [64, 64, 51]  # in-memory data is cut by batch_size ...
    assert [len(y) for _, y in iter_batches(loader, 64)] == [50, 50, 50, 29]  # ... a loader not


def test_int32_labels_are_widened_and_as_xy_limits(test_split):
    s = test_split
    x, y = as_xy((s.x, s.y.to(torch.int32)), "profile")
    assert y.dtype == torch.int64 and torch.equal(y, s.y)
    loader = DataLoader(TensorDataset(s.x, s.y), batch_size=50)
    x, y = as_xy(loader, "profile", limit=120)
    assert torch.equal(x, s.x[:120]) and torch.equal(y, s.y[:120])
    x, y = as_xy(s, "profile", limit=20)  # a Split: stratified subset
    assert len(y) == 20 and torch.equal(y, s.subset(20).y)


@pytest.mark.parametrize("make, match", [
    (lambda s: (s.x[:10], torch.tensor([0] * 9 + [99])),
     r"data of campaign must be labels in \[0, 10\), got 'labels from 0 to 99'"),
    (lambda s: (s.x[:10], torch.tensor([-1] + [0] * 9)),
     r"data of campaign must be labels in \[0, 10\), got 'labels from -1 to 0'"),
    (lambda s: (s.x[:10].clone().index_fill_(0, torch.tensor([3]), float("nan")), s.y[:10]),
     r"data of campaign must be finite inputs x \(no NaN or inf\), got '64 non-finite"),
    (lambda s: ((s.x[:10] * 255).to(torch.uint8), s.y[:10]),
     r"data of campaign must be floating-point inputs x .*got 'torch.uint8'"),
    (lambda s: (s.x[:10], s.y[:10].float()),
     r"data of campaign must be integer class labels y \(int64\), got 'torch.float32'"),
    (lambda s: (s.x[:10], s.y[:9]), r"data of campaign must be labels y: a 1-d tensor as long"),
    (lambda s: (s.x[:0], s.y[:0]), r"data of campaign must be a non-empty dataset, got '0 "),
    (lambda s: [], r"data of campaign must be a non-empty dataset, got '0 samples'"),
    (lambda s: [(s.x[:5], s.y[:5]), (s.x[:5, :, :4], s.y[:5])],
     r"data of campaign must be batches of one sample shape \(1, 8, 8\), got \(1, 4, 8\)"),
    (lambda s: [s.x[:5]], r"data of campaign must be .*batch 0 is not an \(x, y\) pair"),
    (lambda s: "digits", (r"data of campaign must be a hwlab.data.Split, an \(x, y\) pair, a "
                         r"DataLoader or an iterable of \(x, y\) batches, got 'str'")),
])
def test_bad_data_is_one_clear_error(test_split, make, match):
    with pytest.raises(ValueError, match=match):
        list(iter_batches(make(test_split), 64, "campaign", num_classes=10))


def test_split_rejects_nan_and_labels_outside_its_classes(test_split):
    s = test_split
    x = s.x.clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x of Split must be finite \(no NaN or inf\), got '1 "):
        Split(x, s.y, s.classes)
    with pytest.raises(ValueError, match=r"y of Split must be labels in \[0, 3\) .*from 0 to 9"):
        Split(s.x, s.y, ("a", "b", "c"))
    with pytest.raises(ValueError, match=r"y of Split must be an int64 tensor of labels"):
        Split(s.x, s.y.to(torch.int32), s.classes)


def test_a_split_that_would_be_empty_is_an_error(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, x=np.zeros((4, 1, 2, 2), np.uint8), y=np.array([0, 1, 0, 1]))
    assert len(load(f"npz:{path}", "train")) == 4
    with pytest.raises(ValueError, match=r"split of load must be a split with at least one sample "
                                         r"\(npz:.* has 4 samples, too few .*got 'val'"):
        load(f"npz:{path}", "val")
