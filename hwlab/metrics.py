"""Evaluation metrics of a classifier under faults, accumulated batch by batch.

>>> from hwlab.metrics import MetricAccumulator, resolve_metrics
>>> acc = MetricAccumulator(resolve_metrics(("accuracy", "sdc", "critical_sdc"), "demo"))
>>> for x, y in batches:                        # any number of batches
...     acc.update(faulty(x), y, clean_top1=clean(x).argmax(1))
>>> acc.result()                                # {"accuracy": ..., "sdc": ..., ...}

Built-in metrics (each a result column of the store; all but ``loss`` are proportions in [0, 1]):

``accuracy``
    top-1 accuracy: the fraction of samples whose arg-max class is the label.
``sdc``
    silent data corruption: the fraction of *all* samples whose top-1 class differs from the
    fault-free model's top-1 class (whether or not either is correct). Denominator: N.
``critical_sdc``
    the fraction of the samples the fault-free model classifies correctly whose faulty top-1 is
    wrong. Denominator: the number of fault-free-correct samples (NaN when there are none).
``top5``
    the fraction of samples whose label is among the ``min(5, classes)`` largest logits.
``loss``
    mean cross-entropy ``-log softmax(logits)[y]`` in nats (``inf`` / NaN when a fault makes the
    logits overflow: reported as it is).

A user metric is any callable ``metric(logits, y, clean_logits) -> float``; its column name is
its ``__name__`` (or give ``(name, fn)``). It is called once per batch and the campaign value is
the mean of the batch values weighted by batch size, which is exact for a per-sample mean (an
accuracy-like metric); for any other statistic give a batch size that covers the data.

State is a running sum and a count per metric (float64), so memory is bounded by one batch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hwlab.errors import check, fail, is_number

__all__ = ["BUILTIN_METRICS", "Metric", "MetricAccumulator", "metric_values", "resolve_metrics"]

BUILTIN_METRICS = ("accuracy", "sdc", "critical_sdc", "top5", "loss")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # a store column name (hwlab.store.ensure_columns)
_STORE_COLUMNS = frozenset({  # result columns a user metric must not shadow
    "run_id", "key", "module", "method", "model", "dataset", "variant", "fault_model",
    "fault_rate", "trial", "seed", "latency_ms", "memory_bytes", "timesteps", "params", "extra",
    "dtype", "study", "rowid", "oid", "_rowid_"})


@dataclass(frozen=True)
class Metric:
    """One metric: a built-in name or a user callable ``fn(logits, y, clean_logits)``."""

    name: str  # the result column
    fn: Callable | None = None  # None for a built-in
    proportion: bool = False  # a fraction in [0, 1]: intervals use a binomial (Wilson) form
    higher_is_better: bool = True  # accuracy, top5: True; sdc, critical_sdc, loss: False

    @property
    def needs_clean_logits(self) -> bool:
        return self.fn is not None

    @property
    def needs_clean_top1(self) -> bool:
        return self.name in ("sdc", "critical_sdc")


_BUILTIN = {
    "accuracy": Metric("accuracy", None, True, True),
    "sdc": Metric("sdc", None, True, False),
    "critical_sdc": Metric("critical_sdc", None, True, False),
    "top5": Metric("top5", None, True, True),
    "loss": Metric("loss", None, False, False),
}


def resolve_metrics(metrics, caller: str) -> tuple[Metric, ...]:
    """Validate ``metrics`` (a name, a callable, a ``(name, fn)`` pair or a sequence of them).

    Names must be among :data:`BUILTIN_METRICS`; a callable's column name is its ``__name__``
    and must be a store column name (``[a-z_][a-z0-9_]*``) that no built-in column uses.
    Duplicates are an error.
    """
    items = (metrics,) if isinstance(metrics, str) or callable(metrics) else metrics
    if isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], str) \
            and callable(items[1]) and items[0] not in _BUILTIN:
        items = (items,)
    ok = isinstance(items, (list, tuple)) and len(items) > 0
    check(ok, "metrics", caller, f"a non-empty list of {', '.join(BUILTIN_METRICS)} or "
          "callables metric(logits, y, clean_logits)", metrics)
    out = []
    for m in items:
        if isinstance(m, str):
            check(m in _BUILTIN, "metrics", caller,
                  f"names among {', '.join(BUILTIN_METRICS)} or callables", m)
            out.append(_BUILTIN[m])
            continue
        if isinstance(m, (tuple, list)) and len(m) == 2 and isinstance(m[0], str):
            name, fn = m
        else:
            name, fn = getattr(m, "__name__", None), m
        check(callable(fn), "metrics", caller,
              f"names among {', '.join(BUILTIN_METRICS)} or callables", m)
        ok = isinstance(name, str) and _NAME.fullmatch(name) is not None
        check(ok and name not in _STORE_COLUMNS and name not in _BUILTIN, "metrics", caller,
              "callables whose name (__name__, or a (name, fn) pair) is a column name matching "
              "[a-z_][a-z0-9_]* that no built-in column uses", name)
        out.append(Metric(name, fn, False, True))
    names = [m.name for m in out]
    check(len(set(names)) == len(names), "metrics", caller, "distinct metrics", names)
    return tuple(out)


class MetricAccumulator:
    """Running sums and counts of ``metrics`` over batches; :meth:`result` gives the values."""

    def __init__(self, metrics: tuple[Metric, ...]):
        self.metrics = metrics
        self.sums = {m.name: 0.0 for m in metrics}
        self.counts = {m.name: 0 for m in metrics}

    def update(self, logits: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor | None
               = None, clean_top1: torch.Tensor | None = None) -> None:
        """Add one batch: ``logits`` B x C, ``y`` B, fault-free ``clean_logits`` (B x C) or
        ``clean_top1`` (B; enough for sdc / critical_sdc)."""
        pred = logits.argmax(dim=1)  # B
        n = int(y.shape[0])
        if clean_top1 is None and clean_logits is not None:
            clean_top1 = clean_logits.argmax(dim=1)  # B
        for m in self.metrics:
            name = m.name
            if name == "accuracy":
                self.sums[name] += int((pred == y).sum())
                self.counts[name] += n
            elif name == "sdc":
                self.sums[name] += int((pred != clean_top1).sum())
                self.counts[name] += n
            elif name == "critical_sdc":
                base = clean_top1 == y  # B: fault-free correct
                self.sums[name] += int((base & (pred != y)).sum())
                self.counts[name] += int(base.sum())
            elif name == "top5":
                k = min(5, logits.shape[1])
                top = logits.topk(k, dim=1).indices  # B x k
                self.sums[name] += int((top == y[:, None]).any(dim=1).sum())
                self.counts[name] += n
            elif name == "loss":
                ce = torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
                self.sums[name] += float(ce)
                self.counts[name] += n
            else:
                value = m.fn(logits, y, clean_logits)
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    value = value.item()
                check(is_number(value, finite=False, nan=True), f"metric {name!r}",
                      "MetricAccumulator.update", "a callable returning one number", value)
                self.sums[name] += float(value) * n
                self.counts[name] += n

    def result(self) -> dict[str, float]:
        """``{name: value}``; a metric with an empty denominator is NaN."""
        return {k: (self.sums[k] / self.counts[k] if self.counts[k] else math.nan)
                for k in self.sums}

    def denominators(self) -> dict[str, int]:
        """The count behind each proportion (samples; fault-free-correct for critical_sdc)."""
        return dict(self.counts)


def metric_values(logits: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor | None = None,
                  metrics=BUILTIN_METRICS, caller: str = "metric_values") -> dict[str, float]:
    """The metrics of one set of logits (N x C) against labels and fault-free logits."""
    resolved = resolve_metrics(metrics, caller)
    check(isinstance(logits, torch.Tensor) and logits.dim() == 2, "logits", caller,
          "a 2-d tensor N x classes", getattr(logits, "shape", type(logits).__name__))
    check(isinstance(y, torch.Tensor) and y.shape == (logits.shape[0],), "y", caller,
          f"a 1-d tensor of length {logits.shape[0]}", getattr(y, "shape", type(y).__name__))
    needs = any(m.needs_clean_logits or m.needs_clean_top1 for m in resolved)
    if needs and (clean_logits is None or clean_logits.shape != logits.shape):
        raise fail("clean_logits", caller, f"a tensor of shape {tuple(logits.shape)} for "
                   "sdc, critical_sdc and user metrics", getattr(clean_logits, "shape", None))
    acc = MetricAccumulator(resolved)
    acc.update(logits, y.long(), clean_logits)
    return acc.result()
