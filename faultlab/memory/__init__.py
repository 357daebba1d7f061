"""faultlab.memory: hardware error models of weight memory.

ECC (Hsiao SEC-DED (72,64) / (39,32), byte parity) decoded from the error pattern, multi-bit
bursts, row / column / bank faults over a :class:`MemoryLayout`, measured chip maps, asymmetric
and nested maps, and a BER-vs-voltage curve with a relative-energy model. Every model yields an
ordinary :class:`faultlab.FaultMap`, so ``inject``, ``campaign`` and replay take them unchanged.
Guide: docs/faultlab-memory.md.
"""

from __future__ import annotations

from faultlab.memory._chipmap import ChipMap
from faultlab.memory._codes import CODES, Code, get_code
from faultlab.memory._draw import memory_map
from faultlab.memory._ecc import ECC, POLICIES
from faultlab.memory._layout import MemoryLayout, ModelMemory
from faultlab.memory._models import BankFault, Burst, ColumnFault, MemoryFault, RowFault
from faultlab.memory._nested import Nested, sample_nested
from faultlab.memory._voltage import BERCurve, relative_energy

__all__ = [
    "CODES",
    "ECC",
    "POLICIES",
    "BERCurve",
    "BankFault",
    "Burst",
    "ChipMap",
    "Code",
    "ColumnFault",
    "MemoryFault",
    "MemoryLayout",
    "ModelMemory",
    "Nested",
    "RowFault",
    "get_code",
    "memory_map",
    "relative_energy",
    "sample_nested",
]
