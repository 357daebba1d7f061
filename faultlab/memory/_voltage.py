"""Operating point -> bit-error rate -> energy: a measured BER curve and a relative-energy model.

No default curve ships: we found no published table of measured (voltage, BER) points we could
cite (Stutz et al. and EDEN show them as figures, from profiled chips), so the user gives the
curve (from their own profiling, or read off a paper's figure and cited there).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwlab.errors import check, check_number, fail

__all__ = ["BERCurve", "relative_energy"]


@dataclass(frozen=True)
class BERCurve:
    """Bit-error rate as a function of supply voltage, from measured ``(voltage, ber)`` points.

    Between points the BER is interpolated log-linearly (``log10 ber`` linear in voltage, the
    shape of measured low-voltage SRAM / DRAM error curves, which fall exponentially with
    voltage). Points must be at distinct voltages with BER in (0, 1], and the BER must not grow
    with voltage (monotone check). Outside the measured range is an error (no extrapolation).
    """

    points: tuple[tuple[float, float], ...]  # (voltage in V, per-bit error rate), any order

    def __post_init__(self):
        c = "BERCurve"
        try:
            pts = sorted((float(v), float(b)) for v, b in self.points)
        except (TypeError, ValueError):
            raise fail("points", c, "a sequence of (voltage, ber) pairs", self.points) from None
        check(len(pts) >= 2, "points", c, "at least 2 (voltage, ber) points", self.points)
        v = np.array([p[0] for p in pts])
        b = np.array([p[1] for p in pts])
        check(bool(np.all(np.isfinite(v)) and np.all(v > 0)), "points", c,
              "voltages > 0", v.tolist())
        check(bool(np.all(np.diff(v) > 0)), "points", c, "points at distinct voltages",
              v.tolist())
        check(bool(np.all((b > 0) & (b <= 1))), "points", c, "BERs in (0, 1]", b.tolist())
        check(bool(np.all(np.diff(b) <= 0)), "points", c,
              "BERs that do not increase with voltage (monotone)", pts)
        object.__setattr__(self, "points", tuple(pts))

    @classmethod
    def load(cls, path) -> BERCurve:
        """Read ``voltage,ber`` lines from a CSV file (a header line is skipped)."""
        p = Path(path)
        check(p.is_file(), "path", "BERCurve.load", "an existing CSV file", str(path))
        pts = []
        with open(p, newline="") as f:
            for i, line in enumerate(csv.reader(f)):
                if not line or line[0].strip().startswith("#"):
                    continue
                try:
                    pts.append((float(line[0]), float(line[1])))
                except (ValueError, IndexError):
                    if i == 0:
                        continue  # header
                    raise fail("path", "BERCurve.load", "a CSV of voltage,ber lines",
                               f"line {i + 1}: {line}") from None
        return cls(tuple(pts))

    @property
    def voltages(self) -> tuple[float, float]:
        return self.points[0][0], self.points[-1][0]

    def ber(self, voltage) -> float:
        """Interpolated BER at ``voltage`` (log-linear between the measured points)."""
        lo, hi = self.voltages
        check_number(voltage, "voltage", "BERCurve.ber", lo, hi,
                     constraint=f"a voltage within the measured range [{lo}, {hi}]")
        v = np.array([p[0] for p in self.points])
        logb = np.log10([p[1] for p in self.points])
        return float(10 ** np.interp(float(voltage), v, logb))

    def voltage(self, ber) -> float:
        """The lowest voltage whose interpolated BER is at most ``ber`` (inverse of :meth:`ber`)."""
        b = [p[1] for p in self.points]
        check_number(ber, "ber", "BERCurve.voltage", min(b), max(b),
                     constraint=f"a BER within the measured range [{min(b)}, {max(b)}]")
        for (v0, b0), (v1, b1) in zip(self.points, self.points[1:]):
            if b1 <= ber <= b0:
                if b0 == b1:
                    return v0
                t = (math.log10(ber) - math.log10(b0)) / (math.log10(b1) - math.log10(b0))
                return v0 + t * (v1 - v0)
        return self.points[0][0]  # pragma: no cover - ber == the top BER is found above


def relative_energy(voltage, nominal) -> float:
    """Dynamic energy at ``voltage`` relative to ``nominal``: ``(V / V_nom)^2``.

    CMOS dynamic (switching) energy per access is ``C V^2`` (charge C V moved through V), so at
    the same capacitance and access count the ratio is ``(V / V_nom)^2``. Leakage, refresh and
    peripheral energy are not modelled (EDEN and Stutz et al. measure or model them separately),
    so this is the dynamic-energy part of the saving only.
    """
    for name, v in (("voltage", voltage), ("nominal", nominal)):
        check_number(v, name, "relative_energy", 0, inclusive=(False, True),
                     constraint="a voltage > 0")
    return (float(voltage) / float(nominal)) ** 2
