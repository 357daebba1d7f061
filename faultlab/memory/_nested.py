"""One drawing engine for every fault model: candidates, one uniform per candidate, thinning.

A fault model with class rates ``r[c]`` (one class; or, asymmetric, the stored bit value: class 0
uses ``rate_0to1``, class 1 ``rate_1to0``) is drawn at the *candidate intensity*
``lam = max_c r[c]``: candidate units (bits, rows, burst starts, ...) are Bernoulli(lam)
(geometric skipping, ``faultlab._kernels``), each gets one uniform ``u`` in [0, 1), and it is
faulty iff ``u * lam < r[class]``. So each unit of class c is faulty with probability r[c]
(thinning), at a cost proportional to the candidates.

Nested maps (Stutz et al., MLSys'21): the candidates and their ``u`` come from the *top* member
of a family (its largest rate) and every member keeps ``u * lam_top < r_member[class]``; one
uniform per unit decides every rate, so a lower rate's map is a subset of a higher one's (for
ECC: the raw faults are nested; the decoded maps follow from them), and the count at each rate
is Binomial(units, rate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from faultlab import _kernels as _base_kernels
from faultlab._faults import KINDS, BitFlip, FaultMap, FaultModel, StuckAt
from faultlab._plain import draw_plain
from faultlab._words import WORDS, seed32
from faultlab.memory._draw import build_map, stored_bits
from faultlab.memory._ecc import ECC
from faultlab.memory._layout import MemoryLayout
from hwlab.errors import check, is_int

__all__ = ["Nested", "draw", "draw_in_memory", "merge_extra", "nest_specs", "sample_nested"]

_STREAM = 0x6E657374  # "nest": the uniforms' stream, separate from the positions' kernel seed


def uniforms(seed, n):
    return np.random.default_rng([int(seed), _STREAM]).random(n)


def _class_rates(fm) -> np.ndarray:
    fm = getattr(fm, "inner", fm)  # an ECC's rates are its inner model's
    if fm.asymmetric:
        return np.array([fm.rate_0to1, fm.rate_1to0])
    if isinstance(fm, (BitFlip, StuckAt)):
        return np.array([fm.rate if fm.rate is not None else 1.0])
    return fm._rates()


class _BitUnits:
    """BitFlip / StuckAt inside a memory (under ECC): units are the stored bits, n per word."""

    def __init__(self, fm):
        self.fm = fm

    def _total(self, mem):
        return mem.stored_bits

    def _classes(self, mem, code, units):
        if not self.fm.asymmetric:
            return np.zeros(units.shape[0], dtype=np.int64)
        return stored_bits(mem, code, units // mem.n, units % mem.n).astype(np.int64)

    def _expand(self, mem, code, units, cls):
        fm = self.fm
        if isinstance(fm, BitFlip):
            kind = np.full(units.size, KINDS.index("flip"), dtype=np.int8)
        elif fm.asymmetric:  # a stored 1 sticks at 0, a stored 0 at 1
            kind = np.where(cls == 1, KINDS.index("stuck0"), KINDS.index("stuck1"))
        else:
            kind = np.full(units.size, KINDS.index(fm.kind), dtype=np.int8)
        return units // mem.n, units % mem.n, kind.astype(np.int8)


def _unwrap(fm):
    """(code or None, policy, layout, primitive model) of a memory-level model."""
    if isinstance(fm, ECC):
        return fm.spec, fm.policy, fm.layout, fm.inner
    return None, None, getattr(fm, "layout", None) or MemoryLayout(), fm


def _check_nest(member, top, caller):
    if member is top:
        return
    ok = type(member) is type(top) and (member.count is None) == (top.count is None)
    check(ok, "fault_model", caller, "members of one family (same model, different rates)",
          (member, top))
    if member.count is None:
        check(bool(np.all(_class_rates(member) <= _class_rates(top))), "nested_rates", caller,
              "rates no larger than the top member's (every class rate)", (member, top))


def draw(model, member, top, seed, layers, include_bias, include_norm, caller) -> FaultMap:
    """The FaultMap of ``member``, thinned from the candidates of ``top`` (see module doc)."""
    _check_nest(member, top, caller)
    if isinstance(member, (BitFlip, StuckAt)):
        return _draw_plain(model, member, top, seed, layers, include_bias, include_norm, caller)
    code, policy, layout, prim = _unwrap(member)
    mem = layout.bind(model, code.r if code else 0, layers, include_bias, include_norm, caller)
    return draw_in_memory(mem, code, policy, prim, _unwrap(top)[3], seed, caller)


def draw_in_memory(mem, code, policy, prim, prim_top, seed, caller) -> FaultMap:
    """The map of the primitive model ``prim`` (not an ECC) thinned from ``prim_top``'s
    candidates, in the bound memory ``mem`` read through ``code`` (None: no code)."""
    if hasattr(prim, "_events"):  # a measured map: fixed cells, nothing to draw
        word, bit, kind = prim._events(mem, seed)
        return build_map(mem, code, policy, word, bit, kind, seed, mem.stored_bits)
    s32 = seed32(seed, caller)
    ops = prim if hasattr(prim, "_expand") else _BitUnits(prim)
    total = ops._total(mem)
    if prim_top.count is not None:
        prefix, extra = ops._live(mem) if hasattr(ops, "_live") else (total, None)
        live = prefix + (0 if extra is None else extra.size)
        check(prim_top.count <= live, "count", caller,
              f"at most the {live} units that hold the model's memory", prim_top.count)
        units = _base_kernels.distinct_positions(live, prim_top.count, s32)
        if extra is not None and extra.size:  # index i >= prefix is the live unit extra[i - prefix]
            units = np.where(units < prefix, units, extra[np.maximum(units - prefix, 0)])
        cls = ops._classes(mem, code, units)
    else:
        lam = float(_class_rates(prim_top).max())
        units = _base_kernels.bernoulli_positions(total, lam, s32)
        cls = ops._classes(mem, code, units)
        rates = _class_rates(prim)
        if not (rates == lam).all():  # thinning (asymmetric, nested); else all kept
            keep = uniforms(seed, units.size) * lam < rates[cls]
            units, cls = units[keep], cls[keep]
    word, bit, kind = ops._expand(mem, code, units, cls)
    return build_map(mem, code, policy, word, bit, kind, seed, mem.stored_bits,
                     {"units": int(units.size)})


def _element_bits(model, fmap) -> np.ndarray:
    """Stored value (0/1) of every entry's bit, read from the parameters (entries only)."""
    params = dict(model.named_parameters())
    out = np.zeros(len(fmap), dtype=np.int64)
    for i in np.unique(fmap.param):
        sel = np.flatnonzero(fmap.param == i)
        t = params[fmap.names[i]]
        _, udtype, tdtype = WORDS[t.dtype]
        ints = t.detach().view(tdtype)
        where = tuple(torch.from_numpy(a).to(ints.device)
                      for a in np.unravel_index(fmap.index[sel], tuple(ints.shape)))
        words = ints[where].cpu().numpy().view(udtype).astype(np.uint64)
        out[sel] = ((words >> fmap.bit[sel].astype(np.uint64)) & np.uint64(1)).astype(np.int64)
    return out


