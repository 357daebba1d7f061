"""Detectors of silent data corruption in a training step, each a small object with a phase.

``pre`` detectors look at the step before the update (the loss, the gradients), ``post``
detectors after it (the weights, the optimizer state), so a recovery policy can act before a
bad update lands or undo it. Each reads one reduction over the tensors (``torch._foreach_norm``:
one pass over the gradients or the weights), so the cost is a fraction of a forward pass.

Defaults and where they come from (../shared/papers/training-faults.md):

* :class:`NonFinite`: NaN / Inf in the loss, the gradients or the updated weights (the
  "immediate INF/NaN" class of He et al., ISCA'23).
* :class:`LossSpike` / :class:`GradSpike`: value above ``mean + z * std`` of the last ``window``
  accepted values (the loss and gradient-norm spikes of Altenbernd et al., CCGrid'26; the notes
  give z = 4-6 over 50-100 steps: we take window 50 and z = 6, the conservative end, because
  natural spikes are false positives), after ``warmup`` accepted steps.
* :class:`MomentBound`: ``max |m| >= bound`` for Adam's first moment after the update (the ISCA'23
  artifact's check, bound 20.0 as written there; a workload constant: set it from a fault-free
  run, e.g. 10 x its max |m|).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch

from hwlab.errors import check_int, check_number

__all__ = ["DEFAULT_DETECTORS", "Frozen", "GradSpike", "LossSpike", "MomentBound", "NonFinite",
           "norm_of", "step_stats"]


def norm_of(tensors) -> float:
    """The L2 norm of all ``tensors`` together; inf / nan when an element is. One fused pass in
    the tensors' dtype, again in float64 only when that is not finite (a finite float32 of 1e35
    squares past float32's range)."""
    if not tensors:
        return 0.0
    norms = [n.float() for n in torch._foreach_norm(tensors)]  # bf16 / fp16 tensors: as fp32
    total = float(torch.linalg.vector_norm(torch.stack(norms)))
    if math.isfinite(total):
        return total
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float64)  # one per tensor
    return float(torch.linalg.vector_norm(torch.stack(norms)))


class _ZScore:
    """Running window of accepted values; ``spike(v)`` is v > mean + z * std after warmup."""

    def __init__(self, window: int, z: float, warmup: int):
        self.values: deque = deque(maxlen=window)
        self.z, self.warmup = z, warmup

    def spike(self, v: float) -> bool:
        n = len(self.values)
        if n < self.warmup:
            return False
        mean = sum(self.values) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in self.values) / max(n - 1, 1))
        return v > mean + self.z * std

    def accept(self, v: float) -> None:
        self.values.append(v)


@dataclass(frozen=True)
class NonFinite:
    """NaN / Inf in the loss or a gradient (pre) and in the weights (post); the value reported
    is the loss or the tensors' norm."""

    name = "nonfinite"
    phases = ("pre", "post")

    def state(self):
        return None

    def check(self, phase, stats, state) -> float | None:
        if phase == "pre":
            if not math.isfinite(stats["loss"]):
                return stats["loss"]
            return None if stats["grad_finite"] else stats["grad_norm"]
        return None if stats["weight_finite"] else stats["weight_norm"]


@dataclass(frozen=True)
class _Spike:
    window: int = 50  # steps of history (Altenbernd et al.: 50-100)
    z: float = 6.0  # standard deviations above the mean (notes: 4-6; 6 = fewest false alarms)
    warmup: int = 10  # accepted steps before it may fire (a mean of fewer is noise)
    phases = ("pre",)
    stat = ""

    def __post_init__(self):
        check_int(self.window, "window", type(self).__name__, 2)
        check_number(self.z, "z", type(self).__name__, 0, inclusive=(False, True))
        check_int(self.warmup, "warmup", type(self).__name__, 2, self.window)

    def state(self):
        return _ZScore(self.window, self.z, self.warmup)

    def check(self, phase, stats, state) -> float | None:
        v = stats[self.stat]
        if not math.isfinite(v):
            return None  # NonFinite's case
        if state.spike(v):
            return v
        state.accept(v)
        return None


@dataclass(frozen=True)
class LossSpike(_Spike):
    """The step's loss above mean + z * std of the last ``window`` accepted losses."""

    name = "loss_spike"
    stat = "loss"


@dataclass(frozen=True)
class GradSpike(_Spike):
    """The gradients' L2 norm above mean + z * std of the last ``window`` accepted norms."""

    name = "grad_spike"
    stat = "grad_norm"


@dataclass(frozen=True)
class MomentBound:
    """max |Adam first moment| >= ``bound`` after the update (ISCA'23 artifact: m < 20.0)."""

    bound: float = 20.0  # as in the ISCA'23 artifact (my_adam.py); workload-specific
    name = "moment_bound"
    phases = ("post",)

    def __post_init__(self):
        check_number(self.bound, "bound", "MomentBound", 0, inclusive=(False, True))

    def state(self):
        return None

    def check(self, phase, stats, state) -> float | None:
        v = stats.get("moment_max")
        return v if v is not None and not v < self.bound else None


DEFAULT_DETECTORS = (NonFinite(), LossSpike(), GradSpike(), MomentBound())


def step_stats(phase: str, losses: dict, params: list, optimizer) -> dict:
    """What the detectors of ``phase`` read: the loss (sum of the step's losses), and ``pre``
    the gradients' norm and finiteness, ``post`` the weights' and Adam's max |m|."""
    stats = {"loss": float(sum(losses.values())) if losses else 0.0}
    with torch.no_grad():
        if phase == "pre":
            grads = [p.grad for p in params if p.grad is not None]
            stats["grad_norm"] = norm_of(grads)
            stats["grad_finite"] = _all_finite(grads, stats["grad_norm"])
        else:
            stats["weight_norm"] = norm_of(params)
            stats["weight_finite"] = _all_finite(params, stats["weight_norm"])
            ms = [optimizer.state[p]["exp_avg"] for p in params
                  if "exp_avg" in optimizer.state.get(p, {})]
            if ms:
                stats["moment_max"] = _abs_max(ms)
    return stats


def _abs_max(tensors) -> float:
    """max |x| over ``tensors`` (NaN when one holds NaN): fused abs and max (the inf-norm of
    ``_foreach_norm`` costs 5x more on CPU: 192 vs 35 us for lenet5's Adam moments)."""
    if hasattr(torch, "_foreach_max"):
        return float(torch.stack(torch._foreach_max(torch._foreach_abs(tensors))).max())
    return float(torch.stack([t.abs().max() for t in tensors]).max())


def _all_finite(tensors, norm: float) -> bool:
    """No NaN / Inf in ``tensors`` (checked element-wise only when their norm is not finite: a
    finite value of 1e20 squares past float32's range)."""
    return math.isfinite(norm) or all(bool(torch.isfinite(t).all()) for t in tensors)


class Frozen:
    """A detector's state read-only: a re-check must not add the re-run step to its history."""

    def __init__(self, state):
        self._s = state

    def __getattr__(self, name):
        if name == "accept":
            return lambda v: None
        return getattr(self._s, name)
