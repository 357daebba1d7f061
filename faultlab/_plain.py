"""The plain draw: :class:`~faultlab.BitFlip` / :class:`~faultlab.StuckAt` at one rate or count,
uniform over the eligible bits of the chosen parameters (one Numba kernel call per map).

Asymmetric and nested maps and the memory-level models thin or translate maps of this draw in
:mod:`faultlab.memory`; :mod:`faultlab._sample` routes each fault model to its drawer.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from faultlab import _kernels
from faultlab._faults import KINDS, FaultMap
from faultlab._words import _DTYPE_NAMES, WORDS, eligible_parameters, model_views, seed32
from hwlab.errors import check, check_int

__all__ = ["Sampler", "draw_plain", "sampler"]


def _bit_table(fault_model, chosen, caller):
    """Sorted eligible bits and the number eligible per word of each chosen parameter."""
    widths = np.array([WORDS[t.dtype][0] for _, t in chosen], dtype=np.int64)
    if fault_model.bits is None:
        return np.arange(32, dtype=np.int64), widths
    table = np.asarray(fault_model.bits, dtype=np.int64)
    for (name, t), w in zip(chosen, widths):
        check(int(table.max()) < w, "bits", caller,
              f"bit indices below the word width {w} of parameter {name!r} "
              f"({_DTYPE_NAMES[t.dtype]})", fault_model.bits)
    return table, np.full(len(chosen), table.size, dtype=np.int64)


class Sampler:
    """The prepared form of the BitFlip / StuckAt draw for one model and one choice of bits.

    What does not depend on the rate, the count or the seed is computed once: the eligible
    parameters (``layers`` / ``include_bias`` / ``include_norm``), the bit table of
    ``fault_model.bits`` and the cumulative bit counts; :meth:`draw` then costs the faults only.
    It holds no reference to the model (it lives in the model's ``ModelViews.cache``).
    """

    def __init__(self, model, fault_model, layers, include_bias, include_norm, caller):
        chosen = eligible_parameters(model, layers, include_bias, include_norm, caller)
        self.table, self.per_word = _bit_table(fault_model, chosen, caller)  # reads .bits only
        sizes = np.array([t.numel() for _, t in chosen], dtype=np.int64) * self.per_word
        self.ends = np.cumsum(sizes)  # cumulative eligible bits: the kernel's parameter bounds
        self.total = int(self.ends[-1])
        self.names = tuple(n for n, _ in chosen)
        self.dtypes = tuple(_DTYPE_NAMES[t.dtype] for _, t in chosen)
        self.slots = None  # slot of each chosen parameter in the model's views (draw_inject)

    def _rate_count(self, fault_model, caller: str) -> tuple[float, int]:
        """The kernels' (rate, count): (rate, 0) for a rate, (-1, count) for a count that the
        chosen parameters' eligible bits can hold."""
        if fault_model.rate is not None:
            return float(fault_model.rate), 0
        check(fault_model.count <= self.total, "count", caller,
              f"at most the {self.total} eligible bits of the chosen parameters",
              fault_model.count)
        return -1.0, int(fault_model.count)

    def draw(self, fault_model, seed: int, caller: str) -> FaultMap:
        """The map of ``fault_model`` (its rate or count) for ``seed`` (an integer >= 0).

        One kernel call (:func:`faultlab._kernels.draw_bits`) seeded with
        ``SeedSequence(seed).generate_state(1)[0]`` (:func:`~faultlab._words.seed32`; in the
        kernel for seeds below 2**64).
        """
        rate, count = self._rate_count(fault_model, caller)
        big = seed >= 2**64
        param, index, bit = _kernels.draw_bits(
            self.total, rate, count, np.uint64(0 if big else seed),
            seed32(seed) if big else -1, self.ends, self.per_word, self.table)
        kind = np.full(index.shape[0], KINDS.index(fault_model.kind), np.int8)
        return FaultMap(names=self.names, dtypes=self.dtypes, param=param, index=index, bit=bit,
                        kind=kind, eligible_bits=self.total, seed=seed)

    def draw_inject(self, fault_model, seed: int, caller: str, views, ops):
        """:meth:`draw` and the in-place injection of the map into the model of ``views`` in ONE
        kernel call (:func:`faultlab._kernels.draw_inject`): ``(fmap, status, rec, m, changed)``.

        The same map as :meth:`draw` (same kernel, same seeding). ``status`` 0: the map is applied
        and ``rec`` / ``m`` restore it (:func:`faultlab._kernels.restore_rec`); any other status
        (a parameter the one-call path cannot reach, e.g. on CUDA): nothing was written and the
        caller applies ``fmap`` itself. ``views``: the model's ``ModelViews`` (whose cache holds
        this sampler); ``ops``: kind code -> kernel operation (faultlab._inject).
        """
        rate, count = self._rate_count(fault_model, caller)
        slots = self.slots
        if slots is None:
            slots = self.slots = views.slots(self, caller)  # names / dtypes, as of a FaultMap
        if seed < 2**63:  # an int64 for the kernel (converted to uint64 inside, as np.uint64)
            key, state = seed, -1
        else:
            key, state = np.uint64(0 if seed >= 2**64 else seed), \
                (seed32(seed) if seed >= 2**64 else -1)
        total = self.total
        param, index, bit, kind, rec, status, _, m, changed = _draw_inject(
            total, rate, count, key, state, self.ends, self.per_word, self.table,
            KINDS.index(fault_model.kind), views.tab, slots, ops)
        if _PLAIN_MAP:  # _fault_map, inlined
            fmap = _new_map(FaultMap)
            fmap.__dict__.update(names=self.names, dtypes=self.dtypes, param=param, index=index,
                                 bit=bit, kind=kind, eligible_bits=total, seed=seed, extra=None)
        else:
            fmap = _fault_map(self.names, self.dtypes, param, index, bit, kind, total, seed)
        return fmap, status, rec, m, changed


def _fault_map(names, dtypes, param, index, bit, kind, eligible_bits, seed) -> FaultMap:
    """``FaultMap(names=..., ..., seed=seed)`` without the frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field): the same fields in the same order, ``extra`` None."""
    if not _PLAIN_MAP:
        return FaultMap(names=names, dtypes=dtypes, param=param, index=index, bit=bit, kind=kind,
                        eligible_bits=eligible_bits, seed=seed)
    fmap = _new_map(FaultMap)
    fmap.__dict__.update(names=names, dtypes=dtypes, param=param, index=index, bit=bit,
                         kind=kind, eligible_bits=eligible_bits, seed=seed, extra=None)
    return fmap


_new_map = object.__new__
_draw_inject = _kernels.draw_inject
# The shortcut is exact while FaultMap is a plain dataclass with these fields and no
# __post_init__ / __slots__ (checked here once; otherwise the constructor is used).
_PLAIN_MAP = (not hasattr(FaultMap, "__post_init__") and not hasattr(FaultMap, "__slots__")
              and tuple(FaultMap.__dataclass_fields__) == (
                  "names", "dtypes", "param", "index", "bit", "kind", "eligible_bits", "seed",
                  "extra"))


def sampler(model, fault_model, layers=None, include_bias=False, include_norm=False,
            caller="sample_faults", views=None) -> Sampler:
    """The :class:`Sampler` of ``model`` for the bits of ``fault_model`` and the parameter
    choice, kept in ``faultlab._words.model_views(model).cache`` (dropped when the model's
    parameters change) and built there on first use (``views``: those views, if held)."""
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module", type(model).__name__)
    if isinstance(layers, (list, tuple)):
        layers = tuple(layers)
    key = ("sampler", fault_model.bits, layers, bool(include_bias), bool(include_norm))
    cache = (views or model_views(model)).cache
    try:
        found = cache.get(key)  # one hash of the key
    except TypeError:  # an unhashable layers entry: refused by eligible_parameters, uncached
        return Sampler(model, fault_model, layers, include_bias, include_norm, caller)
    if found is None:
        found = cache[key] = Sampler(model, fault_model, layers, include_bias, include_norm,
                                     caller)
    return found


def draw_plain(model, fault_model, seed, layers, include_bias, include_norm, caller,
               views=None) -> FaultMap:
    """The map of a symmetric BitFlip / StuckAt (``rate`` or ``count``) for ``seed``.

    ``views``: ``model_views(model)`` when the caller already holds them (a trial)."""
    seed = check_int(seed, "seed", caller, 0)
    return sampler(model, fault_model, layers, include_bias, include_norm, caller, views).draw(
        fault_model, seed, caller)
