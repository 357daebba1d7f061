"""Prefix-activation caching on ``hwlab.graph`` cut points, for any traceable model.

Faults in the weights of some layers cannot change what the network computes before the first
node that reads them. ``PrefixEvaluator`` traces the model once (``hwlab.graph.trace``) and, for
the faulty layers, takes the latest cut point before that node (``ModelGraph.cut_before``): one
tensor there carries everything the rest of the network needs. Its fault-free value is computed
once for the evaluation set (batch by batch, and each batch kept); per fault map only the segment
after the cut runs (``ModelGraph.segment``). Same batches, same operations in the same order, so
the logits are bit-identical to ``model(x)`` batch by batch. When the segment may write its input
in place (``ModelGraph.mutates_input``) the cached value is cloned before each run.

A model fx cannot trace is evaluated by full inference: ``PrefixEvaluator.cached`` is False,
``fallback`` says why, and a warning is logged (never silently). The cache assumes the layers
before the cut do not change while it is used; callers build a new evaluator (or call
:meth:`PrefixEvaluator.clear`) after changing them.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

import hwlab.graph as hg
from hwlab.errors import HwlabError, check, fail

__all__ = ["PrefixEvaluator", "as_xy", "iter_batches"]

logger = logging.getLogger(__name__)


class PrefixEvaluator:
    """Accuracy of ``model`` on ``(x, y)`` in batches, reusing fault-free prefix activations.

    ``enabled=False`` always runs full inference. ``graph``: a ``hwlab.graph.ModelGraph`` of
    ``model`` to reuse (else the model is traced here, with ``leaf_modules``).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
                 enabled: bool = True, graph: hg.ModelGraph | None = None, leaf_modules=()):
        check(len(x) > 0, "data", "PrefixEvaluator", "a non-empty set of samples", len(x))
        self.model = model
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.x = x.to(self.device)  # N x C x H x W
        self.y = y.to(self.device)  # N
        self.batch_size = int(batch_size)
        self.fallback: str | None = None  # why prefix caching is off although enabled
        self.graph = graph if enabled else None
        if enabled and graph is None:
            try:
                self.graph = hg.trace(model, leaf_modules=leaf_modules)
            except HwlabError as exc:
                self.fallback = str(exc)
                logger.warning("prefix caching is off, every evaluation runs the whole model: %s",
                               exc)
        self._cuts = {c.index: c for c in self.graph.cuts} if self.graph is not None else {}
        self._cache: dict[int, list[torch.Tensor]] = {}  # cut index -> per-batch inputs
        self._tails: dict[int, tuple] = {}  # cut index -> (segment after it, clone input?)

    @property
    def cached(self) -> bool:
        """True when prefix caching is active (enabled and the model traced)."""
        return self.graph is not None

    def __len__(self) -> int:
        return len(self.y)

    def clear(self) -> None:
        self._cache.clear()

    def start_index(self, names) -> int:
        """Where evaluation may start when faults sit in the modules/parameters ``names``.

        The graph position of the latest cut point before the first node reading any of them
        (``ModelGraph.cut_before``), or 0: run from the input (no such cut, ``names`` None, or
        caching off). Names are dotted module or parameter names (``"layer4.1.conv2"``,
        ``"fc.weight"``).
        """
        if self.graph is None or names is None:
            return 0
        names = [names] if isinstance(names, str) else list(names)
        known = {n for n, _ in self.model.named_modules()} | {
            n for n, _ in self.model.named_parameters()} | {n for n, _ in self.model.named_buffers()}
        for name in names:
            check(isinstance(name, str) and name in known, "layers",
                  "PrefixEvaluator.start_index", "module or parameter names of the model", name)
        cut = self.graph.cut_before(names)
        return 0 if cut is None else cut.index

    def _cut(self, start: int) -> hg.Cut:
        if start not in self._cuts:
            raise fail("start", "PrefixEvaluator.logits",
                       "0 or a value returned by start_index", start)
        return self._cuts[start]

    @torch.no_grad()
    def _inputs(self, start: int) -> list[torch.Tensor]:
        if start not in self._cache:
            head = self.graph.segment(None, self._cut(start))
            self._cache[start] = [head(self.x[lo: lo + self.batch_size])  # B x ... at the cut
                                  for lo in range(0, len(self.x), self.batch_size)]
        return self._cache[start]

    def _tail(self, start: int) -> tuple:
        if start not in self._tails:
            seg = self.graph.segment(self._cut(start))
            self._tails[start] = (seg, self.graph.mutates_input(seg))
        return self._tails[start]

    @torch.no_grad()
    def logits(self, start: int = 0) -> torch.Tensor:
        """Logits of the whole evaluation set, running only what follows cut ``start``.

        ``start=0`` (or caching off) runs ``model`` itself. The model runs in whatever mode it
        is in; callers put it in eval mode first.
        """
        if self.graph is None or start == 0:
            outs = [self.model(self.x[lo: lo + self.batch_size])
                    for lo in range(0, len(self.x), self.batch_size)]
            return torch.cat(outs)  # N x classes
        tail, clone = self._tail(start)
        outs = [tail(h.clone() if clone else h) for h in self._inputs(start)]
        return torch.cat(outs)  # N x classes

    def accuracy(self, start: int = 0) -> float:
        """Top-1 accuracy in [0, 1] (NaN logits count as whatever ``argmax`` picks)."""
        pred = self.logits(start).argmax(dim=1)  # N
        return float((pred == self.y).float().mean())


def as_xy(data, caller: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors from a Split, an ``(x, y)`` pair, a DataLoader or an iterable of
    ``(x, y)`` batches, validated (``hwlab.data.as_xy``; kept here for faultlab's importers).

    ``limit`` keeps at most that many samples: a stratified seeded subset for a Split
    (``Split.subset(limit)``), the first ``limit`` otherwise.
    """
    from hwlab.data import as_xy as _as_xy

    return _as_xy(data, caller, limit)


def iter_batches(data, batch_size: int, caller: str):
    """Validated ``(x, y)`` batches of ``data`` (``hwlab.data.iter_batches``), streamed."""
    from hwlab.data import iter_batches as _iter

    return _iter(data, batch_size, caller)
