"""``ECC(code, inner)``: weight memory protected by a code, decoded from the error pattern."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from faultlab._faults import BitFlip, FaultModel, StuckAt
from faultlab.memory._codes import get_code
from faultlab.memory._layout import MemoryLayout
from hwlab.errors import check

__all__ = ["ECC", "POLICIES"]

POLICIES = ("zero", "keep")


@dataclass(frozen=True)
class ECC(FaultModel):
    """The ``inner`` fault model acting on code-protected memory, as the decoder delivers it.

    ``code``: ``"secded72_64"`` (Hsiao (72,64), as in DRAM DIMMs: 12.5 % extra bits),
    ``"secded39_32"`` (Hsiao-style (39,32), SRAM: 21.9 %) or ``"parity"`` (one even-parity bit
    per byte of a 64-bit word: detect only, 12.5 %). The inner model's faults fall on data *and*
    check bits of every word (``BitFlip(rate=p)``: each of the n stored bits with probability
    p; row / column / burst / chip-map models over the physical cells, check bits included).
    Per touched word the real decoder runs on the effective error pattern (syndrome = XOR of the
    H columns of the erroneous bits): a single error is corrected, a double error detected, and
    three or more are corrected onto a wrong bit (miscorrected), detected, or unseen (silent)
    exactly as the decoder decides. ``policy`` for a detected-uncorrectable word: ``"zero"`` the
    data word reads 0 (a common DUE response), ``"keep"`` the corrupt data stays.

    The resulting FaultMap leaves exactly the delivered words; its ``extra`` counts corrected /
    detected / miscorrected / silent words and records ``code_overhead`` (r / k). Cost is
    proportional to the faults: only touched words are read and decoded. ``layout`` sets the
    geometry (default ``MemoryLayout(word_bits=k)``); its ``word_bits`` must be the code's k.
    Inner ``BitFlip`` / ``StuckAt`` must not restrict ``bits`` (they hit every stored bit).
    """

    code: str = "secded72_64"  # Hsiao (72,64): the DIMM standard
    inner: FaultModel | None = None  # what goes wrong in the stored bits
    policy: str = "zero"  # detected-uncorrectable word reads 0 ("keep": stays corrupt)
    layout: MemoryLayout | None = None  # None: MemoryLayout(word_bits=code.k)

    def __post_init__(self):
        c = "ECC"
        spec = get_code(self.code, c)
        check(isinstance(self.inner, FaultModel) and not isinstance(self.inner, ECC), "inner",
              c, "a faultlab fault model (BitFlip, StuckAt, Burst, RowFault, ...; not an ECC)",
              self.inner)
        if isinstance(self.inner, (BitFlip, StuckAt)):
            check(self.inner.bits is None, "inner", c,
                  "a BitFlip / StuckAt without bits (faults hit every stored bit)", self.inner)
        check(self.policy in POLICIES, "policy", c, f"one of {', '.join(POLICIES)}",
              self.policy)
        layout = self.layout
        check(layout is None or isinstance(layout, MemoryLayout), "layout", c,
              "None or a faultlab.memory.MemoryLayout", layout)
        inner_layout = getattr(self.inner, "layout", None)
        if layout is None:
            layout = inner_layout or MemoryLayout(word_bits=spec.k)
        check(inner_layout is None or inner_layout == layout, "layout", c,
              "the inner model's layout (or None on one of them)", layout)
        check(layout.word_bits == spec.k, "layout", c,
              f"a MemoryLayout with word_bits={spec.k} (the data bits of {self.code})", layout)
        object.__setattr__(self, "layout", layout)

    spec = property(lambda self: get_code(self.code), doc="The Code object.")
    rate = property(lambda self: self.inner.rate)
    count = property(lambda self: self.inner.count)
    bits = None
    asymmetric = property(lambda self: self.inner.asymmetric)
    nominal_rate = property(lambda self: self.inner.nominal_rate)
    label = property(lambda self: f"{self.inner.label}@{self.code}")

    def with_rate(self, rate):
        return dataclasses.replace(self, inner=self.inner.with_rate(rate))

    def to_dict(self) -> dict:
        d = dict(self.inner.to_dict())
        d.update(fault=self.label, policy=self.policy, layout=self.layout.label())
        return d
