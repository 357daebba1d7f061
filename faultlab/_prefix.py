"""Prefix-activation caching: evaluate a model whose faults sit in one part of the network.

A fault in the weights of top-level child ``i`` of an ``nn.Sequential`` leaves ``children[:i]``
untouched, so their output on the evaluation set is the same for every fault map. ``PrefixEvaluator``
computes it once per start index (batch by batch, and keeps each batch) and then runs only
``children[i:]`` per fault map. The batches are the same ones full inference uses, so the logits
are bit-identical to ``model(x)`` batch by batch (the same kernels see the same shapes).

Models that are not ``nn.Sequential`` fall back to full inference (start index 0, nothing cached).
The cache assumes ``children[:i]`` do not change while it is used; the caller builds a new
evaluator (or calls :meth:`PrefixEvaluator.clear`) after changing them.
"""

from __future__ import annotations

import torch
from torch import nn

from hwlab.errors import check, fail


class PrefixEvaluator:
    """Accuracy of ``model`` on ``(x, y)`` in batches, reusing fault-free prefix activations."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
                 enabled: bool = True):
        check(len(x) > 0, "data", "PrefixEvaluator", "a non-empty set of samples", len(x))
        self.model = model
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.x = x.to(self.device)  # N x C x H x W
        self.y = y.to(self.device)  # N
        self.batch_size = int(batch_size)
        self.sequential = enabled and isinstance(model, nn.Sequential)
        self._cache: dict[int, list[torch.Tensor]] = {}  # start index -> per-batch inputs

    def __len__(self) -> int:
        return len(self.y)

    def clear(self) -> None:
        self._cache.clear()

    def start_index(self, names) -> int:
        """The first top-level child a fault in any of the modules/parameters ``names`` can reach.

        ``names`` are dotted module or parameter names (``"3"``, ``"3.weight"``, ``"7.conv1"``);
        ``None`` (the whole model) or a non-Sequential model gives 0.
        """
        if not self.sequential or names is None:
            return 0
        keys = list(self.model._modules)
        idx = []
        for name in names:
            head = str(name).split(".", 1)[0]
            check(head in keys, "layers", "PrefixEvaluator.start_index",
                  "names inside the model's top-level children", name)
            idx.append(keys.index(head))
        return min(idx, default=0)

    @torch.no_grad()
    def _inputs(self, start: int) -> list[torch.Tensor]:
        if start not in self._cache:
            children = list(self.model.children())[:start]
            batches = []
            for lo in range(0, len(self.x), self.batch_size):
                h = self.x[lo: lo + self.batch_size]  # B x C x H x W
                for child in children:
                    h = child(h)
                batches.append(h)
            self._cache[start] = batches
        return self._cache[start]

    @torch.no_grad()
    def logits(self, start: int = 0) -> torch.Tensor:
        """Logits of the whole evaluation set, running ``children[start:]`` on cached inputs.

        The model runs in whatever mode it is in; callers put it in eval mode first.
        """
        if not self.sequential or start == 0:
            outs = [self.model(self.x[lo: lo + self.batch_size])
                    for lo in range(0, len(self.x), self.batch_size)]
            return torch.cat(outs)  # N x classes
        children = list(self.model.children())[start:]
        outs = []
        for h in self._inputs(start):
            for child in children:
                h = child(h)
            outs.append(h)
        return torch.cat(outs)  # N x classes

    def accuracy(self, start: int = 0) -> float:
        """Top-1 accuracy in [0, 1] (NaN logits count as whatever ``argmax`` picks)."""
        pred = self.logits(start).argmax(dim=1)  # N
        return float((pred == self.y).float().mean())


def as_xy(data, caller: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors from a :class:`hwlab.data.Split` or an ``(x, y)`` pair, validated.

    ``limit`` keeps at most that many samples: a stratified seeded subset for a Split
    (``Split.subset(limit)``), the first ``limit`` for a pair.
    """
    if hasattr(data, "x") and hasattr(data, "y") and hasattr(data, "subset"):
        if limit is not None and limit < len(data):
            data = data.subset(limit)
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if limit is not None:
            x, y = x[:limit], y[:limit]
    else:
        raise fail("data", caller, "a hwlab.data.Split or an (x, y) pair", type(data).__name__)
    ok = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() >= 2
    check(ok and y.dim() == 1 and len(x) == len(y), "data", caller,
          "tensors x (N x ...) and y (N) of the same length",
          (tuple(getattr(x, "shape", ())), tuple(getattr(y, "shape", ()))))
    check(len(y) > 0, "data", caller, "a non-empty dataset", len(y))
    check(x.is_floating_point() and bool(torch.isfinite(x).all()), "data", caller,
          "finite floating-point inputs", "non-finite or integer x")
    return x, y
