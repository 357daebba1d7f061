"""Permanent PE faults (:class:`PEFault`) and their sparse, replayable :class:`PEFaultMap`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from faultlab._faults import KINDS, _check_bits
from hwlab.errors import check, check_choice, check_int, check_number, fail, is_int

from ._array import SystolicArray

__all__ = ["TARGETS", "PEFault", "PEFaultMap", "sample_pe_faults"]

TARGETS = ("output", "weight")  # the PE's output (accumulator / partial-sum) or weight register
WORD_BITS = 32  # float32 registers


@dataclass(frozen=True)
class PEFault:
    """Permanent faults in processing elements of a systolic ``array``.

    ``kind``: ``"stuck1"`` / ``"stuck0"`` (the bit reads 1 / 0 whatever is written) or ``"flip"``
    (the bit is always inverted). ``target``: ``"output"`` = the PE's output register (its partial
    sum in a weight-stationary array, its accumulator in an output-stationary one), ``"weight"`` =
    its weight register. Exactly one of ``rate`` (each PE is faulty independently with this
    probability: the *fraction of faulty PEs* of Zhang et al.), ``count`` (exactly that many
    faulty PEs) or ``pes`` (exact ``(row, col)`` PEs). Each faulty PE has one faulty bit, drawn
    uniformly from ``bits`` (bit 0 = LSB; float32 bit 31 = sign, 30..23 = exponent; None = all 32).

    Zhang et al. inject stuck-at faults into the MAC output of faulty PEs at uniformly random
    bit positions; that is ``PEFault("stuck1"|"stuck0", "output", rate=...)``.
    """

    kind: str = "stuck1"  # stuck-at-1 / stuck-at-0 / flip
    target: str = "output"  # the MAC output register, as in Zhang et al. VTS'18
    rate: float | None = None  # fraction of faulty PEs (each PE independently)
    count: int | None = None  # exact number of faulty PEs instead of a rate
    pes: tuple[tuple[int, int], ...] | None = None  # exact (row, col) PEs instead
    bits: tuple[int, ...] | None = None  # eligible faulty bits; None = all 32 bits of the word
    array: SystolicArray = field(default_factory=SystolicArray)  # 256 x 256 weight-stationary

    def __post_init__(self):
        c = "PEFault"
        check_choice(self.kind, KINDS, "kind", c)
        check_choice(self.target, TARGETS, "target", c)
        check(isinstance(self.array, SystolicArray), "array", c, "a SystolicArray",
              type(self.array).__name__)
        given = [v is not None for v in (self.rate, self.count, self.pes)]
        check(sum(given) == 1, "rate, count and pes", c, "exactly one of rate, count or pes",
              {"rate": self.rate, "count": self.count, "pes": self.pes})
        if self.rate is not None:
            object.__setattr__(self, "rate", check_number(self.rate, "rate", c, 0, 1,
                                                          constraint="a fraction of PEs in [0, 1]"))
        if self.count is not None:
            n = self.array.size
            object.__setattr__(self, "count", check_int(
                self.count, "count", c, 0, n,
                constraint=f"an integer in [0, {n}] (the PEs of the array)"))
        if self.pes is not None:
            object.__setattr__(self, "pes", _check_pes(self.pes, self.array, c))
        bits = _check_bits(self.bits, c)
        object.__setattr__(self, "bits", bits)

    @property
    def label(self) -> str:
        return f"pe-{self.kind}-{self.target}"

    def to_dict(self) -> dict:
        return {"fault": self.label, "rate": self.rate, "count": self.count,
                "pes": [list(p) for p in self.pes] if self.pes is not None else None,
                "bits": list(self.bits) if self.bits is not None else None,
                "array": self.array.label}


def _check_pes(pes, array: SystolicArray, caller: str) -> tuple[tuple[int, int], ...]:
    try:
        items = [tuple(p) for p in pes]
    except TypeError:
        raise fail("pes", caller, "a sequence of (row, col) pairs", pes) from None
    for p in items:
        ok = len(p) == 2 and is_int(p[0], 0, array.rows - 1) and is_int(p[1], 0, array.cols - 1)
        check(ok, "pes", caller, f"(row, col) pairs inside the {array.rows} x {array.cols} array",
              pes)
    check(len(set(items)) == len(items), "pes", caller, "distinct PEs", pes)
    return tuple(sorted((int(r), int(c)) for r, c in items))


@dataclass(frozen=True, eq=False)
class PEFaultMap:
    """Sparse, replayable PE faults: one entry per faulty (PE, register, bit).

    ``row[i]``, ``col[i]``: the PE; ``bit[i]``: the faulty bit of the float32 register;
    ``kind[i]``: code into ``faultlab``'s KINDS (flip, stuck0, stuck1); ``target[i]``: code into
    :data:`TARGETS` (output, weight). Sorted by (row, col, target, bit).
    """

    array: SystolicArray
    row: np.ndarray  # int64
    col: np.ndarray  # int64
    bit: np.ndarray  # uint8
    kind: np.ndarray  # int8
    target: np.ndarray  # int8
    seed: int | None = None

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def __eq__(self, other) -> bool:
        if not isinstance(other, PEFaultMap):
            return NotImplemented
        return self.array == other.array and all(
            np.array_equal(getattr(self, a), getattr(other, a))
            for a in ("row", "col", "bit", "kind", "target"))

    @property
    def pes(self) -> np.ndarray:
        """Distinct faulty PEs as an ``n x 2`` array of (row, col)."""
        return np.unique(np.stack([self.row, self.col], axis=1), axis=0) if len(self) else \
            np.zeros((0, 2), dtype=np.int64)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"row": self.row, "col": self.col, "bit": self.bit.astype(np.int64),
                             "kind": np.asarray(KINDS, dtype=object)[self.kind] if len(self)
                             else [],
                             "target": np.asarray(TARGETS, dtype=object)[self.target]
                             if len(self) else []})

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr(self.array).encode())
        for a in (self.row, self.col, self.bit, self.kind, self.target):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"PEFaultMap({len(self)} faults on {len(self.pes)} of {self.array.size} PEs, "
                f"{self.array.label}, seed={self.seed})")


def sample_pe_faults(fault: PEFault, seed: int = 0) -> PEFaultMap:
    """Draw the faulty PEs of ``fault`` from ``seed`` (the same seed gives the same map).

    Nested: every PE draws one uniform ``u`` and one bit from the seed; at ``rate`` the PEs with
    ``u < rate`` are faulty, with ``count`` the ``count`` PEs of smallest ``u``. So with one seed
    the faulty PEs of a lower rate are a subset of those of a higher rate (with the same bits),
    and a trial's accuracy-vs-rate curve compares like with like. Cost O(rows x cols).
    """
    c = "sample_pe_faults"
    check(isinstance(fault, PEFault), "fault", c, "a PEFault", type(fault).__name__)
    return _sample(fault, check_int(seed, "seed", c, 0))


def _sample(fault: PEFault, seed: int) -> PEFaultMap:
    a = fault.array
    bits = np.asarray(fault.bits if fault.bits is not None else range(WORD_BITS), dtype=np.uint8)
    if fault.pes is not None:
        pe = np.asarray([r * a.cols + col for r, col in fault.pes], dtype=np.int64)
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        bit = bits[rng.integers(len(bits), size=a.size)][pe]  # same bit per PE as with rate
    else:
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        choice = rng.integers(len(bits), size=a.size)  # bit per PE, drawn before u (nesting)
        u = rng.random(a.size)
        if fault.rate is not None:
            pe = np.flatnonzero(u < fault.rate)
        else:
            pe = np.sort(np.argsort(u, kind="stable")[:fault.count])
        bit = bits[choice[pe]]
    n = pe.shape[0]
    return PEFaultMap(a, (pe // a.cols).astype(np.int64), (pe % a.cols).astype(np.int64),
                      bit.astype(np.uint8), np.full(n, KINDS.index(fault.kind), dtype=np.int8),
                      np.full(n, TARGETS.index(fault.target), dtype=np.int8), seed)
