"""One error template for every public function in hwlab and its method packages.

Template: ``"PARAM of CALLER must be CONSTRAINT, got VALUE"`` (scikit-learn style). Tests pin the
message with ``pytest.raises(ValueError, match=...)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["HwlabError", "check", "check_choice", "check_int_array", "check_positive_int",
           "check_rate", "fail"]


class HwlabError(ValueError):
    """A bad value given to a public hwlab function (a ``ValueError``)."""


def fail(param: str, caller: str, constraint: str, value: Any) -> HwlabError:
    """Build (not raise) the error for ``param`` of ``caller``; use as ``raise fail(...)``."""
    return HwlabError(f"{param} of {caller} must be {constraint}, got {value!r}")


def check(cond: bool, param: str, caller: str, constraint: str, value: Any) -> None:
    """Raise :class:`HwlabError` in the one template unless ``cond`` holds."""
    if not cond:
        raise fail(param, caller, constraint, value)


def check_rate(value: Any, param: str, caller: str) -> float:
    """A probability: a real number in [0, 1] (NaN, negatives and > 1 are rejected)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and not math.isnan(value) and 0.0 <= value <= 1.0
    check(ok, param, caller, "a number in [0, 1]", value)
    return float(value)


def check_positive_int(value: Any, param: str, caller: str, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bools rejected)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    check(ok, param, caller, f"an integer >= {minimum}", value)
    return int(value)


def check_choice(value: Any, choices, param: str, caller: str) -> Any:
    """One of ``choices``."""
    choices = tuple(choices)
    check(value in choices, param, caller, f"one of {', '.join(map(str, choices))}", value)
    return value


def check_int_array(values: Any, param: str, caller: str, minimum: int | None = None
                    ) -> np.ndarray:
    """An int64 array (at least 1-D) of integers: integer dtypes, or floats that are whole
    numbers (``2.0``); bools, NaN, infinities, fractions (``1.5``) and anything else are refused,
    naming the first such value, never truncated. ``minimum``: the smallest value allowed."""
    a = np.atleast_1d(np.asarray(values))
    flat = a.reshape(-1)
    if a.dtype.kind == "f":
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
        if bad.any():
            raise fail(param, caller, "integers", _plain(flat[int(np.argmax(bad))]))
    elif a.dtype.kind not in "iu":
        raise fail(param, caller, "integers", _plain(flat[0]) if flat.size else values)
    out = a.astype(np.int64)
    if minimum is not None and out.size and out.min() < minimum:
        raise fail(param, caller, f"integers >= {minimum}", int(out.min()))
    return out


def _plain(v: Any) -> Any:
    """A NumPy scalar as the Python value it stands for (so messages read ``1.5``, ``nan``)."""
    return v.item() if isinstance(v, np.generic) else v
