"""split / partition: unit detection, InfoPro's cuts, memory balance, saved-byte counting."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import localtrain as lt
from hwlab.models import create_model

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def resnet32():
    torch.manual_seed(0)
    return create_model("resnet32", SHAPE, 10)


def test_resnet32_layer_cuts_match_infopro_configs(resnet32):
    # InfoPro's official ResNet-32 configs: K=2 cut after [2,1], K=4 after [1,2],[2,1],[3,0],
    # K=8 after [1,0],[1,2],[1,4],[2,1],[2,3],[3,0],[3,2]; unit 0 = stem, unit 5s+i+1 = block.
    part = lt.partition(resnet32, 4)
    assert len(part.units) == 16
    assert part.unit_bounds == ((0, 4), (4, 8), (8, 12), (12, 16))
    assert lt.partition(resnet32, 2).unit_bounds == ((0, 8), (8, 16))
    stops = [b for _, b in lt.partition(resnet32, 8).unit_bounds]
    assert stops == [2, 4, 6, 8, 10, 12, 14, 16]
    assert part.units[0] == (0, 3)  # conv, BN, ReLU stem
    assert part.tail == (18, 21)  # pool, flatten, linear
    assert part.bounds[-1][1] == len(resnet32)


def test_vit_units_keep_final_norm_in_tail():
    torch.manual_seed(0)
    vit = create_model("vit-tiny", (1, 8, 8), 10)
    part = lt.partition(vit, 2)
    assert len(part.units) == 5  # patch embedding + 4 blocks
    assert part.tail == (5, 8)  # LayerNorm, class token, linear
    assert part.unit_bounds == ((0, 2), (2, 5))


def test_split_modules_compose_to_the_model(resnet32):
    resnet32.eval()
    x = torch.rand(3, *SHAPE)
    for k in (1, 3, 4, 16):
        mods = lt.split(resnet32, k)
        assert len(mods) == k
        assert torch.equal(nn.Sequential(*mods)(x), resnet32(x))
    shared = {id(p) for m in lt.split(resnet32, 4) for p in m.parameters()}
    assert shared == {id(p) for p in resnet32.parameters()}
    resnet32.train()


def test_unit_saved_bytes_exact_on_a_tiny_mlp():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    units, tail = lt.unit_saved_bytes(model, torch.rand(5, 4))
    # Unit 0 is the first Linear: it saves its 5x4 input (80 B). The tail (ReLU + last Linear)
    # saves the 5x8 ReLU output once (160 B): ReLU and Linear save the same storage.
    assert units == [80]
    assert tail == 160


def test_memory_balance_is_the_exact_min_max_partition():
    torch.manual_seed(0)
    model = create_model("resnet20", SHAPE, 10)
    x = torch.rand(4, *SHAPE)
    sizes, tail = lt.unit_saved_bytes(model, x)
    sizes[-1] += tail
    part = lt.partition(model, 3, "memory", sample=x)
    got = max(sum(sizes[a:b]) for a, b in part.unit_bounds)
    best = min(max(sum(sizes[:i]), sum(sizes[i:j]), sum(sizes[j:]))
               for i, j in itertools.combinations(range(1, len(sizes)), 2))
    assert got == best
    layers = lt.partition(model, 3, "layers")
    assert got <= max(sum(sizes[a:b]) for a, b in layers.unit_bounds)
    assert part.unit_bounds[0][1] < layers.unit_bounds[0][1]  # fewer high-resolution units first


def test_memory_balance_leaves_batchnorm_statistics_alone(resnet32):
    before = {k: v.clone() for k, v in resnet32.state_dict().items()}
    lt.partition(resnet32, 4, "memory", sample=SHAPE)
    after = resnet32.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_split_errors():
    torch.manual_seed(0)
    model = create_model("resnet20", SHAPE, 10)
    with pytest.raises(ValueError, match=r"K of split must be an integer in \[1, 10\]"):
        lt.split(model, 11)
    with pytest.raises(ValueError, match="K of split must be an integer >= 1, got 0"):
        lt.split(model, 0)
    with pytest.raises(ValueError, match="balance of split must be one of layers, memory"):
        lt.split(model, 2, balance="params")
    with pytest.raises(ValueError, match="sample of split must be an input batch or a"):
        lt.split(model, 2, balance="memory")
    with pytest.raises(ValueError, match="model of split must be an nn.Sequential"):
        lt.split(nn.Linear(3, 3), 1)
