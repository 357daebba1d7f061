"""Spiking-neuron faults: dead / saturated neurons, threshold drift and leak drift.

Fault models (SpikeFI, SpikingJET): a *dead* neuron never fires, a *saturated* neuron fires at
every step, a drifted neuron has its firing threshold ``theta`` or its membrane decay ``beta``
multiplied by ``scale``. Neurons are the elements of the membrane of every ``snntorch.Leaky``
module of a :class:`SpikingNet` (found with ``named_modules``, so any nesting works; converted
and directly trained nets alike), numbered per layer in row-major order of one sample's membrane.

* Stuck neurons: a forward hook on the Leaky module forces the spike output (0, or the graded
  spike value at every step); the stuck neuron's own membrane reaches nothing else.
* Drift: the layer's ``threshold`` / ``beta`` becomes a per-neuron tensor, faulty entries times
  ``scale``. snntorch clamps ``beta`` to [0, 1] (a leak drift above 1 does nothing to IF neurons);
  a drifted threshold also moves the initial membrane ``mem_init * threshold``.

``inject_neuron_faults`` works in place and restores exactly (original tensors put back, hooks
removed, also after an exception); ``with_neuron_faults`` returns a faulty copy.
"""

from __future__ import annotations

import copy
import hashlib
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import snntorch as snn
import torch
from torch import nn

from hwlab.errors import check, check_choice, fail

__all__ = ["NEURON_KINDS", "LeakDrift", "NeuronFaultMap", "NeuronStuck", "ThresholdDrift",
           "inject_neuron_faults", "neuron_layers", "neuron_shapes", "sample_neuron_faults",
           "with_neuron_faults"]

NEURON_KINDS = ("dead", "saturated", "threshold", "leak")


def _check_where(f, caller):
    given = [v is not None for v in (f.rate, f.count, f.neurons)]
    check(sum(given) == 1, "rate, count and neurons", caller,
          "exactly one of rate, count or neurons",
          {"rate": f.rate, "count": f.count, "neurons": f.neurons})
    if f.rate is not None:
        ok = isinstance(f.rate, (int, float)) and not isinstance(f.rate, bool)
        check(ok and not math.isnan(f.rate) and 0 <= f.rate <= 1, "rate", caller,
              "a per-neuron probability in [0, 1]", f.rate)
        object.__setattr__(f, "rate", float(f.rate))
    if f.count is not None:
        ok = isinstance(f.count, (int, np.integer)) and not isinstance(f.count, bool)
        check(ok and f.count >= 0, "count", caller, "an integer >= 0", f.count)
        object.__setattr__(f, "count", int(f.count))
    if f.neurons is not None:
        try:
            items = tuple((str(a), int(b)) for a, b in f.neurons)
        except (TypeError, ValueError):
            raise fail("neurons", caller, "a sequence of (layer name, neuron index) pairs",
                       f.neurons) from None
        check(len(set(items)) == len(items), "neurons", caller, "distinct neurons", f.neurons)
        object.__setattr__(f, "neurons", items)


def _check_scale(scale, caller):
    ok = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    check(ok and math.isfinite(scale) and scale >= 0, "scale", caller, "a finite number >= 0",
          scale)


@dataclass(frozen=True)
class NeuronStuck:
    """Neurons stuck ``"dead"`` (never fire) or ``"saturated"`` (fire at every step)."""

    mode: str = "dead"  # SpikeFI's dead neuron; "saturated" = its saturated neuron
    rate: float | None = None  # each neuron faulty independently with this probability
    count: int | None = None  # exactly this many faulty neurons
    neurons: tuple | None = None  # exact (layer name, flat neuron index) pairs

    def __post_init__(self):
        check_choice(self.mode, ("dead", "saturated"), "mode", "NeuronStuck")
        _check_where(self, "NeuronStuck")

    kind = property(lambda self: self.mode)
    value = property(lambda self: math.nan)
    label = property(lambda self: f"neuron-{self.mode}")


