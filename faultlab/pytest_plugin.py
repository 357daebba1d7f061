"""pytest plugin (``pytest11`` entry point ``faultlab``): fault-campaign resilience tests.

Gives every project that installs hwlab:

- the ``assert_resilient`` fixture (the function :func:`faultlab.assert_resilient`):
  ``assert_resilient(model, data, fault_model, min_accuracy, trials=20, confidence=0.95)`` passes
  only if the lower confidence bound of the accuracy under faults is >= ``min_accuracy``
  (``metric="sdc", max_value=...`` and the other campaign metrics likewise; the interval of a
  proportion is Wilson's on the pooled trials, inside [0, 1]);
- options ``--fault-trials N`` and ``--fault-seed S`` that override every check's trials / seed;
- a "faultlab resilience checks" table at the end of the terminal report.

Loaded in every pytest session of this repository, so it imports nothing heavy at module level
and its hooks never raise during collection.
"""

from __future__ import annotations

import pytest

_KEY = pytest.StashKey()  # config.stash[_KEY]: the session's Recorder


def pytest_addoption(parser):
    group = parser.getgroup("faultlab", "faultlab fault campaigns")
    group.addoption("--fault-trials", type=int, default=None, metavar="N",
                    help="trials of every assert_resilient check (overrides the test's value)")
    group.addoption("--fault-seed", type=int, default=None, metavar="S",
                    help="campaign seed of every assert_resilient check (overrides the test's)")


def pytest_configure(config):
    from faultlab._resilience import Recorder

    trials, seed = config.getoption("fault_trials"), config.getoption("fault_seed")
    if trials is not None and trials < 2:
        raise pytest.UsageError(f"--fault-trials must be an integer >= 2, got {trials}")
    if seed is not None and seed < 0:
        raise pytest.UsageError(f"--fault-seed must be an integer >= 0, got {seed}")
    config.stash[_KEY] = Recorder(trials=trials, seed=seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    from faultlab._resilience import RECORDER

    rec = item.config.stash.get(_KEY, None)
    if rec is None:
        return (yield)
    rec.test = item.nodeid
    token = RECORDER.set(rec)
    try:
        return (yield)
    finally:
        RECORDER.reset(token)


@pytest.fixture
def assert_resilient():
    """``assert_resilient(model, data, fault_model, min_accuracy, trials=20, confidence=0.95,
    seed=0, *, metric="accuracy", max_value=None, **campaign_kw)``: see
    :func:`faultlab.assert_resilient`."""
    from faultlab._resilience import assert_resilient as check

    return check


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rec = config.stash.get(_KEY, None)
    if rec is None or not rec.results:
        return
    tr = terminalreporter
    tr.write_sep("=", "faultlab resilience checks")
    # the test id takes what a wide terminal leaves beside the other columns (78 characters),
    # at least 60: a longer id is cut in the middle (its file and its test name's end stay)
    room = max(60, getattr(getattr(tr, "_tw", None), "fullwidth", 80) - 79)
    width = max(4, min(room, max(len(r.test) for r in rec.results)))
    head = f"{'test':<{width}} {'fault model':<26} {'metric':<12} {'trials':>6} {'mean':>7} " \
           f"{'bound':>7} {'limit':>8}  result"
    tr.write_line(head)
    for r in rec.results:
        upper = r.max_value is not None
        bound, limit = (r.ci_high, f"<= {r.max_value:.3f}") if upper else \
            (r.ci_low, f">= {r.min_accuracy:.3f}")
        tr.write_line(f"{_fit(r.test, width):<{width}} {_fit(r.fault_model, 26):<26} "
                      f"{_fit(r.metric, 12):<12} {r.trials:>6} {r.mean:>7.4f} {bound:>7.4f} "
                      f"{limit:>8}  {'PASS' if r.passed else 'FAIL'}")


def _fit(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters (the file and the test name stay)."""
    if len(text) <= width:
        return text
    head = (width - 3) // 2
    return f"{text[:head]}...{text[len(text) - (width - 3 - head):]}"
