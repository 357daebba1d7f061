"""The papers' setting helpers: MAN's memory by parts, ResNet-110, the published ratios."""

from __future__ import annotations

import pytest
import torch

import localtrain as lt
from hwlab.models import create_model
from localtrain._paper import PAPER_RATIOS, paper_ratio, phase_parts, resnet110

SHAPE = (3, 8, 8)


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_man_parts_are_two_next_blocks_beside_infopro():
    torch.set_num_threads(1)
    x, y = _batch()
    torch.manual_seed(0)
    man = lt.make_rule("man", create_model("resnet20", SHAPE, 10), K=3, sample=x,
                       balance="layers")
    torch.manual_seed(0)
    info = lt.make_rule("infopro", create_model("resnet20", SHAPE, 10), K=3, sample=x,
                        balance="layers")
    blocks, _ = lt.unit_saved_bytes(man.model, x)  # independent: each unit alone, in the chain
    man_parts, info_parts = phase_parts(man, x, y), phase_parts(info, x, y)
    assert len(man_parts) == 3 and set(man_parts[-1]) == {"module"}
    for k in range(2):
        nxt = man.partition.unit_bounds[k + 1][0]  # the first unit of module k+1
        assert man_parts[k]["ema"] == man_parts[k]["lb"] == blocks[nxt] > 0
        assert man_parts[k]["module"] == info_parts[k]["module"]  # same cuts (balance=layers)
        assert "ema" not in info_parts[k]
    a, b = man.partition.unit_bounds[0]  # module 0 keeps exactly its units' bytes
    assert man_parts[0]["module"] == sum(blocks[a:b])


def test_resnet110_has_55_units_and_paper_ratios():
    torch.manual_seed(0)
    assert len(lt.partition(resnet110(), 1).units) == 55  # stem + 54 blocks
    assert paper_ratio("resnet110", 1024, "infopro", 4) == PAPER_RATIOS[
        ("resnet110", 1024, "infopro", 4)]
    assert paper_ratio("resnet110", 1024, "checkpoint", 4)[0] == pytest.approx(1 - 0.584)
    assert paper_ratio("resnet32", 128, "dgl", 4) == (None, "")
