"""Fault models (:class:`BitFlip`, :class:`StuckAt`) and the sparse, replayable :class:`FaultMap`."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hwlab.errors import check, check_int, check_number, fail, is_int

__all__ = ["FAULT_MODELS", "KINDS", "BitFlip", "FaultMap", "FaultModel", "StuckAt"]

# Fault kinds, in the order of their integer codes inside a FaultMap.
KINDS = ("flip", "stuck0", "stuck1")
MAX_WORD_BITS = 32  # widest supported storage word (float32)


def _check_rate_count(rate, count, caller):
    check((rate is None) != (count is None), "rate and count", caller,
          "exactly one of rate or count (not both, not neither)", {"rate": rate, "count": count})
    if rate is not None:
        check_number(rate, "rate", caller, 0, 1, constraint="a per-bit probability in [0, 1]")
    else:
        check_int(count, "count", caller, 0)


def _check_bits(bits, caller):
    """``None`` or a non-empty tuple of distinct bit indices in [0, 32), sorted."""
    if bits is None:
        return None
    if is_int(bits):
        bits = (bits,)
    try:
        values = tuple(bits)
    except TypeError:
        raise fail("bits", caller, "None or a sequence of bit indices", bits) from None
    for b in values:
        check(is_int(b, 0, MAX_WORD_BITS - 1), "bits", caller,
              f"bit indices in [0, {MAX_WORD_BITS}) (bit 0 = least significant)", bits)
    check(len(values) > 0, "bits", caller, "None or a non-empty sequence of bit indices", bits)
    check(len(set(values)) == len(values), "bits", caller, "distinct bit indices", bits)
    return tuple(sorted(int(b) for b in values))


def _validate(model) -> None:
    """Check and normalise rate / count / bits of a fault model (frozen dataclass) in place."""
    name = type(model).__name__
    if model.rate_1to0 is not None or model.rate_0to1 is not None:  # asymmetric (thinning)
        check(model.rate is None and model.count is None, "rate and count", name,
              "None when rate_1to0 / rate_0to1 are given",
              {"rate": model.rate, "count": model.count})
        for what in ("rate_1to0", "rate_0to1"):
            v = 0.0 if getattr(model, what) is None else getattr(model, what)
            object.__setattr__(model, what, check_number(
                v, what, name, 0, 1, constraint="a per-bit probability in [0, 1]"))
        object.__setattr__(model, "bits", _check_bits(model.bits, name))
        return
    _check_rate_count(model.rate, model.count, name)
    object.__setattr__(model, "bits", _check_bits(model.bits, name))
    if model.rate is not None:
        object.__setattr__(model, "rate", float(model.rate))
    if model.count is not None:
        object.__setattr__(model, "count", int(model.count))


def _to_dict(model) -> dict:
    d = {"fault": model.label, "rate": model.rate, "count": model.count,
         "bits": list(model.bits) if model.bits is not None else None}
    if model.asymmetric:
        d.update(rate_1to0=model.rate_1to0, rate_0to1=model.rate_0to1)
    return d


class FaultModel:
    """Base class of every weight-memory fault model (``isinstance`` checks use it).

    A fault model says which stored bits go wrong and yields an ordinary :class:`FaultMap`
    (``faultlab.sample_faults``), so ``inject``, ``campaign``, replay and the pytest plugin take
    every subclass: :class:`BitFlip`, :class:`StuckAt` here, and the memory-level models of
    ``faultlab.memory`` (``ECC``, ``Burst``, ``RowFault``, ``ColumnFault``, ``BankFault``,
    ``ChipMap``). Subclasses have ``rate``, ``count`` and ``bits`` (None where not meaningful), a
    ``label`` for result rows and ``to_dict()``.

    Who draws the map (``faultlab._sample``): a symmetric BitFlip / StuckAt the plain draw; a
    subclass with a ``_sample_map(model, seed, layers, include_bias, include_norm, caller)``
    method itself; any other ``faultlab.memory``'s thinning engine.
    """

    asymmetric = False  # True when the probability depends on the stored bit value

    @property
    def nominal_rate(self) -> float | None:
        """The rate a nested family scales (``rate``; the larger asymmetric rate)."""
        return self.rate

    def with_rate(self, rate: float):
        """The same fault model at another nominal rate (nested maps, campaign families)."""
        raise fail("fault_model", "with_rate", "a fault model with a rate",
                   f"{type(self).__name__} without one")


def _with_rate(self, rate):
    if self.asymmetric:  # both rates scale, their ratio is kept
        scale = rate / self.nominal_rate if self.nominal_rate else 0.0
        return dataclasses.replace(self, rate_1to0=self.rate_1to0 * scale,
                                   rate_0to1=self.rate_0to1 * scale)
    check(self.rate is not None, "fault_model", "with_rate", "a fault model with a rate "
          "(not a count)", self)
    return dataclasses.replace(self, rate=rate)


def _nominal(self):
    return max(self.rate_1to0, self.rate_0to1) if self.asymmetric else self.rate


@dataclass(frozen=True)
class BitFlip(FaultModel):
    """Transient bit flips: each faulty bit of the stored word is inverted (XOR).

    Exactly one of ``rate`` (per-bit probability, the bit-error rate: each eligible bit is faulty
    independently, so the number of faults is Binomial(eligible bits, rate)) or ``count`` (an exact
    number of distinct faulty bits). ``bits`` restricts the eligible bit positions (bit 0 = least
    significant bit of the stored word; float32 bit 31 = sign, 30..23 = exponent).

    Asymmetric errors (profiled low-voltage memories, Stutz et al. MLSys'21): ``rate_1to0`` /
    ``rate_0to1`` instead of ``rate`` make the probability depend on the stored bit (a bit holding
    1 flips with ``rate_1to0``, a 0 with ``rate_0to1``; a missing one is 0). Drawn by thinning:
    candidates at the larger rate, each kept with probability rate(stored bit) / larger rate, so
    the count over the stored ones is Binomial(#ones, rate_1to0) and the cost stays proportional
    to the faults.
    """

    rate: float | None = None  # None when count is given
    count: int | None = None  # exact number of faulty bits instead of a rate
    bits: tuple[int, ...] | None = None  # None = every bit of the word is eligible
    rate_1to0: float | None = None  # asymmetric: flip probability of a stored 1
    rate_0to1: float | None = None  # asymmetric: flip probability of a stored 0

    def __post_init__(self):
        _validate(self)

    kind = property(lambda self: "flip", doc="Fault kind inside a FaultMap.")
    label = property(lambda self: "bitflip-asym" if self.asymmetric else "bitflip",
                     doc="Name in result rows.")
    asymmetric = property(lambda self: self.rate_1to0 is not None)
    nominal_rate = property(_nominal)
    with_rate = _with_rate
    to_dict = _to_dict


@dataclass(frozen=True)
class StuckAt(FaultModel):
    """Permanent stuck-at faults: each faulty bit reads ``value`` (0 or 1) whatever was stored.

    A stuck-at-1 fault ORs its bit in, a stuck-at-0 fault clears it (AND-NOT); a faulty bit that
    already holds ``value`` is unchanged (the fault is present but not *effective*). ``rate``,
    ``count`` and ``bits`` as in :class:`BitFlip`.

    Retention-style asymmetric errors: ``StuckAt(rate_1to0=..., rate_0to1=...)`` (``value``
    None): a stored 1 becomes stuck at 0 with ``rate_1to0``, a stored 0 stuck at 1 with
    ``rate_0to1`` (thinning on the stored bit, as in :class:`BitFlip`).
    """

    value: int | None = None  # the level the faulty bit is stuck at: 0 or 1 (None: asymmetric)
    rate: float | None = None  # None when count is given
    count: int | None = None  # exact number of faulty bits instead of a rate
    bits: tuple[int, ...] | None = None  # None = every bit of the word is eligible
    rate_1to0: float | None = None  # asymmetric: a stored 1 sticks at 0 with this probability
    rate_0to1: float | None = None  # asymmetric: a stored 0 sticks at 1 with this probability

    def __post_init__(self):
        asym = self.rate_1to0 is not None or self.rate_0to1 is not None
        if asym:
            check(self.value is None, "value", "StuckAt",
                  "None when rate_1to0 / rate_0to1 are given", self.value)
        else:
            object.__setattr__(self, "value",
                               check_int(self.value, "value", "StuckAt", 0, 1, constraint="0 or 1"))
        _validate(self)

    kind = property(lambda self: f"stuck{self.value}", doc="Fault kind inside a FaultMap.")
    label = property(lambda self: "stuck-asym" if self.asymmetric else f"stuck{self.value}",
                     doc="Name in result rows.")
    asymmetric = property(lambda self: self.rate_1to0 is not None)
    nominal_rate = property(_nominal)
    with_rate = _with_rate
    to_dict = _to_dict


FAULT_MODELS = (FaultModel,)  # every weight fault model, incl. faultlab.memory's


@dataclass(frozen=True, eq=False)
class FaultMap:
    """A sparse, replayable set of faulty bits of a model's parameters.

    One entry per faulty bit: ``param[i]`` indexes ``names`` (the parameter name, as in
    ``model.named_parameters()``), ``index[i]`` is the flat element index inside that parameter
    (row-major, as in ``param.reshape(-1)``), ``bit[i]`` the bit of the stored word (0 = LSB) and
    ``kind[i]`` indexes :data:`KINDS` (flip, stuck0, stuck1). Entries are sorted by
    (parameter, element, bit) and distinct. ``dtypes`` records each parameter's storage dtype and
    ``eligible_bits`` the number of bits the map was drawn from.
    """

    names: tuple[str, ...]
    dtypes: tuple[str, ...]
    param: np.ndarray  # int32, one per fault
    index: np.ndarray  # int64
    bit: np.ndarray  # uint8
    kind: np.ndarray  # int8, codes into KINDS
    eligible_bits: int = 0
    seed: int | None = None
    extra: Mapping | None = None  # what the drawing recorded (e.g. ECC word counts); not compared

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __eq__(self, other) -> bool:
        if not isinstance(other, FaultMap):
            return NotImplemented
        return (self.names == other.names and self.dtypes == other.dtypes
                and all(np.array_equal(getattr(self, a), getattr(other, a))
                        for a in ("param", "index", "bit", "kind")))

    def counts(self) -> dict[str, int]:
        """Number of faulty bits per parameter name (parameters without faults included as 0)."""
        per = np.bincount(self.param, minlength=len(self.names))
        return {n: int(c) for n, c in zip(self.names, per)}

    def to_frame(self):
        """A pandas DataFrame with columns ``param``, ``index``, ``bit``, ``kind`` (one row a bit)."""
        import pandas as pd

        return pd.DataFrame({
            "param": np.asarray(self.names, dtype=object)[self.param] if len(self) else [],
            "index": self.index, "bit": self.bit.astype(np.int64),
            "kind": np.asarray(KINDS, dtype=object)[self.kind] if len(self) else [],
        })

    def fingerprint(self) -> str:
        """A short hash of the map's contents (names, dtypes and every entry)."""
        h = hashlib.sha256(repr((self.names, self.dtypes)).encode())
        for a in (self.param, self.index, self.bit, self.kind):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"FaultMap({len(self)} faults over {len(self.names)} parameters, "
                f"eligible_bits={self.eligible_bits}, seed={self.seed})")