@dataclass(frozen=True)
class ThresholdDrift:
    """The firing threshold of each faulty neuron is multiplied by ``scale``."""

    scale: float = 1.2  # +20 %: a drift of the order SpikingJET studies
    rate: float | None = None
    count: int | None = None
    neurons: tuple | None = None

    def __post_init__(self):
        _check_scale(self.scale, "ThresholdDrift")
        _check_where(self, "ThresholdDrift")

    kind = property(lambda self: "threshold")
    value = property(lambda self: float(self.scale))
    label = property(lambda self: f"threshold-x{self.scale:g}")


@dataclass(frozen=True)
class LeakDrift:
    """The membrane decay ``beta`` of each faulty neuron is multiplied by ``scale`` (then clamped
    to [0, 1] by snntorch): a leak appears in integrate-and-fire neurons for ``scale < 1``."""

    scale: float = 0.9  # beta 1 -> 0.9: 10 % of the membrane leaks away each step
    rate: float | None = None
    count: int | None = None
    neurons: tuple | None = None

    def __post_init__(self):
        _check_scale(self.scale, "LeakDrift")
        _check_where(self, "LeakDrift")

    kind = property(lambda self: "leak")
    value = property(lambda self: float(self.scale))
    label = property(lambda self: f"leak-x{self.scale:g}")


FAULTS = (NeuronStuck, ThresholdDrift, LeakDrift)


@dataclass(frozen=True, eq=False)
class NeuronFaultMap:
    """Sparse, replayable neuron faults: ``layer[i]`` indexes ``layers`` (Leaky module names),
    ``index[i]`` is the flat neuron index in that layer's ``shapes`` entry, ``kind[i]`` indexes
    :data:`NEURON_KINDS`, ``value[i]`` the drift scale (NaN for stuck neurons)."""

    layers: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    layer: np.ndarray  # int32
    index: np.ndarray  # int64
    kind: np.ndarray  # int8
    value: np.ndarray  # float64
    seed: int | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __eq__(self, other) -> bool:
        if not isinstance(other, NeuronFaultMap):
            return NotImplemented
        return (self.layers == other.layers and self.shapes == other.shapes
                and all(np.array_equal(getattr(self, a), getattr(other, a), equal_nan=a == "value")
                        for a in ("layer", "index", "kind", "value")))

    @property
    def neurons(self) -> int:
        return int(sum(math.prod(s) for s in self.shapes))

    def counts(self) -> dict[str, int]:
        per = np.bincount(self.layer, minlength=len(self.layers))
        return {n: int(c) for n, c in zip(self.layers, per)}

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr((self.layers, self.shapes)).encode())
        for a in (self.layer, self.index, self.kind, self.value):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"NeuronFaultMap({len(self)} faulty of {self.neurons} neurons in "
                f"{len(self.layers)} layers, seed={self.seed})")


def neuron_layers(net: nn.Module) -> list[tuple[str, snn.Leaky]]:
    """``(name, module)`` of every ``snntorch.Leaky`` in ``net`` (module order)."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, snn.Leaky)]


def neuron_shapes(net: nn.Module, in_shape) -> dict[str, tuple[int, ...]]:
    """One sample's membrane shape of every Leaky layer, from one step on a zero input."""
    c = "neuron_shapes"
    layers = neuron_layers(net)
    check(len(layers) > 0, "net", c, "a spiking net with snntorch.Leaky neurons",
          type(net).__name__)
    try:
        shape = tuple(int(s) for s in in_shape)
    except TypeError:
        raise fail("in_shape", c, "a tuple of ints (one sample's input shape)", in_shape) from None
    check(len(shape) > 0 and all(s >= 1 for s in shape), "in_shape", c,
          "a tuple of positive ints (one sample's input shape)", in_shape)
    seen: dict[str, tuple[int, ...]] = {}

    def probe(name):
        def hook(mod, args):
            seen.setdefault(name, tuple(args[0].shape[1:]))
        return hook

    handles = [m.register_forward_pre_hook(probe(n)) for n, m in layers]
    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            net(torch.zeros((1, *shape), device=dev), 1)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n, _ in layers if n not in seen]
    check(not missing, "net", c, "a net whose every Leaky layer runs in a step",
          f"layers never called: {missing}")
    return {n: seen[n] for n, _ in layers}


