"""Campaign metrics of a language model (user-metric callables of :mod:`hwlab.metrics`).

Each is ``metric(logits, y, clean_logits) -> float`` on teacher-forced logits (B x T x V) and
is averaged over the windows of the data by the campaign (weighted by batch size):

``first_divergence``
    mean over windows of the first position whose top-1 next-token prediction differs from the
    fault-free model's (T when none does): the teacher-forced analogue of the first divergent
    generated token (greedy generation itself is scored by :func:`hwlab.metrics.generation_metrics`).
``nonfinite``
    share of windows with a NaN or inf logit anywhere (a NaN row's argmax is arbitrary, so the
    top-1 metrics of those windows mean nothing).
"""

from __future__ import annotations

import torch

__all__ = ["LM_METRICS", "first_divergence", "nonfinite"]


def _seq(logits: torch.Tensor, name: str) -> None:
    if logits.dim() != 3:
        from hwlab.errors import fail

        raise fail("logits", name, "B x T x vocab logits of a language model", tuple(logits.shape))


def first_divergence(logits: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor) -> float:
    """Mean first position (0-based) whose top-1 differs from the fault-free top-1; T if none."""
    _seq(logits, "first_divergence")
    differ = logits.argmax(-1) != clean_logits.argmax(-1)  # B x T
    t = differ.shape[1]
    first = torch.where(differ.any(1), differ.int().argmax(1), torch.full_like(differ[:, 0], t,
                                                                                 dtype=torch.long))
    return float(first.float().mean())


def nonfinite(logits: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor) -> float:
    """Share of windows (rows of the batch) holding a NaN or inf logit."""
    return float((~torch.isfinite(logits)).flatten(1).any(1).float().mean())


LM_METRICS = ("accuracy", "sdc", "loss", first_divergence, nonfinite)  # a campaign's defaults