def _draw_plain(model, member, top, seed, layers, include_bias, include_norm, caller):
    """BitFlip / StuckAt over the weight bits (``bits`` honoured), asymmetric and/or nested."""
    if not member.asymmetric and member == top:  # the ordinary map (also count-based)
        return draw_plain(model, member, seed, layers, include_bias, include_norm, caller)
    lam = float(_class_rates(top).max())
    fixed = {"value": 0} if isinstance(top, StuckAt) and top.asymmetric else {}  # kinds: below
    base = dataclasses.replace(top, rate=lam, rate_1to0=None, rate_0to1=None, **fixed)
    cand = draw_plain(model, base, seed, layers, include_bias, include_norm, caller)
    u = uniforms(seed, len(cand))
    cls = _element_bits(model, cand) if member.asymmetric else np.zeros(len(cand), np.int64)
    keep = u * lam < _class_rates(member)[cls]
    kind = cand.kind
    if isinstance(member, StuckAt) and member.asymmetric:
        kind = np.where(cls == 1, KINDS.index("stuck0"), KINDS.index("stuck1")).astype(np.int8)
    return FaultMap(cand.names, cand.dtypes, cand.param[keep], cand.index[keep], cand.bit[keep],
                    kind[keep], cand.eligible_bits, cand.seed)


