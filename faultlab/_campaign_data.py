"""A campaign's data and its fault-free pass (what every trial is compared with).

:func:`prepare` runs the model once over the data, before any run is opened: it checks that the
model accepts the data (one clear error naming both shapes), validates the labels against the
model's outputs, fingerprints the data, measures the fault-free metrics and keeps the fault-free
logits per batch (or only their top-1 class, when no user metric needs the logits) if they fit in
``cache_bytes``; otherwise each trial recomputes them batch by batch (the weight faults are lifted
for that batch and put back, which costs the faults, not a model copy).

Memory: in-memory data is used through views; a DataLoader is read batch by batch, so memory is
one batch plus the model plus whatever the caches hold (bounded by ``cache_bytes`` each).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

import torch
from torch import nn

from hwlab.errors import check, fail
from hwlab.metrics import MetricAccumulator

__all__ = ["CACHE_BYTES", "CampaignData", "Clean", "input_dtype", "prepare"]

log = logging.getLogger(__name__)

CACHE_BYTES = 256 * 2**20  # per cache (clean logits; delayed-start activations): fits a laptop


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs are cast to: the model's half / bfloat16 dtype, else float32."""
    for p in model.parameters():
        if p.dtype in (torch.float16, torch.bfloat16):
            return p.dtype
    return torch.float32


class CampaignData:
    """The evaluation data: in-memory batches (views, cast once) or a re-iterable stream."""

    def __init__(self, data, batch_size: int, caller: str, model: nn.Module):
        from hwlab.data import Split, TextSplit, iter_batches

        self.caller, self.batch_size = caller, int(batch_size)
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.dtype = input_dtype(model)
        self.name = data.name or None if isinstance(data, (Split, TextSplit)) else None
        if isinstance(data, TextSplit):  # the corpus hash in every row's dataset column:
            self.name = f"{data.name}@{data.sha256[:12]}"  # two texts never aggregate together
        in_memory = isinstance(data, (Split, TextSplit)) or (
            isinstance(data, (tuple, list)) and len(data) == 2
            and all(hasattr(t, "shape") for t in data))
        self.stream = None if in_memory else data
        self.memory = None
        if in_memory:
            x, y = next(iter_batches(data, 2**62, caller))  # validated once, as one view
            x = self._cast(x)
            y = y.to(self.device)
            self.memory = [(x[i:i + batch_size], y[i:i + batch_size])  # views
                           for i in range(0, len(y), batch_size)]
        else:
            check(iter(data) is not data, "data", caller, "a Split, an (x, y) pair, a DataLoader "
                  "or another re-iterable of (x, y) batches (each trial reads it again)",
                  type(data).__name__ + " (a one-shot iterator)")
            sampler = getattr(data, "sampler", None)
            check(type(sampler).__name__ != "RandomSampler", "data", caller,
                  "a DataLoader without shuffling (every trial must see the same batches)",
                  "DataLoader(shuffle=True)")
        self.checksums: list[tuple] | None = None  # per-batch label checksums of a stream

    def batches(self):
        """``(x, y)`` batches on the model's device and input dtype."""
        if self.memory is not None:
            yield from self.memory
            return
        from hwlab.data import iter_batches

        for i, (x, y) in enumerate(iter_batches(self.stream, self.batch_size, self.caller)):
            y = y.to(self.device)
            if self.checksums is not None:
                got = _checksum(y)
                ok = i < len(self.checksums) and self.checksums[i] == got
                check(ok, "data", self.caller, "an iterable that yields the same batches on "
                      "every pass (each trial reads it again)", f"a different batch {i}")
            yield self._cast(x), y

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        """Images to the model's device and input dtype; token ids (integers) keep theirs."""
        if x.is_floating_point():
            return x.to(device=self.device, dtype=self.dtype)
        return x.to(self.device)


def _checksum(y: torch.Tensor) -> tuple:
    """Cheap order-sensitive label checksum (catches a shuffling or changing stream)."""
    y = y.reshape(-1)  # B, or B x T targets of a sequence model
    w = torch.arange(1, len(y) + 1, device=y.device)
    return len(y), int(y.sum()), int((y * w).sum())


