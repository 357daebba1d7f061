"""Seeds and thread limits, once for every package: ``derive_seed``, ``seeded``, ``torch_threads``.

>>> from hwlab.seeds import derive_seed, seeded, torch_threads
>>> s = derive_seed(0, "bitflip|1e-06|trial=3")     # 63-bit, independent of order and executor
>>> with seeded(s) as rng:                           # torch seeded locally, NumPy Generator
...     w = torch.randn(3); u = rng.random(3)
>>> with torch_threads(1):                           # restored on exit (also on an exception)
...     ...

No global state is changed for longer than a ``with`` block: ``seeded`` forks torch's RNG
(``torch.random.fork_rng``) and hands out a fresh ``numpy.random.Generator`` instead of seeding
NumPy's global RNG; ``torch_threads`` restores the previous thread count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from hwlab.errors import check, check_int, is_int

__all__ = ["derive_seed", "seeded", "torch_threads"]


def derive_seed(seed: int, key: str) -> int:
    """A 63-bit seed from a study seed and an item key: independent of executor and order.

    SHA-256 of ``"seed|key"``, first 8 bytes big-endian, shifted right by one (so it fits a
    signed 64-bit integer and ``torch.manual_seed``).
    """
    seed = check_int(seed, "seed", "derive_seed")
    check(isinstance(key, str), "key", "derive_seed", "a str", key)
    return _derive_seed(int(seed), key)


def _derive_seed(seed: int, key: str) -> int:
    """:func:`derive_seed` for a Python ``int`` seed and a ``str`` key (a trial's hot path)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:8], "big") >> 1


@contextmanager
def seeded(seed: int, devices: list | None = None) -> Iterator[np.random.Generator]:
    """Seed torch inside the block only, and yield a NumPy ``Generator`` seeded the same way.

    Torch's global RNG (CPU, plus the CUDA ``devices`` given; by default none, so no CUDA
    context is created) is forked on entry and restored on exit, so code after the block draws
    as if the block had not run. NumPy's global RNG is never touched.
    """
    seed = check_int(seed, "seed", "seeded", 0)
    import torch

    with torch.random.fork_rng(devices=[] if devices is None else devices):
        torch.manual_seed(int(seed))
        yield np.random.default_rng(int(seed))


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads (``None`` or 0: leave as is); restore after.

    Yields the thread count in effect inside the block.
    """
    check(n is None or is_int(n, 0), "n", "torch_threads", "None or an integer >= 0", n)
    import torch

    before = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(int(n))
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