@dataclass(frozen=True)
class Nested(FaultModel):
    """``member`` drawn on ``top``'s candidates (one uniform per unit): the campaign's
    ``nested=True`` points. Rows and keys are the member's (label, rate, ``to_dict``)."""

    member: FaultModel
    top: FaultModel

    def __post_init__(self):
        _check_nest(self.member, self.top, "Nested")

    rate = property(lambda self: self.member.rate)
    count = property(lambda self: self.member.count)
    bits = property(lambda self: self.member.bits)
    asymmetric = property(lambda self: True)  # never the plain sampling path
    nominal_rate = property(lambda self: self.member.nominal_rate)
    label = property(lambda self: self.member.label)

    def to_dict(self) -> dict:
        return self.member.to_dict()

    def _sample_map(self, model, seed, layers, include_bias, include_norm, caller):
        return draw(model, self.member, self.top, seed, layers, include_bias, include_norm,
                    caller)


def sample_nested(model, fault_model, rates, seed=0, layers=None, include_bias=False,
                  include_norm=False, caller="sample_nested") -> list[FaultMap]:
    """One map per rate in ``rates`` (``fault_model.with_rate(r)``), nested: the map at a
    lower rate is a subset of the map at a higher rate (raw faults, before any decoder)."""
    check(isinstance(fault_model, FaultModel), "fault_model", caller, "a faultlab fault model",
          fault_model)
    try:
        rates = [float(r) for r in rates]
    except (TypeError, ValueError):
        rates = None
    ok = bool(rates) and all(0.0 <= r <= 1.0 for r in rates)
    check(ok, "nested_rates", caller, "a non-empty list of rates in [0, 1]", rates)
    check(fault_model.nominal_rate is not None, "fault_model", caller,
          "a fault model with a rate (not a count, not a chip map) for nested_rates",
          fault_model)
    top = fault_model.with_rate(max(rates))
    return [draw(model, fault_model.with_rate(r), top, seed, layers, include_bias,
                 include_norm, caller) for r in rates]


def _family(spec) -> str:
    """The point of ``spec`` with every rate scaled to 1 (floats to 10 digits): its family."""
    parts = []
    for f in spec:
        if isinstance(f, FaultModel) and f.nominal_rate is not None and f.nominal_rate > 0:
            f = f.with_rate(1.0)
        d = f.to_dict()
        parts.append("|".join(f"{k}={v:.10g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in sorted(d.items()) if v is not None))
    return "+".join(parts)


def nest_specs(specs, keys):
    """Campaign ``nested=True``: wrap each weight model of each point in :class:`Nested` under
    the family's top member, and give each point its family's seed key (so trial t of every
    rate draws the same candidates). Returns (specs, seed keys)."""
    families = [_family(s) for s in specs]
    tops: dict[tuple, FaultModel] = {}
    for fam, spec in zip(families, specs):
        for j, f in enumerate(spec):
            if isinstance(f, FaultModel) and f.nominal_rate is not None:
                best = tops.get((fam, j))
                if best is None or f.nominal_rate > best.nominal_rate:
                    tops[(fam, j)] = f
    out = []
    for fam, spec in zip(families, specs):
        out.append(tuple(Nested(f, tops[(fam, j)]) if (fam, j) in tops else f
                         for j, f in enumerate(spec)))
    seed_keys = [f"nested:{fam}" if any(isinstance(f, Nested) for f in s) else k
                 for fam, s, k in zip(families, out, keys)]
    return out, seed_keys


def merge_extra(fmaps) -> dict:
    """Sum the word counts of the maps' ``extra`` (ECC words, faulty bits) for a trial row."""
    out: dict = {}
    for fmap in fmaps:
        for k, v in (fmap.extra or {}).items():
            if is_int(v):
                out[k] = int(out.get(k, 0)) + int(v)
            else:
                out[k] = v  # code, policy, code_overhead: the last map's
    return out
