"""One error template for every public function in hwlab and its method packages.

Template: ``"PARAM of CALLER must be CONSTRAINT, got VALUE"`` (scikit-learn style). Tests pin the
message with ``pytest.raises(ValueError, match=...)``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["HwlabError", "check", "check_bool", "check_choice", "check_int", "check_int_array",
           "check_number", "check_positive_int", "check_rate", "fail", "is_int", "is_number"]


class HwlabError(ValueError):
    """A bad value given to a public hwlab function (a ``ValueError``)."""


def fail(param: str, caller: str, constraint: str, value: Any) -> HwlabError:
    """Build (not raise) the error for ``param`` of ``caller``; use as ``raise fail(...)``."""
    return HwlabError(f"{param} of {caller} must be {constraint}, got {value!r}")


def check(cond: bool, param: str, caller: str, constraint: str, value: Any) -> None:
    """Raise :class:`HwlabError` in the one template unless ``cond`` holds."""
    if not cond:
        raise fail(param, caller, constraint, value)


def check_int(value: Any, param: str, caller: str, minimum: int | None = None,
              maximum: int | None = None, constraint: str | None = None) -> int:
    """An integer in [``minimum``, ``maximum``] (either bound may be None), as a Python ``int``.

    Python ints and NumPy integers (``np.int64``, ``np.uint8``) are accepted; bools (Python and
    NumPy), floats (even whole ones: ``2.0``), NaN and strings are refused. The message reads
    "an integer >= 1", "an integer in [0, 63]", ...; ``constraint`` replaces that text where a
    caller accepts more than this check does (``"None or an integer >= 1"``).
    """
    if not is_int(value, minimum, maximum):
        raise fail(param, caller, constraint or _bounds("an integer", minimum, maximum), value)
    return int(value)


def check_number(value: Any, param: str, caller: str, minimum: float | None = None,
                 maximum: float | None = None, inclusive: tuple[bool, bool] = (True, True),
                 finite: bool = True, constraint: str | None = None) -> float:
    """A real number within the bounds (either may be None), as a Python ``float``.

    Python ints and floats and NumPy integer and floating scalars are accepted; bools (Python
    and NumPy), NaN, strings and complex numbers are refused, and so are infinities when
    ``finite``. ``inclusive`` says whether ``minimum`` and ``maximum`` themselves are allowed.
    The message reads "a number in [0, 1]", "a finite number > 0", "a finite number", ...;
    ``constraint`` replaces that text as in :func:`check_int`.
    """
    if not is_number(value, minimum, maximum, inclusive, finite):
        one_sided = minimum is None or maximum is None  # "finite" says what the bound does not
        what = _bounds("a finite number" if finite and one_sided else "a number", minimum,
                       maximum, inclusive)
        raise fail(param, caller, constraint or what, value)
    return float(value)


def is_int(value: Any, minimum: int | None = None, maximum: int | None = None) -> bool:
    """Whether :func:`check_int` accepts ``value`` (for checks of several values at once, such as
    a shape tuple, whose message names the whole)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
        and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def is_number(value: Any, minimum: float | None = None, maximum: float | None = None,
              inclusive: tuple[bool, bool] = (True, True), finite: bool = True, *,
              nan: bool = False) -> bool:
    """Whether :func:`check_number` accepts ``value`` (see :func:`is_int`); with ``nan`` NaN is
    accepted too, whatever the bounds (where NaN stands for a missing value)."""
    if not isinstance(value, (numbers.Real, np.integer, np.floating)) \
            or isinstance(value, (bool, np.bool_)):
        return False
    v = float(value)
    if math.isnan(v):
        return nan
    lo_in, hi_in = inclusive
    return (not finite or math.isfinite(v)) \
        and (minimum is None or (v >= minimum if lo_in else v > minimum)) \
        and (maximum is None or (v <= maximum if hi_in else v < maximum))


def _bounds(what: str, lo: Any, hi: Any, inclusive: tuple[bool, bool] = (True, True)) -> str:
    """"an integer >= 1", "a number in (0, 1]", ... for the bounds given (None: unbounded)."""
    lo_in, hi_in = inclusive
    if lo is not None and hi is not None:
        return f"{what} in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
    if lo is not None:
        return f"{what} {'>=' if lo_in else '>'} {lo:g}"
    if hi is not None:
        return f"{what} {'<=' if hi_in else '<'} {hi:g}"
    return what


def check_bool(value: Any, param: str, caller: str, constraint: str = "True or False") -> bool:
    """A flag: ``True`` or ``False`` (a NumPy ``np.bool_`` too), as a Python ``bool``; ``0``,
    ``1``, strings and None are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise fail(param, caller, constraint, value)
    return bool(value)


def check_rate(value: Any, param: str, caller: str) -> float:
    """A probability: a real number in [0, 1] (NaN, negatives and > 1 are rejected)."""
    return check_number(value, param, caller, 0, 1)


def check_positive_int(value: Any, param: str, caller: str, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bools rejected): :func:`check_int` with a lower bound."""
    return check_int(value, param, caller, minimum)


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
