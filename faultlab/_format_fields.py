"""Bit fields of the stored words of :func:`faultlab.quantize` models (for vulnerability tables
and selective hardening): which bits of a stored byte are a code's sign, exponent or mantissa.

A stored byte holds one 8-bit code, two 4-bit codes (low nibble = the even element) or, for 6-bit
codes, parts of one or two codes whose bit positions depend on the byte's place in its 3-byte
group: there a bit position has no single field ("mixed"). Scale words: E8M0 (MX) is all
exponent; NVFP4's E4M3 scale has sign, exponent and mantissa like an FP8 element.
"""

from __future__ import annotations

from faultlab._formats import FORMATS, Stored

__all__ = ["code_fields", "stored_bit_field"]

# element / scale code -> (sign bit, exponent bits, mantissa bits) inside the code (0 = LSB);
# integer codes: the sign bit and the magnitude bits below it
_LAYOUT = {
    "int8": (7, (), tuple(range(7))), "mxint8": (7, (), tuple(range(7))),
    "int4": (3, (), (0, 1, 2)),
    "e4m3": (7, (3, 4, 5, 6), (0, 1, 2)), "e5m2": (7, (2, 3, 4, 5, 6), (0, 1)),
    "e2m3": (5, (3, 4), (0, 1, 2)), "e3m2": (5, (2, 3, 4), (0, 1)),
    "e2m1": (3, (1, 2), (0,)),
    "e8m0": (None, tuple(range(8)), ()),
}


def _code_layout(stored: Stored) -> tuple[str, int]:
    """(code type, code bits) of a stored word."""
    f = FORMATS[stored.fmt]
    if stored.role == "scale":
        return f.scale, 8
    return f.element, stored.code_bits


def stored_bit_field(stored: Stored, bit: int) -> str:
    """Field of bit ``bit`` (0 = LSB) of one stored byte: ``sign`` / ``exponent`` / ``mantissa``
    (``magnitude`` for integer codes), prefixed ``scale`` for scale words; ``mixed`` where 6-bit
    codes make the field depend on the byte."""
    code, width = _code_layout(stored)
    if width == 6:
        return "mixed"
    b = bit % width
    sign, exp, _mant = _LAYOUT[code]
    name = ("sign" if b == sign else "exponent" if b in exp else
            "mantissa" if exp else "magnitude")
    return f"scale {name}" if stored.role == "scale" else name


def code_fields(stored: Stored) -> dict[str, tuple[int, ...]]:
    """Protectable bit fields of one stored byte, as bit positions of the byte: ``sign``,
    ``sign+exponent`` (floats; integer codes: ``sign+msb``) of every code in the byte, and the
    whole ``word``. 6-bit codes and E8M0 scales (all exponent) offer the whole word only."""
    word = tuple(range(8))
    code, width = _code_layout(stored)
    if width == 6 or code == "e8m0":
        return {"word": word}
    sign, exp, mant = _LAYOUT[code]
    top = (sign, *exp) if exp else (sign, max(mant))
    offsets = range(0, 8, width)
    fields = {"sign": tuple(sorted(o + sign for o in offsets)),
              ("sign+exponent" if exp else "sign+msb"): tuple(sorted(o + b for o in offsets
                                                                     for b in top)),
              "word": word}
    return fields
