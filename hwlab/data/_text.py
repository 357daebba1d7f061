"""Character-level text: ``pydoc`` (the Python standard library's own prose) and ``text:FILE``.

>>> from hwlab.data import load
>>> train = load("pydoc", "train", block=64)   # TextSplit: tokens int64, vocab, sha256
>>> x, y = train.x, train.y                      # N x 64 windows, y = x shifted by one
>>> for x, y in train.loader(32): ...            # a DataLoader streaming the windows

``pydoc`` is ``pydoc_data.topics.topics`` joined with ``"\\n"`` in sorted key order (465,048
characters and 103 distinct ones on CPython 3.11.7). It ships with every CPython, so nothing is
downloaded, but it changes between CPython releases: :attr:`TextSplit.sha256` (of the whole UTF-8
text) is part of the dataset's identity and studies write it into every result row.

Splits are contiguous and deterministic (the seed is ignored): the first 90 % of the characters
train, the next 5 % validate, the last 5 % test (nanoGPT cuts 90/10 train/val; the test slice
is ours, taken from its val part). The vocabulary is the sorted set of characters of the WHOLE
text, kept with every split, so token ids agree between splits.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from hwlab.errors import check, check_bool, check_int, check_positive_int, fail

__all__ = ["TEXT_FRACTIONS", "TextSplit", "load_text", "pydoc_text"]

TEXT_FRACTIONS = (0.90, 0.05, 0.05)  # contiguous train / val / test shares of the characters
BLOCK = 64  # window length: nanoGPT's CPU recipe (block_size 64)


@functools.lru_cache(maxsize=1)
def pydoc_text() -> str:
    """The ``pydoc`` corpus: stdlib ``pydoc_data.topics.topics`` values, sorted by key, joined."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


@functools.lru_cache(maxsize=4)
def _file_text(path: str, size: int, mtime_ns: int) -> str:
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail("name", "load", "'text:FILE' naming a UTF-8 text file",
                   f"{path} (byte {exc.start} is not UTF-8)") from None


@functools.lru_cache(maxsize=4)
def _encoded(text: str) -> tuple[torch.Tensor, str, str]:
    vocab = "".join(sorted(set(text)))
    table = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([table[c] for c in text], dtype=torch.int64)
    return ids, vocab, hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, eq=False)
