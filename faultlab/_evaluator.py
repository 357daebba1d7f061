"""A campaign's evaluation engine: one fault-free pass, then each trial as cheaply as its faults allow.

:func:`prepare` runs the model once over the data, before any run is opened: it checks that the
model accepts the data (one clear error naming both shapes), validates the labels against the
model's outputs, fingerprints the data, measures the fault-free metrics and keeps the fault-free
logits per batch (or only their top-1 class, when no user metric needs the logits) if they fit in
``cache_bytes``; otherwise each trial recomputes them batch by batch (the weight faults are lifted
for that batch and put back, which costs the faults, not a model copy).

:class:`Evaluator` evaluates one trial (in the campaign's process or in a worker):

* fault dropping: a map that changes no stored bit (empty at a low rate, or stuck-at bits that
  already hold the stuck value) gives the fault-free result without inference;
* delayed start: when all faulty parameters are read only after a cut point of the traced graph
  (:func:`hwlab.graph.trace`), the fault-free activation at the last cut point before the first
  faulty layer is cached (per batch, within ``cache_bytes``) and only the rest of the network
  runs. The segments run the same operations on the same batches, so the metrics are identical
  to full inference (tested); ``delayed_start=False`` always runs the whole model.

Memory: in-memory data is used through views; a DataLoader is read batch by batch, so memory is
one batch plus the model plus whatever the caches hold (bounded by ``cache_bytes`` each).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

import torch
from torch import nn

from hwlab.errors import check, fail
from hwlab.metrics import MetricAccumulator

__all__ = ["CACHE_BYTES", "CampaignData", "Evaluator", "prepare"]

log = logging.getLogger(__name__)

CACHE_BYTES = 256 * 2**20  # per cache (clean logits; delayed-start activations): fits a laptop


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs are cast to: the model's half / bfloat16 dtype, else float32."""
    for p in model.parameters():
        if p.dtype in (torch.float16, torch.bfloat16):
            return p.dtype
    return torch.float32


class CampaignData:
    """The evaluation data: in-memory batches (views, cast once) or a re-iterable stream."""

    def __init__(self, data, batch_size: int, caller: str, model: nn.Module):
        from hwlab.data import Split, iter_batches

        self.caller, self.batch_size = caller, int(batch_size)
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.dtype = input_dtype(model)
        self.name = data.name or None if isinstance(data, Split) else None
        in_memory = isinstance(data, Split) or (
            isinstance(data, (tuple, list)) and len(data) == 2
            and all(hasattr(t, "shape") for t in data))
        self.stream = None if in_memory else data
        self.memory = None
        if in_memory:
            x, y = next(iter_batches(data, 2**62, caller))  # validated once, as one view
            x = x.to(device=self.device, dtype=self.dtype)
            y = y.to(self.device)
            self.memory = [(x[i:i + batch_size], y[i:i + batch_size])  # views
                           for i in range(0, len(y), batch_size)]
        else:
            check(iter(data) is not data, "data", caller, "a Split, an (x, y) pair, a DataLoader "
                  "or another re-iterable of (x, y) batches (each trial reads it again)",
                  type(data).__name__ + " (a one-shot iterator)")
            sampler = getattr(data, "sampler", None)
            check(type(sampler).__name__ != "RandomSampler", "data", caller,
                  "a DataLoader without shuffling (every trial must see the same batches)",
                  "DataLoader(shuffle=True)")
        self.checksums: list[tuple] | None = None  # per-batch label checksums of a stream

    def batches(self):
        """``(x, y)`` batches on the model's device and input dtype."""
        if self.memory is not None:
            yield from self.memory
            return
        from hwlab.data import iter_batches

        for i, (x, y) in enumerate(iter_batches(self.stream, self.batch_size, self.caller)):
            y = y.to(self.device)
            if self.checksums is not None:
                got = _checksum(y)
                ok = i < len(self.checksums) and self.checksums[i] == got
                check(ok, "data", self.caller, "an iterable that yields the same batches on "
                      "every pass (each trial reads it again)", f"a different batch {i}")
            yield x.to(device=self.device, dtype=self.dtype), y


def _checksum(y: torch.Tensor) -> tuple:
    """Cheap order-sensitive label checksum (catches a shuffling or changing stream)."""
    w = torch.arange(1, len(y) + 1, device=y.device)
    return len(y), int(y.sum()), int((y * w).sum())


class Clean:
    """The fault-free pass: metric values, denominators and (if they fit) per-batch outputs."""

    def __init__(self, values, counts, logits, top1, fingerprint, n, latency_ms, in_shape):
        self.values, self.counts, self.in_shape = values, counts, in_shape
        self.logits, self.top1 = logits, top1  # lists per batch, or None (recompute)
        self.fingerprint, self.n, self.latency_ms = fingerprint, n, latency_ms


