"""RADAR run-time checksums of int8 weights (Li, Rakin, He, Fan, Chakrabarti, arXiv 2101.08254).

Reimplemented from the paper and ``shared/papers/bit-flip-attack.md``. Per attacked layer: a
secret fixed permutation interleaves the int8 words (the clustered flips of a bit-flip attack
land in different groups), consecutive groups of ``group`` permuted words get a masked checksum
``M = sum(k_i * w_i)`` with a secret key ``k_i`` in {+1, -1} (half of each sign), and a 2-bit
signature per group is stored when the weights are known good:

* bit 1: bit 7 of ``M`` wrapped to 8 bits (``M mod 256``): a flip of one word's MSB moves ``M``
  by 128 and always toggles it;
* bit 0: the parity of the number of negative terms ``k_i * w_i``: a sign flip of one word
  toggles it.

At check time the signatures are recomputed and compared; a mismatching group is flagged, and
recovery sets every weight of a flagged group to zero (the paper's "recovery by zeroing"),
returned as an ordinary stuck-at-0 :class:`~faultlab.FaultMap` so ``inject`` applies and undoes
it. Storage: 2 bits per ``group`` words (0.031 extra bits per weight bit at ``group=8``).
Our choice of the two signature bits follows the description of the reference code's
``check_modules.py`` in the notes; the exact bit tricks of that code were not read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from faultlab._attack import attackable_layers
from faultlab._faults import KINDS, FaultMap
from hwlab.errors import check, check_int

__all__ = ["Radar", "radar"]


@dataclass(frozen=True, eq=False)
class Radar:
    """Golden RADAR signatures of a model's int8 layers (build it with :func:`radar`)."""

    group: int  # words per checksum group (the paper's G; its CIFAR scripts use 8)
    names: tuple[str, ...]  # the protected int8 weight parameters
    perms: tuple[np.ndarray, ...]  # per layer: the secret permutation of its flat words
    keys: tuple[np.ndarray, ...]  # per layer: the secret +1 / -1 key of each permuted word
    golden: tuple[np.ndarray, ...]  # per layer: the 2-bit signature (uint8) of each group

    @property
    def overhead(self) -> float:
        """Extra stored bits per weight bit: 2 bits per ``group`` 8-bit words."""
        return 2 / (8 * self.group)

    def flagged(self, model: nn.Module) -> dict[str, np.ndarray]:
        """``{parameter: sorted indices of the groups whose signature changed}``."""
        params = dict(model.named_parameters())
        out = {}
        for n, perm, key, gold in zip(self.names, self.perms, self.keys, self.golden):
            check(n in params, "model", "Radar.flagged", f"the protected model (no {n!r})",
                  type(model).__name__)
            out[n] = np.flatnonzero(_signatures(params[n], perm, key, self.group) != gold)
        return out

    def detected(self, model: nn.Module, fmap: FaultMap) -> float:
        """Share of ``fmap``'s entries on protected words whose group is flagged, with the
        map injected (1.0 for a map without such entries)."""
        from faultlab._inject import inject

        with inject(model, fmap):
            flagged = self.flagged(model)
        hits = total = 0
        for n, perm in zip(self.names, self.perms):
            if n not in fmap.names:
                continue
            sel = fmap.param == fmap.names.index(n)
            position = np.argsort(perm)[fmap.index[sel]]  # where each word went
            groups = position // self.group
            hits += int(np.isin(groups, flagged[n]).sum())
            total += int(sel.sum())
        return hits / total if total else 1.0

    def recovery(self, model: nn.Module) -> FaultMap:
        """Stuck-at-0 on every bit of every word of the flagged groups: the zeroed weights."""
        flagged = self.flagged(model)
        names = [p for p, _ in model.named_parameters()]
        dtypes = [str(t.dtype).replace("torch.", "") for _, t in model.named_parameters()]
        param, index = [], []
        for n, perm in zip(self.names, self.perms):
            words = (flagged[n][:, None] * self.group + np.arange(self.group)).reshape(-1)
            words = np.sort(perm[words[words < perm.size]])
            param.append(np.full(words.size, names.index(n)))
            index.append(words)
        p = np.repeat(np.concatenate(param), 8).astype(np.int32)
        i = np.repeat(np.concatenate(index), 8).astype(np.int64)
        b = np.tile(np.arange(8, dtype=np.uint8), p.size // 8)
        order = np.lexsort((b, i, p))
        return FaultMap(tuple(names), tuple(dtypes), p[order], i[order], b[order],
                        np.full(p.size, KINDS.index("stuck0"), np.int8), 0, None,
                        {"radar_groups": int(sum(len(v) for v in flagged.values()))})


def _signatures(w: torch.Tensor, perm: np.ndarray, key: np.ndarray, group: int) -> np.ndarray:
    words = w.detach().reshape(-1).cpu().numpy().astype(np.int64)[perm] * key  # signed terms
    pad = (-words.size) % group
    terms = np.concatenate([words, np.zeros(pad, np.int64)]).reshape(-1, group)
    wrapped = terms.sum(1) & 0xFF  # M mod 256
    negatives = (terms < 0).sum(1) & 1
    return ((wrapped >> 7) << 1 | negatives).astype(np.uint8)


def radar(model: nn.Module, group: int = 8, seed: int = 0, layers=None) -> Radar:
    """The golden RADAR signatures of ``model``'s int8 layers (known-good weights).

    ``group``: words per checksum group; ``seed``: the secret permutation and keys; ``layers``:
    int8 module names (default all)."""
    c = "radar"
    group = check_int(group, "group", c, minimum=1)
    seed = check_int(seed, "seed", c, minimum=0)
    targets = attackable_layers(model, layers, c)
    from faultlab._quant import _Int8Weight

    check(all(isinstance(m, _Int8Weight) for m in targets.values()), "model", c,
          "a model with faultlab.quantize_int8 layers (signed words)", type(model).__name__)
    rng = np.random.default_rng([seed, 0x726164])  # "rad": the secret's own stream
    names, perms, keys, golden = [], [], [], []
    for n, m in targets.items():
        size = m.weight.numel()
        perm = rng.permutation(size)
        key = np.where(rng.permutation(size) % 2 == 0, 1, -1)  # half of each sign
        names.append(n)
        perms.append(perm)
        keys.append(key)
        golden.append(_signatures(m.weight, perm, key, group))
    return Radar(group, tuple(names), tuple(perms), tuple(keys), tuple(golden))
