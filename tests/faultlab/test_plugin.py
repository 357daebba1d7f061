"""The pytest plugin, driven through pytester."""

from __future__ import annotations

# pytester's in-process runs drop the modules they import when they end; import the heavy ones
# here first so that they stay loaded (NumPy and numba extension modules cannot load twice).
import numba  # noqa: F401
import scipy.stats  # noqa: F401
import torch.fx  # noqa: F401

import faultlab._campaign
import faultlab._inject
import faultlab._kernels
import faultlab._resilience  # noqa: F401
import hwlab.graph
import hwlab.metrics  # noqa: F401

INNER = """
import torch
import faultlab as fl

def _model():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.eye(4) * 3.0)
    return m.eval()

X = torch.eye(4).repeat(25, 1)
Y = torch.arange(4).repeat(25)

def test_lsb_flips_are_harmless(assert_resilient):
    r = assert_resilient(_model(), (X, Y), fl.BitFlip(count=2, bits=[0]), min_accuracy=0.99,
                         trials=3)
    # every prediction right in every trial: the Wilson bound of the 400 pooled samples
    assert r.mean == 1.0 and r.ci_high == 1.0 and abs(r.ci_low - 400 / (400 + 1.959964**2)) < 1e-6

def test_exponent_flips_are_not(assert_resilient):
    assert_resilient(_model(), (X, Y), fl.BitFlip(count=4, bits=[30]), min_accuracy=0.9,
                     trials=3)
"""


def _warm_up():
    """Run one tiny campaign in this process first: numba loads modules on its first compile,
    and pytester's in-process run would drop them (they cannot be registered twice)."""
    import torch

    import faultlab as fl

    m = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False)).eval()
    fl.campaign(m, (torch.eye(2), torch.arange(2)), [fl.BitFlip(count=1)], trials=1)


_warm_up()  # at import, before any pytester fixture takes its snapshot of sys.modules


def test_fixture_options_and_summary(pytester):
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-p", "no:xdist", "--fault-trials=4", "--fault-seed=7")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        ("*not resilient to bitflip|bits=30|count=4: mean accuracy * over 4 trials, 95% "
         "interval [[]0.*, *[]], lower bound below min_accuracy 0.9"),
        "*= faultlab resilience checks =*",
        "test*",
        ("*test_lsb_flips_are_harmless*bitflip|bits=0|count=2 * accuracy * 4  1.0000  0.9* "
         ">= 0.990  PASS"),
        "*test_exponent_flips_are_not*bitflip|bits=30|count=4 * accuracy * 4 * >= 0.900  FAIL",
    ])


def test_no_summary_without_checks_and_bad_option(pytester):
    pytester.makepyfile(test_plain="def test_x():\n    assert True\n")
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert "faultlab resilience checks" not in result.stdout.str()
    result = pytester.runpytest("-p", "no:xdist", "--fault-trials=1")
    result.stderr.fnmatch_lines(["*--fault-trials must be an integer >= 2, got 1*"])


def test_helper_outside_pytest_session_records_nothing():
    import torch

    import faultlab as fl
    from faultlab._resilience import RECORDER

    m = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.eye(2))
    x, y = torch.eye(2).repeat(5, 1), torch.arange(2).repeat(5)
    token = RECORDER.set(None)
    try:
        r = fl.assert_resilient(m, (x, y), fl.BitFlip(count=1, bits=[1]), 0.8, trials=2)
    finally:
        RECORDER.reset(token)
    assert r.passed and r.test == "" and r.trials == 2 and r.ci_low < 1.0


LONG = """
import torch
import faultlab as fl

def test_a_resilience_check_whose_name_is_much_longer_than_any_table_column_ends_here(
        assert_resilient):
    m = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False)).eval()
    with torch.no_grad():
        m[0].weight.copy_(torch.eye(4) * 3.0)
    assert_resilient(m, (torch.eye(4), torch.arange(4)), fl.BitFlip(count=1, bits=[0]),
                     min_accuracy=0.5, trials=2)
"""


def test_summary_cuts_long_test_ids_in_the_middle(pytester, monkeypatch):
    pytester.makepyfile(test_long_names=LONG)
    for columns, width in (("80", 60), ("150", 71)):  # 60 at least, else what the rest leaves
        monkeypatch.setenv("COLUMNS", columns)
        result = pytester.runpytest("-p", "no:xdist")
        result.assert_outcomes(passed=1)
        row = next(line for line in result.stdout.lines if "PASS" in line)
        test = row.split(" ")[0]
        assert len(test) == width and "..." in test
        assert test.startswith("test_long_names.py::test_a_r")
        assert test.endswith("_column_ends_here")
    from faultlab.pytest_plugin import _fit

    assert _fit("abcdefghij", 10) == "abcdefghij" and _fit("abcdefghijk", 10) == "abc...hijk"
