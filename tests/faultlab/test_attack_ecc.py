"""The ECC-aware bit-flip attack: the physical cost of a silent data error in Hsiao (72, 64)
memory, checked against the decoder itself and by exhaustive search, and the attack on a model."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
from torch import nn

import faultlab as fl
from faultlab._attack_ecc import EccCost, word_cost
from faultlab.memory._codes import get_code

CODE = get_code("secded72_64")
COLS = np.asarray(CODE.columns, dtype=np.int64)  # data 0..63, check 64..71
LOOKUP = CODE.lookup()


def _decoded_error(pattern) -> frozenset | None:
    """Data bits the decoder returns wrong for physical flips ``pattern`` (None: flagged)."""
    s = 0
    for b in pattern:
        s ^= int(COLS[b])
    err = set(pattern)
    if s:
        fix = int(LOOKUP[s])
        if fix < 0:
            return None
        err ^= {fix}
    return frozenset(b for b in err if b < 64)


def _cheapest(data: set) -> list[int]:
    """The pattern of the docstring: D plus all but the lowest check bit of S_D."""
    s = 0
    for b in data:
        s ^= int(COLS[b])
    checks = [64 + i for i in range(8) if (s >> i) & 1]
    return sorted(data) + checks[1:]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_the_cheap_pattern_decodes_to_the_wanted_data_error(size):
    rng = np.random.default_rng(size)
    for _ in range(200):
        data = set(rng.choice(64, size, replace=False).tolist())
        pattern = _cheapest(data)
        assert _decoded_error(pattern) == frozenset(data)
        s = np.bitwise_xor.reduce(COLS[sorted(data)]).astype(np.uint8)
        assert len(pattern) == word_cost(np.array([size]), np.array([s]))[0]


def test_no_cheaper_pattern_exists_for_one_and_two_data_bits():
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 8:
        size = 1 + checked % 2
        data = frozenset(rng.choice(64, size, replace=False).tolist())
        s = np.bitwise_xor.reduce(COLS[sorted(data)]).astype(np.uint8)
        cost = int(word_cost(np.array([size]), np.array([s]))[0])
        if cost > 4:  # exhaustive search up to 3 flips (59,640 patterns) keeps this fast
            continue
        checked += 1
        for k in range(1, cost):  # every pattern with fewer flips fails
            assert all(_decoded_error(p) != data for p in combinations(range(72), k)), (data, k)
    weights = np.bitwise_count(COLS[:64].astype(np.uint8))
    assert sorted(set(weights.tolist())) == [3, 5] and (weights == 3).sum() == 56


def test_marginal_costs_match_the_joint_cost():
    torch.manual_seed(0)
    q = fl.quantize_int8(nn.Sequential(nn.Linear(16, 8)).eval())
    cost = EccCost({"0.weight": dict(q.named_modules())["0"]})
    flat, bits = np.array([0, 1, 9]), np.array([7, 3, 0])
    single = cost.marginal("0.weight", flat, bits)
    assert single.tolist() == [int(np.bitwise_count(COLS[j].astype(np.uint8)))
                               for j in (7, 8 + 3, 8 + 0)]
    joint = cost.cost_of("0.weight", flat, bits)
    cost.commit("0.weight", flat, bits)
    assert cost.total == joint
    words = {0: {7, 11}, 1: {8}}  # weights 0, 1 share word 0; weight 9 is word 1's byte 1
    expect = sum(len(d) + max(int(np.bitwise_count(np.uint8(
        np.bitwise_xor.reduce(COLS[sorted(d)])))) - 1, 0) for d in words.values())
    assert joint == expect
    cost.commit("0.weight", flat, bits)  # toggled back: nothing flipped, nothing paid
    assert cost.total == 0


def test_ecc_aware_attack_pays_physical_flips_and_replays():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(128, 6, generator=g)
    q = fl.quantize_int8(model)
    plain = fl.bit_flip_attack(q, (x, torch.zeros(128).long()), flips=8, target_accuracy=0.0)
    aware = fl.bit_flip_attack(q, (x, torch.zeros(128).long()), flips=8, target_accuracy=0.0,
                               ecc="secded")
    assert plain.physical_flips is None and "physical" not in plain.history
    h = aware.history
    assert len(h) > 0 and aware.physical_flips >= max(3, len(aware.fmap))
    assert (np.diff(h.loss.to_numpy()) > 0).all()
    # the physical count is the joint cost of the final data error pattern
    from faultlab._attack import attackable_layers

    cost = EccCost(attackable_layers(q))
    for p, i, b in zip(aware.fmap.param, aware.fmap.index, aware.fmap.bit):
        cost.commit(aware.fmap.names[p], np.array([i]), np.array([b]))
    assert cost.total == aware.physical_flips
    with pytest.raises(ValueError, match="ecc of bit_flip_attack must be None or 'secded'"):
        fl.bit_flip_attack(q, (x, torch.zeros(128).long()), ecc="tmr")