def sample_neuron_faults(net: nn.Module, fault, in_shape, seed: int = 0) -> NeuronFaultMap:
    """Draw the faulty neurons of ``fault`` over all Leaky neurons of ``net`` from ``seed``.

    With ``rate`` every neuron is faulty independently (Binomial count); with ``count`` exactly
    that many distinct neurons, uniform over all layers. Nested: each neuron draws one uniform
    ``u`` from the seed and the faulty ones are those with ``u < rate`` (or the ``count``
    smallest), so with one seed a lower rate's faulty neurons are a subset of a higher rate's,
    whatever the fault kind (paired maps across kinds and rates).
    """
    c = "sample_neuron_faults"
    check(isinstance(fault, FAULTS), "fault", c, "a NeuronStuck, ThresholdDrift or LeakDrift",
          fault)
    ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0
    check(ok, "seed", c, "an integer >= 0", seed)
    shapes = neuron_shapes(net, in_shape)
    names = tuple(shapes)
    sizes = np.array([math.prod(shapes[n]) for n in names], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    if fault.neurons is not None:
        flat = []
        for name, i in fault.neurons:
            check(name in shapes, "neurons", c, f"layer names among {list(names)}", name)
            j = names.index(name)
            check(0 <= i < sizes[j], "neurons", c,
                  f"indices below {int(sizes[j])} for layer {name!r}", i)
            flat.append(offsets[j] + i)
        pos = np.sort(np.asarray(flat, dtype=np.int64))
    else:
        u = np.random.default_rng(np.random.SeedSequence(int(seed))).random(total)
        if fault.rate is not None:
            pos = np.flatnonzero(u < fault.rate)
        else:
            check(fault.count <= total, "count", c, f"at most the {total} neurons of the net",
                  fault.count)
            pos = np.sort(np.argsort(u, kind="stable")[:fault.count])
    layer = (np.searchsorted(offsets, pos, side="right") - 1).astype(np.int32)
    n = pos.shape[0]
    return NeuronFaultMap(names, tuple(shapes[k] for k in names), layer,
                          (pos - offsets[layer]).astype(np.int64),
                          np.full(n, NEURON_KINDS.index(fault.kind), dtype=np.int8),
                          np.full(n, fault.value, dtype=np.float64), int(seed))


class _Stuck:
    """Forward hook of a Leaky layer: spikes of dead neurons 0, of saturated ones the graded
    spike value at every step (picklable, so a faulty copy keeps it)."""

    def __init__(self, dead: torch.Tensor, saturated: torch.Tensor):
        self.dead, self.saturated = dead, saturated

    def __call__(self, mod, args, out):
        spk, *rest = out if isinstance(out, tuple) else (out,)
        dead, sat = self.dead.to(spk.device), self.saturated.to(spk.device)
        g = torch.as_tensor(mod.graded_spikes_factor, dtype=spk.dtype, device=spk.device)
        spk = torch.where(dead, torch.zeros((), dtype=spk.dtype, device=spk.device), spk)
        spk = torch.where(sat, g.expand(spk.shape), spk)
        return (spk, *rest) if isinstance(out, tuple) else spk


def _as_map(net, fault_or_map, in_shape, seed, caller) -> NeuronFaultMap:
    if isinstance(fault_or_map, NeuronFaultMap):
        return fault_or_map
    if isinstance(fault_or_map, FAULTS):
        check(in_shape is not None, "in_shape", caller,
              "one sample's input shape when a fault model is given", in_shape)
        return sample_neuron_faults(net, fault_or_map, in_shape, seed)
    raise fail("fault_or_map", caller, "a NeuronStuck, ThresholdDrift, LeakDrift or "
               "NeuronFaultMap", fault_or_map)


def _drifted(mod, attr: str, shape, idx: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    old = getattr(mod, attr)
    new = old.detach().expand(shape).clone()  # per-neuron copy of a scalar (or per-neuron) value
    flat = new.view(-1)
    i = torch.as_tensor(idx, device=new.device)
    flat[i] = flat[i] * torch.as_tensor(scale, dtype=new.dtype, device=new.device)
    return new


def _apply(net: nn.Module, fmap: NeuronFaultMap, caller: str):
    """Apply in place; return the undo list of (module, store, attr, original) and hooks."""
    layers = dict(neuron_layers(net))
    for name in fmap.layers:
        check(name in layers, "fault_or_map", caller,
              "a NeuronFaultMap of this net's Leaky layers", f"unknown layer {name!r}")
    undo, handles = [], []
    try:
        for j, name in enumerate(fmap.layers):
            sel = np.flatnonzero(fmap.layer == j)
            if len(sel) == 0:
                continue
            mod, shape = layers[name], fmap.shapes[j]
            for kind, attr in (("threshold", "threshold"), ("leak", "beta")):
                s = sel[fmap.kind[sel] == NEURON_KINDS.index(kind)]
                if len(s):
                    store = mod._parameters if attr in mod._parameters else mod._buffers
                    original = store[attr]
                    new = _drifted(mod, attr, shape, fmap.index[s], fmap.value[s])
                    store[attr] = nn.Parameter(new) if isinstance(original, nn.Parameter) else new
                    undo.append((store, attr, original))
            masks = []
            for kind in ("dead", "saturated"):
                m = torch.zeros(math.prod(shape), dtype=torch.bool)
                m[torch.as_tensor(fmap.index[sel[fmap.kind[sel] == NEURON_KINDS.index(kind)]])] \
                    = True
                masks.append(m.view(shape))
            if masks[0].any() or masks[1].any():
                handles.append(mod.register_forward_hook(_Stuck(*masks)))
    except BaseException:
        _undo(undo, handles)
        raise
    return undo, handles


def _undo(undo, handles) -> None:
    for h in handles:
        h.remove()
    for store, attr, original in reversed(undo):
        store[attr] = original


@contextmanager
def inject_neuron_faults(net: nn.Module, fault_or_map, in_shape=None, seed: int = 0):
    """Apply neuron faults to ``net`` in place for the ``with`` block; yields the map.

    ``fault_or_map``: a NeuronStuck / ThresholdDrift / LeakDrift (drawn from ``seed`` over the
    neurons of one sample of shape ``in_shape``) or a :class:`NeuronFaultMap` to replay. On exit,
    also after an exception, the original threshold / beta tensors are put back and the hooks
    removed: the net is exactly as before. ``record`` and ``run_live`` run under the faults.
    """
    caller = "inject_neuron_faults"
    check(isinstance(net, nn.Module), "net", caller, "a SpikingNet", type(net).__name__)
    fmap = _as_map(net, fault_or_map, in_shape, seed, caller)
    undo, handles = _apply(net, fmap, caller)
    try:
        yield fmap
    finally:
        _undo(undo, handles)


def with_neuron_faults(net: nn.Module, fault_or_map, in_shape=None, seed: int = 0) -> nn.Module:
    """A NEW net with the faults applied for good (``net`` untouched); the map is at
    ``.neuron_fault_map`` of the copy."""
    caller = "with_neuron_faults"
    check(isinstance(net, nn.Module), "net", caller, "a SpikingNet", type(net).__name__)
    fmap = _as_map(net, fault_or_map, in_shape, seed, caller)
    new = copy.deepcopy(net)
    _apply(new, fmap, caller)
    new.neuron_fault_map = fmap
    return new
