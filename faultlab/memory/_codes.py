"""Linear block codes of weight memory: Hsiao SEC-DED (72,64) and (39,32), byte parity (72,64).

A code is given by its parity-check matrix H (r rows x n columns), stored here as one r-bit
*column mask* per codeword bit: bit ``i`` of ``columns[j]`` is ``H[i, j]``. Codeword bits
``0 .. k-1`` are the data bits (bit ``j`` of the stored data word, 0 = least significant), bits
``k .. n-1`` the check bits (check bit ``i`` is codeword bit ``k + i``; its column is the unit
vector ``1 << i``, so the code is systematic). Check bit ``i`` of a data word ``d`` is
``parity(d & row_mask[i])``; the syndrome of a received word is ``H (c xor e) = H e`` (mod 2), the
XOR of the columns of the erroneous bits: it depends only on the error pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from hwlab.errors import check

__all__ = ["CODES", "Code", "get_code"]

# Hsiao (1970), "A class of optimal minimum odd-weight-column SEC-DED codes", IBM J. Res. Dev.
# 14(4), Fig. 6: the (72,64) parity-check matrix, data columns 0..63 (check columns = identity).
# One string per row of H (check bit 0..7), eight columns per group. Transcription as published
# by F. Petrot (github fpetrot/secded-codes, "Fig. 6 of Hsiao's paper"); we could not compare it
# with a scan of the paper, but it has every property Hsiao states: 64 distinct odd-weight data
# columns (56 of weight 3 -- all of them -- and 8 of weight 5) and every row weight 26 (+1 check),
# the minimum-and-balanced choice. Tests recheck these properties and decode with it.
_HSIAO_72_64_ROWS = (
    "11111111 00001111 00001111 00001100 01101000 10001000 10001000 10000000",
    "11110000 11111111 00000000 11110011 01100100 01000100 01000100 01000000",
    "00110000 11110000 11111111 00001111 00000010 00100010 00100010 00100110",
    "11001111 00000000 11110000 11111111 00000001 00010001 00010001 00010110",
    "01101000 10001000 10001000 10000000 11111111 00001111 00000000 11110011",
    "01100100 01000100 01000100 01000000 11110000 11111111 00001111 00001100",
    "00000010 00100010 00100010 00100110 11001111 00000000 11111111 00001111",
    "00000001 00010001 00010001 00010110 00110000 11110000 11110000 11111111",
)


def _columns_from_rows(rows) -> tuple[int, ...]:
    bits = [r.replace(" ", "") for r in rows]
    k = len(bits[0])
    return tuple(sum(int(bits[i][j]) << i for i in range(len(bits))) for j in range(k))


def _hsiao_39_32_columns() -> tuple[int, ...]:
    """32 weight-3 columns of 7 rows with row weights 13/14 (Hsiao's minimum balanced rule).

    We did not find Hsiao's published (39,32) column order in a source we could check, so the
    choice is ours, by his construction: all 35 weight-3 columns in lexicographic order, minus
    {0,1,2}, {3,4,5} and {0,3,6}, which leaves row weights (13, 14, 14, 13, 14, 14, 14) -- total
    96, as even as 7 rows allow. Single errors are corrected and doubles detected by any such
    choice; which triple errors are miscorrected depends on the columns.
    """
    drop = {(0, 1, 2), (3, 4, 5), (0, 3, 6)}
    cols = [c for c in combinations(range(7), 3) if c not in drop]
    return tuple(sum(1 << i for i in c) for c in cols)


@dataclass(frozen=True)
class Code:
    """One code: ``n`` stored bits per word, ``k`` data bits, ``r = n - k`` check bits.

    ``columns``: the r-bit syndrome mask of every codeword bit (data first, then check bits).
    ``corrects``: SEC-DED (a syndrome equal to a column flips that bit) or detect-only (parity).
    ``detects``: False for a memory without a decoder (data read as stored, faults and all).
    ``overhead``: check bits per data bit (0.125 for 72/64).
    """

    name: str
    n: int
    k: int
    columns: tuple[int, ...]
    corrects: bool
    reference: str
    detects: bool = True  # False: no decoder at all (the check bits are only stored)

    @property
    def r(self) -> int:
        return self.n - self.k

    @property
    def overhead(self) -> float:
        return self.r / self.k

    def column_array(self) -> np.ndarray:
        return _arrays(self)[0]

    def lookup(self) -> np.ndarray:
        """``lookup[s]`` = the codeword bit whose column is ``s`` (-1: none / detect-only)."""
        return _arrays(self)[1]

    def row_masks(self) -> np.ndarray:
        """uint64 per check bit: the data bits it covers (``check_i = parity(d & mask_i)``)."""
        return _arrays(self)[2]

    def encode(self, data: np.ndarray) -> np.ndarray:
        """Check bits (as an r-bit integer per word) of the uint64 data words ``data``."""
        data = np.asarray(data, dtype=np.uint64)
        out = np.zeros(data.shape, dtype=np.uint64)
        for i, mask in enumerate(self.row_masks()):
            parity = np.bitwise_count(data & mask).astype(np.uint64) & np.uint64(1)
            out |= parity << np.uint64(i)
        return out


def _arrays(code: Code):
    """(columns, lookup, row masks), computed once per Code and kept on it (read-only)."""
    cached = code.__dict__.get("_arrays")
    if cached is not None:
        return cached
    cols = np.asarray(code.columns, dtype=np.int64)
    lookup = np.full(1 << code.r, -1, dtype=np.int64)
    if code.corrects:
        lookup[cols] = np.arange(code.n)
    rows = np.zeros(code.r, dtype=np.uint64)
    for j in range(code.k):
        for i in range(code.r):
            if (code.columns[j] >> i) & 1:
                rows[i] |= np.uint64(1) << np.uint64(j)
    for a in (cols, lookup, rows):
        a.setflags(write=False)
    object.__setattr__(code, "_arrays", (cols, lookup, rows))  # not a field: eq/hash unchanged
    return cols, lookup, rows


def _systematic(data_columns, r):
    return tuple(data_columns) + tuple(1 << i for i in range(r))


CODES = {
    "secded72_64": Code(
        "secded72_64", 72, 64, _systematic(_columns_from_rows(_HSIAO_72_64_ROWS), 8), True,
        "Hsiao 1970, Fig. 6 (72,64); DRAM DIMM ECC"),
    "secded39_32": Code(
        "secded39_32", 39, 32, _systematic(_hsiao_39_32_columns(), 7), True,
        "Hsiao 1970 construction (39,32); column choice ours (see _hsiao_39_32_columns)"),
    "parity": Code(
        "parity", 72, 64, _systematic([1 << (j // 8) for j in range(64)], 8), False,
        "even parity per byte of a 64-bit word (detect only)"),
}

# Private: 72-bit words read without any decoder. The study draws one map over 72-bit words and
# reads it as unprotected, parity and SEC-DED memory, so all three see the same data-bit faults.
BARE_72_64 = Code("bare72_64", 72, 64, CODES["parity"].columns, False,
                  "72-bit words, no decoder (unprotected reading of a 72-bit map)", detects=False)


def get_code(name, caller: str = "ECC") -> Code:
    """The :class:`Code` called ``name`` (one of :data:`CODES`)."""
    check(isinstance(name, str) and name in CODES, "code", caller,
          f"one of {', '.join(CODES)}", name)
    return CODES[name]