def prepare(model: nn.Module, data: CampaignData, metrics, cache_bytes: int,
            model_name: str | None = None, full: bool = True) -> Clean:
    """Run the fault-free model once over ``data`` (see the module docstring).

    ``full=False`` (nothing needs the fault-free results: no clean row, no metric comparing
    with the fault-free model, no fault dropping) runs the model on the first two samples only
    (the shape check) and still reads every batch for the label check and the fingerprint; the
    fault-free values are then NaN.
    """
    caller = data.caller
    keep_logits = any(m.needs_clean_logits for m in metrics)
    keep_top1 = not keep_logits and any(m.needs_clean_top1 for m in metrics)
    acc = MetricAccumulator(metrics)
    h = hashlib.sha256()
    logits_list, top1_list, sums, kept, n, seconds = [], [], [], 0, 0, 0.0
    what = model_name or type(model).__name__
    with torch.no_grad():
        for i, (x, y) in enumerate(data.batches()):
            t0 = time.perf_counter()
            if i == 0:
                try:  # without ``full`` two samples are enough for the shape check
                    logits = model(x if full else x[:2])  # B x C
                except Exception as exc:
                    raise fail("data", caller, f"inputs that model {what} accepts (it raised "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                               f"inputs of shape {tuple(x.shape)}") from exc
                rows = x.shape[0] if full else min(2, x.shape[0])
                ok = isinstance(logits, torch.Tensor) and logits.dim() == 2 \
                    and logits.shape[0] == rows
                check(ok, "model", caller, f"a classifier returning logits of shape "
                      f"{rows} x classes for inputs of shape {(rows, *x.shape[1:])}",
                      f"{what} returning {_shape(logits)}")
                classes, in_shape = logits.shape[1], tuple(x.shape[1:])
            elif full:
                logits = model(x)
            seconds += time.perf_counter() - t0
            lo, hi = int(y.min()), int(y.max())
            check(lo >= 0 and hi < classes, "data", caller,
                  f"labels in [0, {classes}) (model {what} has {classes} outputs)",
                  f"labels from {lo} to {hi}")
            if full:
                acc.update(logits, y, logits)
            h.update(f"{x.dtype}|{tuple(x.shape)}|".encode())
            h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
            h.update(y.detach().cpu().contiguous().numpy().tobytes())
            sums.append(_checksum(y))
            n += len(y)
            if keep_logits or keep_top1:
                item = logits if keep_logits else logits.argmax(dim=1).to(torch.int32)
                kept += item.numel() * item.element_size()
                (logits_list if keep_logits else top1_list).append(item)
                if kept > cache_bytes:  # too large: every trial recomputes them per batch
                    keep_logits = keep_top1 = False
                    logits_list, top1_list = [], []
                    log.info("fault-free logits exceed cache_bytes=%d: recomputed per trial",
                             cache_bytes)
    if data.stream is not None:
        data.checksums = sums
    values = acc.result() if full else {m.name: math.nan for m in metrics}
    return Clean(values, acc.denominators(), logits_list if keep_logits else None,
                 top1_list if keep_top1 else None, h.hexdigest()[:16], n, 1e3 * seconds,
                 in_shape)


def _shape(t) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


class Evaluator:
    """Evaluates ``model`` on ``data`` from the input or from a cached cut point.

    The one prefix cache of faultlab: campaign trials and vulnerability cells (through
    :meth:`run`) and FT-ClipAct's threshold search (through :meth:`cut_before`, :meth:`warm`
    and :meth:`logits`) use it. ``clean``: the fault-free pass of :func:`prepare` (None when
    only :meth:`logits` is used). ``graph``: a ``hwlab.graph.ModelGraph`` of ``model`` to reuse
    (else it is traced on first need). A model fx cannot trace runs whole: :attr:`fallback`
    says why and a warning is logged (never silently).
    """

    def __init__(self, model: nn.Module, data: CampaignData, clean: Clean | None, metrics,
                 delayed_start: bool, cache_bytes: int, graph=None):
        self.model, self.data, self.clean, self.metrics = model, data, clean, metrics
        self.delayed_start, self.cache_bytes = delayed_start, cache_bytes
        self.needs_clean = any(m.needs_clean_logits or m.needs_clean_top1 for m in metrics)
        self.fallback: str | None = None  # why the model runs whole although delayed_start
        # (ModelGraph, {param: Cut or None}) once traced; False if untraceable
        self._graph = None if graph is None else self._cuts_of(graph)
        self._acts: dict[str, list] | None = None  # cut node -> [(activation, y)] per batch
        self._segments: dict[str, tuple] = {}  # cut node -> (suffix module, mutates input)
        self.views = None  # faultlab._inject.model_views(model), kept by the first trial

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
            graph = hg.trace(self.model)
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
