"""An SNN on faultlab's one trial engine: the recording is the model's output.

:class:`StepReadout` wraps a :class:`~spiking.SpikingNet` so that one forward pass is one
recording of a batch (per-step outputs ``N x T x C``, flattened to ``N x (T C)``): the engine's
metrics (:func:`readout_metrics`) turn it back into a :class:`~spiking._record.Recording` per
batch and apply a fixed T or an exit rule, exactly as the offline evaluation does. The data
carries each sample's index as its last feature (:func:`indexed`), so batch ``b`` draws its
rate-code noise from the same seeded generator as :func:`spiking.record` (identical spikes).
"""

from __future__ import annotations

import torch
from torch import nn

from ._record import Recording, _batch_generator
from ._rules import apply_rule, fixed_steps

__all__ = ["StepReadout", "indexed", "readout_metrics"]


def indexed(x: torch.Tensor) -> torch.Tensor:
    """``x`` flattened per sample with the sample's index appended (N x (D + 1))."""
    index = torch.arange(len(x), dtype=x.dtype)[:, None]  # exact for N < 2^24
    return torch.cat([x.reshape(len(x), -1), index], dim=1)


class StepReadout(nn.Module):
    """``net`` run to ``steps`` steps on an :func:`indexed` batch; the parameters are the net's
    (as ``net.<name>``), so a fault map drawn on it is the map drawn on the net."""

    def __init__(self, net: nn.Module, in_shape: tuple, steps: int, seed: int, batch_size: int):
        super().__init__()
        self.net, self.in_shape = net, tuple(in_shape)
        self.steps, self.seed, self.batch_size = steps, seed, batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = int(x[0, -1]) // self.batch_size  # the batch's index among record's batches
        xb = x[:, :-1].reshape(len(x), *self.in_shape)
        out = self.net(xb, self.steps, _batch_generator(self.seed, b, x.device))  # N x T x C
        return out.reshape(len(x), -1)


def readout_metrics(steps: int, t_star: int, rule, threshold: float) -> tuple:
    """The engine's metrics of a readout: accuracy at fixed ``t_star``, and accuracy and mean
    steps of ``rule`` at ``threshold`` (per-sample means: exact when averaged over batches)."""

    def recording(logits, y):
        return Recording(logits.reshape(len(y), steps, -1).cpu(), y.cpu())

    def fixed_accuracy(logits, y, clean):
        return fixed_steps(recording(logits, y), t_star).accuracy

    def rule_accuracy(logits, y, clean):
        return apply_rule(recording(logits, y), rule, threshold).accuracy

    def rule_steps(logits, y, clean):
        return apply_rule(recording(logits, y), rule, threshold).mean_steps

    return fixed_accuracy, rule_accuracy, rule_steps
