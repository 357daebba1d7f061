"""hwlab.errors.check_int / check_number: the one int and number validator, NumPy scalars included."""

import math

import numpy as np
import pytest

from hwlab.errors import HwlabError, check_int, check_number, check_positive_int, check_rate


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), np.int32(3)])
def test_check_int_accepts_python_and_numpy_integers(value):
    out = check_int(value, "n", "f", 0, 63)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value, shown", [
    (True, "True"), (False, "False"), (np.bool_(True), r"np.True_"), (2.0, r"2\.0"),
    (np.float32(2.0), r"np.float32\(2\.0\)"), (math.nan, "nan"), ("3", "'3'"), (None, "None")])
def test_check_int_refuses_bools_floats_nan_strings(value, shown):
    with pytest.raises(HwlabError, match=rf"^n of f must be an integer, got {shown}$"):
        check_int(value, "n", "f")


def test_check_int_bounds_in_the_message():
    with pytest.raises(ValueError, match=r"^n of f must be an integer >= 1, got 0$"):
        check_int(0, "n", "f", minimum=1)
    with pytest.raises(ValueError, match=r"^n of f must be an integer <= 255, got 256$"):
        check_int(256, "n", "f", maximum=255)
    with pytest.raises(ValueError, match=r"^bit of flip must be an integer in \[0, 63\], got "
                                         r"np.int64\(64\)$"):
        check_int(np.int64(64), "bit", "flip", 0, 63)
    assert check_int(0, "n", "f", 0, 0) == 0  # both bounds inclusive
    with pytest.raises(ValueError, match=r"^n of f must be None or an integer >= 1, got -1$"):
        check_int(-1, "n", "f", 1, constraint="None or an integer >= 1")


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float64(0.5), np.int64(1),
                                   np.uint8(1)])
def test_check_number_accepts_ints_floats_numpy_scalars(value):
    out = check_number(value, "p", "f", 0, 1)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value, shown", [
    (True, "True"), (np.bool_(False), "np.False_"), (math.nan, "nan"), (np.float32("nan"),
                                                                        r"np.float32\(nan\)"),
    (math.inf, "inf"), (-math.inf, "-inf"), ("0.5", "'0.5'"), (1j, "1j")])
def test_check_number_refuses_bools_nan_inf_strings(value, shown):
    with pytest.raises(HwlabError, match=rf"^x of f must be a finite number, got {shown}$"):
        check_number(value, "x", "f")


def test_check_number_infinity_allowed_unless_finite():
    assert check_number(math.inf, "t", "f", 0, finite=False) == math.inf
    with pytest.raises(ValueError, match=r"^t of f must be a number >= 0, got nan$"):
        check_number(math.nan, "t", "f", 0, finite=False)  # NaN is never a number here
    with pytest.raises(ValueError, match=r"^t of f must be a finite number >= 0, got inf$"):
        check_number(math.inf, "t", "f", 0)


def test_check_number_bounds_and_inclusive_in_the_message():
    assert check_number(1, "p", "f", 0, 1) == 1.0
    with pytest.raises(ValueError, match=r"^p of f must be a number in \(0, 1\), got 1$"):
        check_number(1, "p", "f", 0, 1, inclusive=(False, False))
    with pytest.raises(ValueError, match=r"^p of f must be a number in \(0, 1\], got 0\.0$"):
        check_number(0.0, "p", "f", 0, 1, inclusive=(False, True))
    with pytest.raises(ValueError, match=r"^lr of f must be a finite number > 0, got 0$"):
        check_number(0, "lr", "f", 0, inclusive=(False, True))
    with pytest.raises(ValueError, match=r"^x of f must be a finite number <= 2\.5, got 3$"):
        check_number(3, "x", "f", maximum=2.5)
    with pytest.raises(ValueError, match=r"^ber of f must be a finite number >= 1e-06, got 1e-07$"):
        check_number(1e-7, "ber", "f", 1e-6)


def test_check_rate_and_check_positive_int_are_the_same_validators():
    assert check_rate(np.float32(0.25), "p", "f") == 0.25
    with pytest.raises(ValueError, match=r"^p of f must be a number in \[0, 1\], got nan$"):
        check_rate(math.nan, "p", "f")
    assert check_positive_int(np.int64(2), "n", "f") == 2
    with pytest.raises(ValueError, match=r"^n of f must be an integer >= 2, got True$"):
        check_positive_int(True, "n", "f", minimum=2)


def test_is_int_and_is_number_agree_with_the_validators():
    from hwlab.errors import is_int, is_number

    assert all(is_int(s, 1) for s in (3, np.int64(3), np.uint8(1)))
    assert not any(is_int(v, 1) for v in (0, True, 1.0, np.float32(1), "1", None))
    assert is_int(5, 0, 5) and not is_int(6, 0, 5)
    assert is_number(np.float32(0.5), 0, 1, (False, False)) and not is_number(0, 0, 1, (False, True))
    assert not any(is_number(v) for v in (True, np.bool_(True), math.nan, math.inf, "1", 1j))
    assert is_number(math.inf, 0, finite=False) and not is_number(math.nan, finite=False)
    assert is_number(math.nan, 0, 1, nan=True) and is_number(np.float32("nan"), nan=True)
    assert not is_number(True, nan=True) and not is_number(2, 0, 1, nan=True)


def test_check_bool_takes_python_and_numpy_bools_only():
    from hwlab.errors import check_bool

    assert check_bool(np.bool_(True), "flag", "f") is True
    assert check_bool(False, "flag", "f") is False
    for value, shown in ((1, "1"), (0, "0"), ("true", "'true'"), (None, "None")):
        with pytest.raises(HwlabError, match=rf"^flag of f must be True or False, got {shown}$"):
            check_bool(value, "flag", "f")
    with pytest.raises(ValueError, match=r"^flag of f must be a bool, got 1$"):
        check_bool(1, "flag", "f", "a bool")
