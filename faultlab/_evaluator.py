"""A campaign's evaluation engine: each trial as cheaply as its faults allow.

:class:`Evaluator` evaluates one trial (in the campaign's process or in a worker):

* fault dropping: a map that changes no stored bit (empty at a low rate, or stuck-at bits that
  already hold the stuck value) gives the fault-free result without inference;
* delayed start: when all faulty parameters are read only after a cut point of the traced graph
  (:func:`hwlab.graph.trace`), the fault-free activation at the last cut point before the first
  faulty layer is cached (per batch, within ``cache_bytes``) and only the rest of the network
  runs. The segments run the same operations on the same batches, so the metrics are identical
  to full inference (tested); ``delayed_start=False`` always runs the whole model.

The data and the fault-free pass it starts from are :mod:`faultlab._campaign_data`'s.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from faultlab._campaign_data import CampaignData, Clean
from hwlab.errors import check
from hwlab.metrics import MetricAccumulator

__all__ = ["Evaluator"]

log = logging.getLogger(__name__)


class Evaluator:
    """Evaluates ``model`` on ``data`` from the input or from a cached cut point.

    The one prefix cache of faultlab: campaign trials and vulnerability cells (through
    :meth:`run`) and FT-ClipAct's threshold search (through :meth:`cut_before`, :meth:`warm`
    and :meth:`logits`) use it. ``clean``: the fault-free pass of :func:`prepare` (None when
    only :meth:`logits` is used). ``leaf_modules``: submodules the trace keeps opaque (see
    :func:`hwlab.graph.trace`). ``graph``: a ``hwlab.graph.ModelGraph`` of ``model`` to reuse
    (else it is traced on first need). A model fx cannot trace runs whole: :attr:`fallback`
    says why and a warning is logged (never silently).
    """

    def __init__(self, model: nn.Module, data: CampaignData, clean: Clean | None, metrics,
                 delayed_start: bool, cache_bytes: int, leaf_modules=(), graph=None):
        self.model, self.data, self.clean, self.metrics = model, data, clean, metrics
        self.delayed_start, self.cache_bytes = delayed_start, cache_bytes
        self.leaf_modules = tuple(leaf_modules or ())
        self.needs_clean = any(m.needs_clean_logits or m.needs_clean_top1 for m in metrics)
        self.fallback: str | None = None  # why the model runs whole although delayed_start
        # (ModelGraph, {param: Cut or None}) once traced; False if untraceable
        self._graph = None if graph is None else self._cuts_of(graph)
        self._acts: dict[str, list] | None = None  # cut node -> [(activation, y)] per batch
        self._segments: dict[str, tuple] = {}  # cut node -> (suffix module, mutates input)
        self.views = None  # faultlab._words.model_views(model), kept by the first trial
        self.points: dict = {}  # id(spec) -> faultlab._trial._Point (run_trial's per-point set-up)

    @property
    def cached(self) -> bool:
        """True when cut points can be used (``delayed_start`` and the model traced)."""
        if self.delayed_start and self._graph is None:
            self._graph = self._trace()
        return self.delayed_start and bool(self._graph)

    def cut_before(self, names, caller: str = "Evaluator.cut_before") -> str | None:
        """The cut node evaluation may start from when ``names`` change (None: the input).

        ``names``: dotted module, parameter or buffer names (``"layer4.1.conv2"``,
        ``"fc.weight"``); the latest cut point before the first node that reads any of them
        (``ModelGraph.cut_before``). None with ``delayed_start=False`` or an untraceable model.
        """
        names = [names] if isinstance(names, str) else list(names)
        known = {n for n, _ in self.model.named_modules()} | {
            n for n, _ in self.model.named_parameters()} | {n for n, _ in self.model.named_buffers()}
        for name in names:
            check(isinstance(name, str) and name in known, "layers", caller,
                  "module or parameter names of the model", name)
        if not names or not self.cached:
            return None
        cut = self._graph[0].cut_before(names)
        return None if cut is None else cut.node

    @torch.no_grad()
    def logits(self, cut: str | None = None) -> torch.Tensor:
        """Logits of the whole data set, running only what follows ``cut`` when it is cached.

        Call :meth:`warm` (with the model in the state the cache must hold) first; an uncached
        ``cut`` starts from the latest cached cut before it, or from the input. The model runs
        in whatever mode it is in.
        """
        if cut is not None and self.cached:
            check(cut in {c.node for c in self._graph[0].cuts}, "cut", "Evaluator.logits",
                  "None or a cut node returned by cut_before", cut)
        cut, acts = self._activations(cut) if cut is not None else (None, None)
        if acts is None:
            outs = [self.model(x) for x, _ in self.data.batches()]
        else:
            suffix, mutates = self._segments[cut]
            outs = [suffix(h.clone() if mutates else h) for h, _ in acts]
        return torch.cat(outs)  # N x classes

    # -- delayed start ------------------------------------------------------------------------
    def start_cut(self, params) -> str | None:
        """The cut node the trial can start from (None: the input), for faulty ``params``."""
        if not self.delayed_start or not params:
            return None
        if self._graph is None:
            self._graph = self._trace()
        if self._graph is False:
            return None
        _, cut_of = self._graph
        best = None
        for p in params:
            c = cut_of.get(p)
            if c is None:
                return None
            if best is None or c.index < best.index:
                best = c
        return best.node

    def _trace(self):
        import hwlab.graph as hg

        try:
            graph = hg.trace(self.model, leaf_modules=self.leaf_modules)
        except Exception as exc:  # noqa: BLE001 - full inference is always correct
            self.fallback = str(exc)
            log.warning("delayed start off for %s (prefix caching is off, every evaluation "
                        "runs the whole model): %s", type(self.model).__name__, exc)
            return False
        return self._cuts_of(graph)

    def _cuts_of(self, graph):
        return graph, {name: graph.cut_before([name]) for name, _ in self.model.named_parameters()}

    def warm(self, cuts=None) -> None:
        """Trace the model and fill the cut caches once, while the model is FAULT-FREE.

        Call before injecting a trial's faults (``run_trial`` does); a no-op once done or with
        ``delayed_start=False``. ``cuts``: the cut nodes to cache (default: every cut a faulty
        parameter can start from); call :meth:`clear_activations` first to refill.
        """
        if not self.delayed_start or self._acts is not None:
            return
        if self._graph is None:
            self._graph = self._trace()
        if self._graph is False:
            self._acts = {}
            return
        self._fill(None if cuts is None else set(cuts) - {None})

    def _fill(self, only=None) -> None:
        """Cache the fault-free activations at the cuts trials start from, in one chained pass.

        A cut's value is how many weight bytes make trials start there (how often a random
        fault does); cuts are kept from the most used down while all of them fit in
        ``cache_bytes`` (sizes measured on the first batch). The segments between consecutive
        cuts are chained, so the pass costs one inference; an input a segment writes in place
        is cloned first when it is cached.
        """
        graph, cut_of = self._graph
        params = dict(self.model.named_parameters())
        used: dict[str, int] = {}
        by_node = {}
        for name, c in cut_of.items():
            if c is not None:
                used[c.node] = used.get(c.node, 0) + params[name].numel() * \
                    params[name].element_size()
                by_node[c.node] = c
        if only is not None:  # the requested cuts only (any cut point of the graph)
            by_node = {c.node: c for c in graph.cuts if c.node in only}
            used = {node: used.get(node, 0) for node in by_node}
        cuts = sorted(by_node.values(), key=lambda c: c.index)
        self._acts = {}
        if not cuts:
            return
        segs = graph.split(cuts)[:-1]  # input -> cut 1 -> ... -> last cut
        mutates = [graph.mutates_input(seg) for seg in segs]
        keep, last, n = None, -1, max(self._count(), 1)
        with torch.no_grad():
            for x, y in self.data.batches():
                h, values = x, []
                for i, seg in enumerate(segs if keep is None else segs[:last + 1]):
                    # the input (the user's data) and cached values are never written in place
                    cached = keep is None or i == 0 or cuts[i - 1].node in keep
                    h = seg(h.clone() if mutates[i] and cached else h)  # B x ...
                    values.append(h)
                if keep is None:  # first batch: choose what fits, most used first
                    per = [v.numel() * v.element_size() / len(y) for v in values]
                    keep, total = set(), 8.0 * n  # the labels of a stream are cached too
                    for i in sorted(range(len(cuts)), key=lambda i: -used[cuts[i].node]):
                        if total + per[i] * n <= self.cache_bytes:
                            keep.add(cuts[i].node)
                            total += per[i] * n
                    if not keep:
                        log.info("no cut activations fit in cache_bytes=%d: full inference",
                                 self.cache_bytes)
                        return
                    last = max(i for i, c in enumerate(cuts) if c.node in keep)
                    self._acts = {node: [] for node in keep}
                for i, v in enumerate(values[:last + 1]):
                    if cuts[i].node in keep:
                        self._acts[cuts[i].node].append((v, y))

    def _count(self) -> int:
        if self.clean is not None:
            return self.clean.n
        if self.data.memory is not None:
            return sum(len(y) for _, y in self.data.memory)
        return sum(len(y) for _, y in self.data.batches())

    def _activations(self, cut: str):
        """``(cut, per-batch (activation, labels))`` to start from: ``cut`` if cached, else the
        latest cached cut before it, else ``(None, None)`` (full inference)."""
        if not self._acts:  # never warmed (or nothing fits): full inference
            return None, None
        if cut not in self._acts:
            index = {c.node: c.index for c in self._graph[0].cuts}
            earlier = [c for c in self._acts if index[c] < index[cut]]
            if not earlier:
                return None, None
            cut = max(earlier, key=index.get)
        if cut not in self._segments:
            suffix = self._graph[0].segment(cut, None)
            self._segments[cut] = (suffix, self._graph[0].mutates_input(suffix))
        return cut, self._acts[cut]

    def clear_activations(self) -> None:
        """Drop the cached cut activations (they are computed again when next needed)."""
        self._acts = None

    # -- one trial ------------------------------------------------------------------------------
    def run(self, target: nn.Module, changed: int | None, params=(), lift=None) -> tuple:
        """Metric values and denominators of ``target`` (the model with this trial's faults).

        ``changed``: bits the weight faults changed (0 = drop: the fault-free result), None for
        activation faults (always evaluated). ``params``: the faulty parameter names (for the
        delayed start). ``lift``: a context manager factory that removes the weight faults for a
        moment (to recompute fault-free logits when they are not cached).
        """
        if self.delayed_start and changed == 0:
            return self.clean.values, self.clean.counts, 0.0
        recompute = self.needs_clean and self.clean.logits is None and self.clean.top1 is None
        cut = self.start_cut(params) if changed is not None and not recompute else None
        cut, acts = self._activations(cut) if cut is not None else (None, None)
        acc = MetricAccumulator(self.metrics)
        t0 = time.perf_counter()
        with torch.no_grad():
            if acts is not None:
                suffix, mutates = self._segments[cut]
                for i, (h, y) in enumerate(acts):
                    logits = suffix(h.clone() if mutates else h)  # B x C
                    self._update(acc, i, None, logits, y, lift)
            else:
                for i, (x, y) in enumerate(self.data.batches()):
                    logits = target(x)  # B x C
                    self._update(acc, i, x, logits, y, lift)
        return acc.result(), acc.denominators(), 1e3 * (time.perf_counter() - t0)

    def _update(self, acc, i, x, logits, y, lift) -> None:
        if not self.needs_clean:
            acc.update(logits, y)
            return
        c = self.clean
        if c.logits is not None:
            acc.update(logits, y, clean_logits=c.logits[i])
        elif c.top1 is not None:
            acc.update(logits, y, clean_top1=c.top1[i])
        else:  # not cached (too large): recompute this batch (never on the delayed path)
            if lift is None:
                clean = self.model(x)  # activation faults live in a copy: the model is clean
            else:
                with lift():
                    clean = self.model(x)
            acc.update(logits, y, clean_logits=clean)
