"""One measurement of a language model under faults: teacher-forced token metrics through the KV
cache and free-running greedy generation, both against the fault-free model.

Teacher forcing: the first ``prompt`` characters of every window are the prefill pass, the
others are fed one per decode step (the golden text, not the model's own output), so every
position is scored at the stage that computes it; generation: greedy from the same prompts to the
end of the block. A fault context (``ctx()``) is entered once per pass, so step-counted
activation faults hit the same step in both passes.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from hwlab.metrics import MetricAccumulator, generation_metrics, resolve_metrics

__all__ = ["Clean", "measure", "teacher_forced"]

TOKEN_METRICS = ("accuracy", "sdc", "critical_sdc", "loss")


@torch.no_grad()
def teacher_forced(model, x: torch.Tensor, prompt: int) -> torch.Tensor:
    """Logits (B x T x V) of every position of ``x``: prefill ``prompt`` tokens, then one golden
    token per decode step through the model's KV cache."""
    cache = model.new_cache(x.shape[0])
    out = [model.step(x[:, :prompt], cache)]
    for t in range(prompt, x.shape[1]):
        out.append(model.step(x[:, t:t + 1], cache))
    return torch.cat(out, 1)


@dataclass(frozen=True)
class Clean:
    """The fault-free pass every trial is compared with."""

    logits: torch.Tensor  # B x T x V, teacher-forced
    tokens: torch.Tensor  # B x L greedy continuation
    values: dict


def _first_divergence(logits, clean) -> float:
    differ = logits.argmax(-1) != clean.argmax(-1)  # B x T
    t = differ.shape[1]
    first = torch.where(differ.any(1), differ.int().argmax(1), torch.full((len(differ),), t))
    return float(first.float().mean())


@torch.no_grad()
def measure(model, x, y, prompt: int, ctx=nullcontext, clean: Clean | None = None):
    """``(values, logits, tokens)`` of one trial; ``clean`` None measures the fault-free pass."""
    with ctx():
        logits = teacher_forced(model, x, prompt)
    with ctx():
        tokens, glogits = model.generate(x[:, :prompt], x.shape[1] - prompt)
    ref = logits if clean is None else clean.logits
    acc = MetricAccumulator(resolve_metrics(TOKEN_METRICS, "faultlab.lm"))
    acc.update(logits, y, clean_logits=ref)
    v = acc.result()
    v["bpc"] = v["loss"] / math.log(2.0)
    v["first_divergence"] = _first_divergence(logits, ref)
    v["nonfinite"] = float((~torch.isfinite(logits)).flatten(1).any(1).float().mean())
    gen = generation_metrics(tokens, tokens if clean is None else clean.tokens, glogits)
    v.update({f"gen_{k}": val for k, val in gen.items()})
    return v, logits, tokens
