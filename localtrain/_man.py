"""MAN: Momentum Auxiliary Network (Su et al., ECCV 2024) on top of InfoPro's auxiliary head."""

from __future__ import annotations

import copy

import torch
from torch import nn

from hwlab.errors import check_number
from localtrain._base import fresh_copy
from localtrain._rules import InfoPro

__all__ = ["MAN", "ema_update"]


@torch.no_grad()
def ema_update(ema: nn.Module, source: nn.Module, momentum: float) -> None:
    """``ema = m * ema + (1 - m) * source`` over parameters only (MAN, Eq. 5).

    Buffers (BatchNorm running mean/var, batch counters) are NOT averaged: the EMA copy keeps the
    statistics its own forward passes collect, as in the official code (which averages
    ``parameters()`` only).
    """
    for pe, ps in zip(ema.parameters(), source.parameters()):
        pe.mul_(momentum).add_(ps.detach(), alpha=1.0 - momentum)


class MAN(InfoPro):
    """InfoPro whose auxiliary head sees ``EMA(next block)(h) + LB(h)`` instead of ``h``.

    For module k < K-1, "next block" is the first unit (residual / transformer block) of module
    k+1. ``EMA`` is a frozen copy of it, updated after every optimizer step by :func:`ema_update`
    with ``momentum`` (0.995, the published MAN setting). ``LB`` (learnable bias) is a trainable
    copy of the same block, re-initialised (in the official code all copies get fresh weights; here
    the EMA copy starts equal to the block it tracks). Gradients of the local loss flow through both
    into module k (never into module k+1). Reconstruction decoder + classifier and their weights are
    InfoPro's (see :class:`localtrain.InfoPro`), sized for the next block's output.
    """

    name = "man"

    def __init__(self, model, K=4, in_shape=(1, 28, 28), balance="memory", lr=1e-3,
                 lambda_rec=None, lambda_ce=None, momentum: float = 0.995):
        self.momentum = check_number(momentum, "momentum", "make_rule('man')", 0, 1)
        super().__init__(model, K, in_shape, balance, lr, lambda_rec, lambda_ce)

    def build_aux(self, k: int) -> nn.Module:
        aux = super().build_aux(k)  # InfoPro decoder + head, sized for the next block's output
        block = self.next_block(k)
        aux["ema"] = copy.deepcopy(block).requires_grad_(False)
        aux["lb"] = fresh_copy(block)
        return aux

    def next_block(self, k: int) -> nn.Sequential:
        """The first unit of module k+1 (shares parameters with the model)."""
        first_unit = self.partition.unit_bounds[k + 1][0]
        return nn.Sequential(*self.unit_children(first_unit))

    def aux_input_shape(self, k: int):
        first_unit = self.partition.unit_bounds[k + 1][0]
        _, stop = self.partition.units[first_unit]
        return self.child_shapes[stop - 1]

    def aux_features(self, k: int, out: torch.Tensor) -> torch.Tensor:
        aux = self.net["aux"][k]
        return aux["ema"](out) + aux["lb"](out)  # MAN, Eq. 6

    def after_step(self) -> None:
        for k in range(self.K - 1):
            ema_update(self.net["aux"][k]["ema"], self.next_block(k), self.momentum)
