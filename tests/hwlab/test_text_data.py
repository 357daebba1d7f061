"""Character-level text data: pydoc (offline, hashed) and text:FILE, windows, streaming."""

import hashlib
import sys

import pytest
import torch

from hwlab.data import TextSplit, as_xy, iter_batches, load
from hwlab.errors import HwlabError

PYDOC_SHA = "2a95af4ac93f5b719944030ce3769070ddf827d847cba42192afa8da989e5dc4"  # CPython 3.11.7


@pytest.mark.skipif(sys.version_info[:3] != (3, 11, 7), reason="pydoc text changes per CPython")
def test_pydoc_pinned_on_3_11_7():
    parts = [load("pydoc", s) for s in ("train", "val", "test")]
    assert sum(len(p.tokens) for p in parts) == 465_048
    assert parts[0].num_classes == 103 and parts[0].sha256 == PYDOC_SHA
    assert [len(p.tokens) for p in parts] == [418_543, 23_253, 23_252]


def test_pydoc_splits_contiguous_and_share_vocab():
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))
    parts = [load("pydoc", s) for s in ("train", "val", "test")]
    assert parts[0].decode(torch.cat([p.tokens for p in parts])) == text  # nothing lost or moved
    assert all(p.vocab == parts[0].vocab for p in parts)
    assert parts[1].sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert load("pydoc", "val", seed=5).tokens.equal(parts[1].tokens)  # deterministic


def test_windows_shift_by_one_and_stream(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcdefghij" * 30 + "é", encoding="utf-8")
    tr = load(f"text:{f}", "train", block=8)
    assert isinstance(tr, TextSplit) and tr.num_classes == 11 and tr.name == "text/train"
    assert tr.x.shape == (len(tr), 8) and len(tr) == (len(tr.tokens) - 1) // 8
    assert torch.equal(tr.y[:, :-1], tr.x[:, 1:]) and torch.equal(tr.y[:-1, -1], tr.x[1:, 0])
    assert tr.decode(tr.x[0]) == "abcdefgh" and tr.decode(tr.encode("jab")) == "jab"
    xs, ys = zip(*tr.loader(5))
    assert torch.equal(torch.cat(xs), tr.x) and torch.equal(torch.cat(ys), tr.y)
    sx, _ = zip(*tr.loader(5, shuffle=True, seed=1))
    assert not torch.equal(torch.cat(sx), tr.x) and torch.cat(sx).sum() == tr.x.sum()
    x, y = tr.windows(4, stride=2)
    assert torch.equal(x[1], tr.tokens[2:6]) and torch.equal(y[1], tr.tokens[3:7])
    batches = list(iter_batches(tr, 7, "t"))
    assert torch.equal(torch.cat([b[1] for b in batches]), tr.y)
    assert as_xy(tr, limit=3)[0].shape == (3, 8)
    assert tr.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()


def test_text_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ab\xff" * 100)
    with pytest.raises(HwlabError, match="UTF-8"):
        load(f"text:{bad}", "train")
    with pytest.raises(HwlabError, match="existing UTF-8 file"):
        load(f"text:{tmp_path / 'missing.txt'}")
    small = tmp_path / "s.txt"
    small.write_text("ab" * 20)
    with pytest.raises(HwlabError, match="block \\+ 1 = 65"):
        load(f"text:{small}", "test")
    with pytest.raises(HwlabError, match="only block"):
        load("pydoc", "train", size=3)
    with pytest.raises(HwlabError, match="characters of the 103"):
        load("pydoc", "val").encode("\x00")
    with pytest.raises(HwlabError, match="N x T like x"):
        next(iter_batches((torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 2,
                                                                            dtype=torch.long))))