class TextSplit:
    """One contiguous slice of a character-level corpus, cut into windows of ``block`` tokens.

    ``x`` / ``y``: the non-overlapping windows (``N x block``, int64) and their targets (the next
    character of every position). ``vocab[i]`` is the character of token ``i``; ``sha256`` hashes
    the whole corpus (not just this slice). Equality is identity.
    """

    tokens: torch.Tensor  # int64, 1-d: the slice's character ids
    vocab: str  # one character per token id, sorted
    sha256: str  # hex SHA-256 of the whole corpus's UTF-8 bytes
    name: str = ""  # e.g. "pydoc/val"
    block: int = BLOCK  # window length

    def __post_init__(self) -> None:
        t = self.tokens
        check(isinstance(t, torch.Tensor) and t.dim() == 1 and t.dtype == torch.int64,
              "tokens", "TextSplit", "a 1-d int64 tensor", getattr(t, "shape", type(t).__name__))
        check(isinstance(self.vocab, str) and len(self.vocab) >= 2, "vocab", "TextSplit",
              "a string of at least 2 distinct characters", self.vocab)
        check_positive_int(self.block, "block", "TextSplit")
        check(len(t) >= self.block + 1, "tokens", "TextSplit",
              f"at least block + 1 = {self.block + 1} tokens (one window)", len(t))

    # -- the classifier-like view (what evaluators and campaigns read) -------------------------
    @property
    def x(self) -> torch.Tensor:
        """Inputs: N x block non-overlapping windows (views of :attr:`tokens`)."""
        n = len(self)
        return self.tokens[: n * self.block].view(n, self.block)

    @property
    def y(self) -> torch.Tensor:
        """Targets: the windows shifted by one character (N x block)."""
        n = len(self)
        return self.tokens[1: n * self.block + 1].view(n, self.block)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.vocab)

    @property
    def num_classes(self) -> int:
        return len(self.vocab)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """(1, 1, block): what :func:`hwlab.models.create_model` takes for ``char-gpt``."""
        return (1, 1, self.block)

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block

    def subset(self, n: int, seed: int = 0) -> TextSplit:
        """The first ``n`` windows (contiguous text; ``seed`` unused, kept for ``Split``'s API)."""
        n = check_positive_int(n, "n", "TextSplit.subset")
        stop = min(n, len(self)) * self.block + 1
        return TextSplit(self.tokens[:stop], self.vocab, self.sha256, self.name, self.block)

    # -- text <-> ids ----------------------------------------------------------------------------
    def encode(self, text: str) -> torch.Tensor:
        """Token ids (int64, 1-d) of ``text``; a character outside the vocabulary is an error."""
        check(isinstance(text, str), "text", "TextSplit.encode", "a string", type(text).__name__)
        table = {c: i for i, c in enumerate(self.vocab)}
        bad = sorted(set(text) - set(table))
        check(not bad, "text", "TextSplit.encode", f"characters of the {len(self.vocab)}-character "
              "vocabulary", bad[:5])
        return torch.tensor([table[c] for c in text], dtype=torch.int64)

    def decode(self, ids) -> str:
        """The text of token ids (a tensor or a sequence of ints)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.vocab[i] for i in ids)

    # -- batches ----------------------------------------------------------------------------------
    def windows(self, block: int | None = None, stride: int | None = None):
        """``(x, y)`` windows of ``block`` tokens every ``stride`` (default: block, no overlap)."""
        block = self.block if block is None else check_positive_int(block, "block", "windows")
        stride = block if stride is None else check_positive_int(stride, "stride", "windows")
        n = (len(self.tokens) - 1 - block) // stride + 1
        check(n >= 1, "block", "windows", f"at most {len(self.tokens) - 1}", block)
        x = self.tokens.as_strided((n, block), (stride, 1))
        y = self.tokens[1:].as_strided((n, block), (stride, 1))
        return x, y

    def loader(self, batch_size: int = 32, shuffle: bool = False, seed: int = 0):
        """A ``torch.utils.data.DataLoader`` over the ``(x, y)`` windows (streams batches)."""
        batch_size = check_positive_int(batch_size, "batch_size", "TextSplit.loader")
        shuffle = check_bool(shuffle, "shuffle", "TextSplit.loader")
        seed = check_int(seed, "seed", "TextSplit.loader")
        from torch.utils.data import DataLoader, TensorDataset

        gen = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(TensorDataset(self.x, self.y), batch_size=batch_size, shuffle=shuffle,
                          generator=gen)

    def random_batch(self, batch_size: int, generator: torch.Generator,
                     block: int | None = None):
        """One batch of ``batch_size`` windows at random offsets (nanoGPT's ``get_batch``)."""
        block = self.block if block is None else block
        starts = torch.randint(len(self.tokens) - block, (batch_size,), generator=generator)
        idx = starts[:, None] + torch.arange(block)  # B x block
        return self.tokens[idx], self.tokens[idx + 1]


def load_text(name: str, split: str, block: int = BLOCK) -> TextSplit:
    """The ``split`` slice of ``pydoc`` or ``text:FILE`` (called by :func:`hwlab.data.load`)."""
    block = check_positive_int(block, "block", "load")
    if name == "pydoc":
        text, label = pydoc_text(), "pydoc"
    else:
        path = Path(name.partition(":")[2]).expanduser()
        check(path.is_file(), "name", "load", "'text:FILE' naming an existing UTF-8 file", name)
        st = path.stat()
        text, label = _file_text(str(path), st.st_size, st.st_mtime_ns), "text"
    ids, vocab, digest = _encoded(text)
    n = len(ids)
    cuts = [0, round(TEXT_FRACTIONS[0] * n), round((TEXT_FRACTIONS[0] + TEXT_FRACTIONS[1]) * n), n]
    k = ("train", "val", "test").index(split)
    part = ids[cuts[k]: cuts[k + 1]]
    if len(vocab) < 2 or len(part) < block + 1:
        raise fail("name", "load", f"a text whose {split} slice ({TEXT_FRACTIONS[k]:.0%}) holds "
                   f"at least block + 1 = {block + 1} characters of 2 or more distinct ones",
                   f"{name} ({n} characters, {len(vocab)} distinct)")
    return TextSplit(part.clone(), vocab, digest, f"{label}/{split}", block)
