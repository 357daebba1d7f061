"""hwlab.seeds: derive_seed (moved from hwlab.studies), seeded, torch_threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwlab.studies
from hwlab.seeds import derive_seed, seeded, torch_threads


def test_derive_seed_is_the_same_function_and_value():
    assert hwlab.studies.derive_seed is derive_seed
    assert derive_seed(0, "a") == 1814709002494958226  # sha256("0|a")[:8] >> 1
    assert derive_seed(np.int64(0), "a") == derive_seed(0, "a")
    with pytest.raises(ValueError, match=r"seed of derive_seed must be an integer, got 1.5"):
        derive_seed(1.5, "a")
    with pytest.raises(ValueError, match=r"key of derive_seed must be a str, got 3"):
        derive_seed(0, 3)


def test_seeded_is_local_and_reproducible():
    torch.manual_seed(123)
    expected_after = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7) as rng:
        a, u = torch.rand(4), rng.random(2)
    after = torch.rand(3)  # the global stream continues as if the block had not run
    assert torch.equal(after, expected_after)
    state = np.random.get_state()[1].copy()
    with seeded(7) as rng:
        b, v = torch.rand(4), rng.random(2)
    assert torch.equal(a, b) and np.array_equal(u, v)
    assert np.array_equal(np.random.get_state()[1], state)  # NumPy's global RNG untouched
    assert torch.equal(a, torch.rand(4, generator=torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match=r"seed of seeded must be an integer >= 0, got -1"):
        with seeded(-1):
            pass


def test_torch_threads_restores_also_after_an_error():
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    with torch_threads(target) as n:
        assert n == target == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with pytest.raises(KeyError), torch_threads(target):
        raise KeyError("x")
    assert torch.get_num_threads() == before
    with torch_threads(0) as n:  # 0 / None: as is
        assert n == before
    with pytest.raises(ValueError, match=r"n of torch_threads must be None or an integer >= 0"):
        with torch_threads(-2):
            pass
