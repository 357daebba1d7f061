"""One campaign trial: draw the faults from the trial's seed, inject, evaluate, restore.

Runs in the caller's process or in an executor's worker. The model, the data and the fault-free
pass travel once per worker: the campaign shares them with ``hwlab.executors.share(executor,
parts, setup=build_evaluator)`` (a file read once per process-pool worker, one broadcast
``scatter`` on Dask, nothing for the serial executor) and every trial is called as
``run_trial(evaluator, trial)`` with that worker's :class:`~faultlab._evaluator.Evaluator` (and
its caches), so a :class:`Trial` is a few numbers and a trial costs its faults and one
evaluation, never a model copy (except for activation faults: pytorchfi copies the model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from faultlab._campaign_data import input_dtype
from faultlab._evaluator import Evaluator
from faultlab._faults import FAULT_MODELS, BitFlip, StuckAt
from faultlab._inject import apply_fault_map, restore
from faultlab._neuron import NeuronFault, neuron_faults
from faultlab._plain import sampler
from faultlab._sample import _sample_faults
from faultlab._words import model_views, seed32
from faultlab.systolic._faults import PEFault
from hwlab.seeds import _derive_seed, derive_seed

__all__ = ["Trial", "build_evaluator", "input_dtype", "map_extra", "map_seed", "run_trial"]


def build_evaluator(parts: tuple) -> Evaluator:
    """The ``setup`` of the campaign's share: ``parts`` = ``(model, data, clean, metrics,
    delayed_start, cache_bytes, leaf_modules)``; once per worker, with the Numba kernels loaded before any
    trial is timed."""
    from faultlab._workers import warm_kernels

    ev = Evaluator(*parts)
    warm_kernels()
    return ev


@dataclass(frozen=True)
class Trial:
    """What one trial adds to the shared evaluator (picklable, small); ``spec`` is a tuple of
    fault models (empty = the fault-free row). A study's plan is a mapping key -> Trial.

    The map of the ``j``-th weight fault model is drawn with ``map_seed`` (``j = 0``; later
    ones derive from it) or, when None, ``derive_seed(seed, "weights<j>")``: a study whose
    maps are paired across variants or nested across rates gives the seed it derives itself.
    A point of PE faults alone draws its PE map with ``map_seed`` too.
    ``columns`` / ``extra`` are (name, value) pairs the row gets as they are (a study's
    ``variant``, its own ``fault_model`` label, ``memory_bytes``; ``extra`` fields such as a
    voltage); ``fingerprint`` adds ``extra["map"]``, the hash of the first weight map (of the
    PE map when there is none).
    """

    spec: tuple
    trial: int
    seed: int  # derived from the campaign seed and the key
    layers: tuple[str, ...] | None = None
    include_bias: bool = False
    include_norm: bool = False
    batch_size: int = 512
    map_seed: int | None = None  # the first weight map's seed, when the study derives it
    columns: tuple = ()  # (column, value) pairs set on the row
    extra: tuple = ()  # (field, value) pairs added to the row's extra
    fingerprint: bool = False  # extra["map"] = the first weight map's fingerprint


def map_seed(item: Trial, j: int) -> int:
    """The seed of the ``j``-th weight fault map of ``item`` (see :class:`Trial`)."""
    if item.map_seed is None:
        return _derive_seed(item.seed, f"weights{j}")  # item.seed: an int from the plan
    return item.map_seed if j == 0 else _derive_seed(item.map_seed, f"weights{j}")


def map_extra(item: Trial, fmaps) -> dict:
    """The row's extra fields that come from the trial's weight maps (fingerprint, ECC word
    counts, what a map's own fault model reports)."""
    extra = {}
    if item.fingerprint and fmaps:
        extra["map"] = fmaps[0].fingerprint()
    if any(fm.extra for fm in fmaps):  # faultlab.memory: ECC word counts, overhead
        from faultlab.memory._nested import merge_extra

        extra.update(merge_extra(fmaps))
    return extra


def _fault_rate(spec) -> float | None:
    rates = [getattr(f, "nominal_rate", f.rate) for f in spec  # asymmetric: the larger rate
             if isinstance(f, (*FAULT_MODELS, PEFault))
             and getattr(f, "nominal_rate", f.rate) is not None]
    if not spec:
        return 0.0  # the fault-free reference point
    return rates[0] if rates else None


class _Point:
    """What a trial needs of its point and not of its seed, prepared once per point and worker:
    the fault models by kind, the row's label and rate, a cached :class:`~faultlab._plain.Sampler`
    per weight fault model (None: drawn through ``_sample_faults``) and the static ``extra``."""

    __slots__ = ("extra", "item", "label", "neuron", "pe", "rate", "samplers", "weight")

    def __init__(self, ev: Evaluator, item: Trial):
        self.item = item  # holds the spec, so its id is not reused while this entry lives
        self.weight, self.neuron, self.pe = [], None, None
        for f in item.spec:
            if isinstance(f, FAULT_MODELS):
                self.weight.append(f)
            elif isinstance(f, NeuronFault):
                self.neuron = f
            else:
                self.pe = f
        self.label = "+".join(f.label for f in item.spec) or "none"
        self.rate = _fault_rate(item.spec)
        self.samplers = [sampler(ev.model, f, item.layers, item.include_bias, item.include_norm,
                                 "campaign", ev.views)
                         if self.neuron is None and type(f) in (BitFlip, StuckAt)
                         and not f.asymmetric else None for f in self.weight]
        self.extra = {}
        if self.weight:
            counts = [f.count for f in self.weight if f.count is not None]
            if counts:
                self.extra["count"] = int(np.sum(counts))
            bits = self.weight[0].bits
            self.extra["bits"] = list(bits) if bits is not None else None
        if self.neuron is not None:
            self.extra["neurons"] = self.neuron.count

    def same(self, item: Trial) -> bool:
        i = self.item
        return i.spec is item.spec and i.layers == item.layers and \
            i.include_bias == item.include_bias and i.include_norm == item.include_norm


def _point(ev: Evaluator, item: Trial) -> _Point:
    point = ev.points.get(id(item.spec))
    if point is None or not point.same(item):
        if len(ev.points) >= 256:  # a worker gets new spec objects with every chunk
            ev.points.clear()
        point = ev.points[id(item.spec)] = _Point(ev, item)
    return point


def run_trial(ev: Evaluator, item: Trial) -> dict:
    """Run one trial on ``ev`` and return its result row (without key / common columns)."""
    model = ev.model
    if not item.spec:  # the fault-free row: measured once, in prepare
        return _row(ev, item, "none", 0.0, ev.clean.values, ev.clean.counts,
                    ev.clean.latency_ms, {"n_faults": 0, "n_changed": 0, "inject_ms": 0.0})
    if ev.views is None:  # the campaign's model keeps its views (not changed during a campaign)
        ev.views = model_views(model)
    point = _point(ev, item)
    neuron, pe = point.neuron, point.pe
    pe_hooks = None
    if neuron is None and pe is None:
        ev.warm()  # cut caches are filled before any fault is injected
    t0 = time.perf_counter()
    target, inner, views = model, model, ev.views
    if neuron is not None:
        target = neuron_faults(model, neuron, ev.clean.in_shape, item.batch_size,
                               seed=seed32(derive_seed(item.seed, "neuron"), "campaign"))
        inner = target.corrupted  # same parameter names as the model
        views = model_views(inner) if point.weight else None
    touched, fmaps, n_faults, n_changed, eligible, params = [], [], 0, 0, 0, set()
    try:
        for j, fm in enumerate(point.weight):
            seed = map_seed(item, j)
            draw = point.samplers[j]
            fmap = draw.draw(fm, seed, "campaign") if draw is not None else _sample_faults(
                inner, fm, seed, item.layers, item.include_bias, item.include_norm, "campaign",
                views)
            fmaps.append(fmap)
            eligible = max(eligible, fmap.eligible_bits)
            if not len(fmap):
                continue
            recs = apply_fault_map(inner, fmap, "campaign", views)
            touched.extend(recs)
            n_faults += len(fmap)
            n_changed += sum(r.changed for r in recs)
            if ev.delayed_start:  # the faulty parameters decide where the trial may start
                params.update(fmap.names[i] for i in set(fmap.param.tolist()))
        if pe is not None:
            from faultlab.systolic._inject import PEHooks

            pe_seed = item.map_seed if item.map_seed is not None and not point.weight else \
                derive_seed(item.seed, "pe")  # a study's own PE map seed (nested fractions)
            pe_hooks = PEHooks(inner, pe, pe_seed)
            n_faults += len(pe_hooks.fmap)
        t1 = time.perf_counter()
        lift = None
        if neuron is None and ev.needs_clean and ev.clean.logits is None \
                and ev.clean.top1 is None:  # fault-free logits recomputed: lift the faults
            lift = _Lift(inner, fmaps, touched)
        lift = pe_hooks.lifter(lift) if pe is not None else lift
        values, counts, latency = ev.run(target, None if neuron or pe else n_changed, params,
                                         lift)
    finally:
        if pe_hooks is not None:
            pe_hooks.remove()
        if touched:
            with torch.no_grad():
                restore(touched)
    extra = {"n_faults": n_faults, "n_changed": n_changed, "inject_ms": 1e3 * (t1 - t0),
             **({"eligible_bits": eligible} if point.weight else {}), **point.extra,
             **map_extra(item, fmaps)}
    if pe is not None:
        if item.fingerprint and not fmaps:
            extra["map"] = pe_hooks.fmap.fingerprint()
        extra["pe_faults"] = len(pe_hooks.fmap)
        extra["faulty_pes"] = len(pe_hooks.fmap.pes)
        extra["array"] = pe.array.label
    return _row(ev, item, point.label, point.rate, values, counts, latency, extra)


def _row(ev: Evaluator, item: Trial, label: str, rate, values: dict, counts: dict,
         latency_ms: float, extra: dict) -> dict:
    extra["n_samples"] = ev.clean.n
    if "critical_sdc" in counts:
        extra["n_clean_correct"] = ev.clean.counts["critical_sdc"]
    extra.update(item.extra)
    row = {"module": "faultlab", "method": "fault-injection", "fault_model": label,
           "fault_rate": rate, "trial": item.trial, "seed": item.seed, "latency_ms": latency_ms,
           "extra": extra}
    row.update(values)
    row.update(item.columns)
    return row


class _Lift:
    """Lifts the trial's weight faults for a moment (``with lift():``), then puts them back.

    Built for every trial but used only when fault-free logits must be recomputed, so it is a
    plain object (no per-trial generator function)."""

    __slots__ = ("fmaps", "model", "touched")

    def __init__(self, model: nn.Module, fmaps, touched):
        self.model, self.fmaps, self.touched = model, fmaps, touched

    def __call__(self):
        return self

    def __enter__(self):
        with torch.no_grad():
            restore(self.touched)

    def __exit__(self, *exc):
        self.touched.clear()
        for fmap in self.fmaps:
            self.touched.extend(apply_fault_map(self.model, fmap, "campaign"))
        return False
