"""hwlab.metrics: streaming accumulation equals the whole-set values; definitions; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwlab.metrics import BUILTIN_METRICS, MetricAccumulator, metric_values, resolve_metrics


def _data():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(103, 7, generator=g)  # N x C
    faulty = clean + 0.8 * torch.randn(103, 7, generator=g)
    y = clean.argmax(1).clone()
    y[::3] = torch.randint(0, 7, (35,), generator=g)  # some fault-free mistakes
    return faulty, y, clean


def mean_abs_change(logits, y, clean_logits):
    return float((logits - clean_logits).abs().mean())


def test_definitions_by_hand():
    faulty, y, clean = _data()
    v = metric_values(faulty, y, clean, (*BUILTIN_METRICS, mean_abs_change))
    f, c, t = faulty.argmax(1).numpy(), clean.argmax(1).numpy(), y.numpy()
    assert v["accuracy"] == pytest.approx(np.mean(f == t))
    assert v["sdc"] == pytest.approx(np.mean(f != c))
    assert v["critical_sdc"] == pytest.approx(np.sum((c == t) & (f != t)) / np.sum(c == t))
    top5 = np.argsort(-faulty.numpy(), axis=1)[:, :5]
    assert v["top5"] == pytest.approx(np.mean((top5 == t[:, None]).any(1)))
    assert v["loss"] == pytest.approx(float(F.cross_entropy(faulty, y)), rel=1e-6)
    assert v["mean_abs_change"] == pytest.approx(mean_abs_change(faulty, y, clean), rel=1e-6)
    same = metric_values(clean, y, clean)
    assert same["sdc"] == 0 and same["critical_sdc"] == 0


def test_batches_accumulate_to_the_whole_set_values():
    faulty, y, clean = _data()
    metrics = resolve_metrics((*BUILTIN_METRICS, mean_abs_change), "test")
    acc = MetricAccumulator(metrics)
    for lo in range(0, 103, 10):  # 11 batches, the last one of 3
        acc.update(faulty[lo:lo + 10], y[lo:lo + 10], clean[lo:lo + 10])
    whole = metric_values(faulty, y, clean, (*BUILTIN_METRICS, mean_abs_change))
    got = acc.result()
    for name in BUILTIN_METRICS:
        assert got[name] == pytest.approx(whole[name], rel=1e-6)
    # a per-sample mean averages exactly when weighted by batch size
    assert got["mean_abs_change"] == pytest.approx(whole["mean_abs_change"], rel=1e-5)
    counts = acc.denominators()
    assert counts["accuracy"] == 103
    assert counts["critical_sdc"] == int((clean.argmax(1) == y).sum())
    # only the fault-free top-1 is needed for sdc / critical_sdc
    top = MetricAccumulator(resolve_metrics(("sdc", "critical_sdc"), "test"))
    top.update(faulty, y, clean_top1=clean.argmax(1).to(torch.int32))
    assert top.result()["sdc"] == pytest.approx(whole["sdc"])


def test_empty_denominator_is_nan():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([1, 0])  # the fault-free model gets both wrong
    assert math.isnan(metric_values(logits, y, logits, ("critical_sdc",))["critical_sdc"])


@pytest.mark.parametrize("metrics, match", [
    (("f1",), (r"metrics of t must be names among accuracy, sdc, critical_sdc, top5, loss or "
               r"callables, got 'f1'")),
    ((), r"metrics of t must be a non-empty list"),
    ((lambda a, b, c: 0.0,), r"metrics of t must be callables whose name .* got '<lambda>'"),
    ((("accuracy", lambda a, b, c: 0.0),), r"no built-in column uses, got 'accuracy'"),
    (("sdc", "sdc"), r"metrics of t must be distinct metrics"),
])
def test_bad_metrics(metrics, match):
    with pytest.raises(ValueError, match=match):
        resolve_metrics(metrics, "t")


def test_named_pair_and_bad_return_value():
    (m,) = resolve_metrics((("shift", mean_abs_change),), "t")
    assert m.name == "shift" and not m.proportion
    acc = MetricAccumulator(resolve_metrics((lambda_returning_text,), "t"))
    with pytest.raises(ValueError, match=r"metric 'lambda_returning_text' of "
                                         r"MetricAccumulator.update must be a callable returning"):
        acc.update(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, 3))


def lambda_returning_text(logits, y, clean_logits):
    return "high"
