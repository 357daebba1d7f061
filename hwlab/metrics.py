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

Sequence models: logits ``B x T x V`` with targets ``B x T`` (the next token at every position)
are scored per token: every position is one sample (accuracy = next-token top-1, sdc = share of
positions whose top-1 changes, loss = the sum of token NLLs over the token count, in nats; bits
per character are ``loss / ln 2``); a user metric gets the B x T x V logits and is weighted by
the B windows. Generation
under greedy decoding is scored by :func:`generation_metrics` (first divergent position, exact
match, non-finite rate).

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

__all__ = ["BUILTIN_METRICS", "GENERATION_METRICS", "Metric", "MetricAccumulator",
           "generation_metrics", "metric_values", "resolve_metrics"]

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
        ``clean_top1`` (B; enough for sdc / critical_sdc). Sequence logits B x T x V with
        ``y`` B x T count every position as one sample."""
        seq = (logits, y, clean_logits) if logits.dim() == 3 else None  # for user metrics
        if logits.dim() == 3:  # B x T x V: one sample per position
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            if clean_logits is not None:
                clean_logits = clean_logits.reshape(-1, clean_logits.shape[-1])
            if clean_top1 is not None:
                clean_top1 = clean_top1.reshape(-1)
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
            else:  # a sequence model's user metric sees B x T x V, weighted by B windows
                value = m.fn(*seq) if seq is not None else m.fn(logits, y, clean_logits)
                weight = n if seq is None else int(seq[1].shape[0])
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    value = value.item()
                check(is_number(value, finite=False, nan=True), f"metric {name!r}",
                      "MetricAccumulator.update", "a callable returning one number", value)
                self.sums[name] += float(value) * weight
                self.counts[name] += weight

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
    check(isinstance(logits, torch.Tensor) and logits.dim() in (2, 3), "logits", caller,
          "a 2-d tensor N x classes (or B x T x vocab for a sequence model)",
          getattr(logits, "shape", type(logits).__name__))
    check(isinstance(y, torch.Tensor) and y.shape == logits.shape[:-1], "y", caller,
          f"a tensor of shape {tuple(logits.shape[:-1])}", getattr(y, "shape", type(y).__name__))
    needs = any(m.needs_clean_logits or m.needs_clean_top1 for m in resolved)
    if needs and (clean_logits is None or clean_logits.shape != logits.shape):
        raise fail("clean_logits", caller, f"a tensor of shape {tuple(logits.shape)} for "
                   "sdc, critical_sdc and user metrics", getattr(clean_logits, "shape", None))
    acc = MetricAccumulator(resolved)
    acc.update(logits, y.long(), clean_logits)
    return acc.result()


GENERATION_METRICS = ("exact_match", "first_divergence", "diverged_by", "nonfinite")


def generation_metrics(tokens: torch.Tensor, clean_tokens: torch.Tensor,
                       logits: torch.Tensor | None = None) -> dict[str, float]:
    """Greedy generations (``B x L`` token ids) scored against the fault-free continuations.

    ``exact_match``: share of the B continuations equal to the fault-free one in all L tokens.
    ``first_divergence``: mean over the B prompts of the first differing position (0-based;
    L when the continuation matches, so a later divergence scores higher). ``diverged_by``:
    share of prompts whose first divergence is within the first L / 4 generated tokens (the
    early steps LLMFI finds most vulnerable). ``nonfinite``: share of prompts with a NaN or
    inf logit at any step (``logits`` B x L x V; NaN when not given) - check it before
    trusting the tokens: the argmax of a NaN row is arbitrary.
    """
    check(isinstance(tokens, torch.Tensor) and tokens.dim() == 2, "tokens",
          "generation_metrics", "a B x L tensor of token ids",
          getattr(tokens, "shape", type(tokens).__name__))
    check(isinstance(clean_tokens, torch.Tensor) and clean_tokens.shape == tokens.shape,
          "clean_tokens", "generation_metrics", f"a tensor of shape {tuple(tokens.shape)}",
          getattr(clean_tokens, "shape", type(clean_tokens).__name__))
    b, length = tokens.shape
    differ = tokens != clean_tokens  # B x L
    first = torch.where(differ.any(1), differ.int().argmax(1), torch.full((b,), length))  # B
    nonfinite = math.nan
    if logits is not None:
        check(isinstance(logits, torch.Tensor) and logits.shape[:2] == tokens.shape, "logits",
              "generation_metrics", f"None or a tensor of shape {tuple(tokens.shape)} x V",
              getattr(logits, "shape", type(logits).__name__))
        nonfinite = float((~torch.isfinite(logits)).flatten(1).any(1).float().mean())
    return {"exact_match": float((first == length).float().mean()),
            "first_divergence": float(first.float().mean()),
            "diverged_by": float((first < max(1, length // 4)).float().mean()),
            "nonfinite": nonfinite}
