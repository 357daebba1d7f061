"""Stopping rules as pluggable score functions, fixed T, and the two oracles.

A rule maps the accumulated output ``acc`` (... x C, the running sum up to step ``t``) to a score
per sample; a sample stops at the first step whose score passes the threshold (``>`` when higher
means surer, ``<`` otherwise), or at ``T_max``. The live runner calls the same score function.

* Dynamic Confidence (Li, Jones & Furber, ICCV 2023): top probability of ``softmax(acc / 30)``;
  the official code divides the running sum by the constant 30 (not by t), so confidence grows
  with time; stop when it exceeds the threshold (0.6 in the official demo).
* Entropy (DT-SNN, Li et al. DAC 2023): normalised entropy of ``softmax(acc / t)``; stop when below.
* Margin (SNNCutoff, Wu et al. 2023): top-1 minus top-2 of ``softmax(acc / t)``; stop when above.
  SNNCutoff calibrates one threshold per step; we use one threshold for all steps, like the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hwlab.errors import check, check_positive_int, fail

from ._record import Recording

__all__ = [
    "RULES",
    "Exit",
    "StoppingRule",
    "apply_rule",
    "dynamic_confidence_rule",
    "fixed_steps",
    "get_rule",
    "oracle_any",
    "oracle_stay",
]


@dataclass(frozen=True)
class StoppingRule:
    """A confidence score and the direction in which it says "stop"."""

    name: str
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (acc ...xC, t ...) -> ...
    higher_stops: bool = True  # True: stop when score > threshold; False: when score < threshold
    default_threshold: float = 0.5

    def stops(self, acc: torch.Tensor, t: torch.Tensor, threshold: float) -> torch.Tensor:
        s = self.score(acc, t).double()  # compare in float64 everywhere (offline, live, sweeps)
        return s > threshold if self.higher_stops else s < threshold


def dynamic_confidence_rule(constant: float = 30.0) -> StoppingRule:
    """Dynamic Confidence with the softmax temperature ``constant`` (30 in the official code)."""
    check(isinstance(constant, (int, float)) and constant > 0, "constant",
          "dynamic_confidence_rule", "a number > 0", constant)

    def score(acc, t):
        return torch.softmax(acc / constant, dim=-1).amax(dim=-1)  # max_c softmax(acc / 30)

    return StoppingRule("dynamic-confidence", score, True, 0.6)


def _entropy(acc, t):
    p = torch.softmax(acc / t.unsqueeze(-1).to(acc.dtype), dim=-1)  # mean output -> probs
    h = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)  # Shannon entropy (nats)
    return h / math.log(acc.shape[-1])  # normalised to [0, 1] as in DT-SNN


def _margin(acc, t):
    p = torch.softmax(acc / t.unsqueeze(-1).to(acc.dtype), dim=-1)
    top2 = p.topk(2, dim=-1).values  # ... x 2
    return top2[..., 0] - top2[..., 1]


RULES: dict[str, StoppingRule] = {
    "dynamic-confidence": dynamic_confidence_rule(30.0),
    "entropy": StoppingRule("entropy", _entropy, False, 0.1),
    "margin": StoppingRule("margin", _margin, True, 0.5),
}


def get_rule(rule) -> StoppingRule:
    if isinstance(rule, StoppingRule):
        return rule
    if rule in RULES:
        return RULES[rule]
    raise fail("rule", "get_rule", f"a StoppingRule or one of {', '.join(RULES)}", rule)


@dataclass(frozen=True)
class Exit:
    """Where each sample stops and what it predicts there."""

    steps: torch.Tensor  # N int64 in 1..T_max
    predictions: torch.Tensor  # N int64
    correct: torch.Tensor  # N bool

    @property
    def accuracy(self) -> float:
        return float(self.correct.double().mean())

    @property
    def mean_steps(self) -> float:
        return float(self.steps.double().mean())


def _exit_at(rec: Recording, stop_index: torch.Tensor) -> Exit:
    pred = rec.predictions.gather(1, stop_index[:, None])[:, 0]  # N
    return Exit(stop_index + 1, pred, pred == rec.labels)


def step_grid(rec: Recording) -> torch.Tensor:
    return torch.arange(1, rec.steps + 1).expand(len(rec), rec.steps)  # N x T (t = 1..T)


def scores(rec: Recording, rule) -> torch.Tensor:
    """N x T scores of ``rule`` at every step of the recording."""
    return get_rule(rule).score(rec.accumulated, step_grid(rec))


def _first_stop(stop: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last axis, the last index where none is True."""
    stop = stop.clone()
    stop[..., -1] = True  # T_max always stops
    return stop.to(torch.uint8).argmax(dim=-1)  # argmax returns the first maximum


def apply_rule(rec: Recording, rule, threshold: float) -> Exit:
    """Offline early exit: stop each sample at the first step whose score passes ``threshold``."""
    check(isinstance(rec, Recording), "rec", "apply_rule", "a Recording", type(rec).__name__)
    r = get_rule(rule)
    check(isinstance(threshold, (int, float)) and math.isfinite(threshold), "threshold",
          "apply_rule", "a finite number", threshold)
    stop = r.stops(rec.accumulated, step_grid(rec), float(threshold))  # N x T
    return _exit_at(rec, _first_stop(stop))


def fixed_steps(rec: Recording, steps: int) -> Exit:
    """Every sample runs ``steps`` steps."""
    check_positive_int(steps, "steps", "fixed_steps")
    check(steps <= rec.steps, "steps", "fixed_steps", f"<= the recorded {rec.steps}", steps)
    return _exit_at(rec, torch.full((len(rec),), steps - 1, dtype=torch.long))


def oracle_any(rec: Recording) -> Exit:
    """The paper's potential: stop at the first step where the prediction is correct.

    A sample never correct runs to ``T_max`` and counts as wrong.
    """
    return _exit_at(rec, _first_stop(rec.correct))


def oracle_stay(rec: Recording) -> Exit:
    """Stop at the earliest step after which the prediction stays correct up to ``T_max``."""
    c = rec.correct  # N x T
    stays = torch.flip(torch.cummin(torch.flip(c.to(torch.uint8), [1]), dim=1).values, [1])
    # stays[n, t] = 1 iff correct at every step t..T_max; wrong at T_max -> all zero -> T_max
    return _exit_at(rec, _first_stop(stays.bool()))