class Clean:
    """The fault-free pass: metric values, denominators and (if they fit) per-batch outputs."""

    def __init__(self, values, counts, logits, top1, fingerprint, n, latency_ms, in_shape):
        self.values, self.counts, self.in_shape = values, counts, in_shape
        self.logits, self.top1 = logits, top1  # lists per batch, or None (recompute)
        self.fingerprint, self.n, self.latency_ms = fingerprint, n, latency_ms


def prepare(model: nn.Module, data: CampaignData, metrics, cache_bytes: int,
            model_name: str | None = None, full: bool = True) -> Clean:
    """Run the fault-free model once over ``data`` (see the module docstring).

    ``full=False`` (nothing needs the fault-free results: no clean row, no metric comparing
    with the fault-free model, no fault dropping) runs the model on the first two samples only
    (the shape check) and still reads every batch for the label check and the fingerprint; the
    fault-free values are then NaN.
    """
    caller = data.caller
    keep_logits = any(m.needs_clean_logits for m in metrics)
    keep_top1 = not keep_logits and any(m.needs_clean_top1 for m in metrics)
    acc = MetricAccumulator(metrics)
    h = hashlib.sha256()
    logits_list, top1_list, sums, kept, n, seconds = [], [], [], 0, 0, 0.0
    what = model_name or type(model).__name__
    with torch.no_grad():
        for i, (x, y) in enumerate(data.batches()):
            t0 = time.perf_counter()
            if i == 0:
                try:  # without ``full`` two samples are enough for the shape check
                    logits = model(x if full else x[:2])  # B x C
                except Exception as exc:
                    raise fail("data", caller, f"inputs that model {what} accepts (it raised "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                               f"inputs of shape {tuple(x.shape)}") from exc
                rows = x.shape[0] if full else min(2, x.shape[0])
                seq = y.dim() == 2  # token sequences: B x T x vocab logits per position
                ok = isinstance(logits, torch.Tensor) and logits.dim() == 2 + seq \
                    and tuple(logits.shape[:1 + seq]) == (rows, *y.shape[1:])
                check(ok, "model", caller, (f"a language model returning logits of shape {rows} "
                      f"x {y.shape[1]} x vocab" if seq else f"a classifier returning logits of "
                      f"shape {rows} x classes") + f" for inputs of shape {(rows, *x.shape[1:])}",
                      f"{what} returning {_shape(logits)}")
                classes, in_shape = logits.shape[-1], tuple(x.shape[1:])
            elif full:
                logits = model(x)
            seconds += time.perf_counter() - t0
            lo, hi = int(y.min()), int(y.max())
            check(lo >= 0 and hi < classes, "data", caller,
                  f"labels in [0, {classes}) (model {what} has {classes} outputs)",
                  f"labels from {lo} to {hi}")
            if full:
                acc.update(logits, y, logits)
            h.update(f"{x.dtype}|{tuple(x.shape)}|".encode())
            h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
            h.update(y.detach().cpu().contiguous().numpy().tobytes())
            sums.append(_checksum(y))
            n += len(y)
            if keep_logits or keep_top1:
                item = logits if keep_logits else logits.argmax(dim=-1).to(torch.int32)
                kept += item.numel() * item.element_size()
                (logits_list if keep_logits else top1_list).append(item)
                if kept > cache_bytes:  # too large: every trial recomputes them per batch
                    keep_logits = keep_top1 = False
                    logits_list, top1_list = [], []
                    log.info("fault-free logits exceed cache_bytes=%d: recomputed per trial",
                             cache_bytes)
    if data.stream is not None:
        data.checksums = sums
    values = acc.result() if full else {m.name: math.nan for m in metrics}
    return Clean(values, acc.denominators(), logits_list if keep_logits else None,
                 top1_list if keep_top1 else None, h.hexdigest()[:16], n, 1e3 * seconds,
                 in_shape)


def _shape(t) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
