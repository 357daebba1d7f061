"""Gradient checkpointing: the standard memory baseline of local learning (exact gradients).

Chen et al., "Training Deep Nets with Sublinear Memory Cost" (2016); InfoPro's Table 3 lists it
beside the local rules (ResNet-110, CIFAR-10: -58.4 % memory, +32.8 % time, E2E accuracy). The
network is cut at the same points as the K local modules of :func:`localtrain.split` (the
activation-balanced cuts for ``balance="memory"``, equal unit counts for ``"layers"``); modules
0..K-2 run under ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, which keeps only
their inputs and recomputes their activations during the backward pass; the last module is not
checkpointed (its backward starts at once, as in ``checkpoint_sequential``). One cross-entropy
loss, one backward: the gradients are those of end-to-end backpropagation.

BatchNorm: recomputing a segment in train mode would update its running statistics a second time
(the forward already did). The recomputation runs under :class:`KeepBuffers`, which restores
every buffer of the segment afterwards, so running mean / variance and ``num_batches_tracked``
end the step exactly as after plain backpropagation (the batch statistics used for the
gradients are recomputed identically). Dropout masks are reproduced (checkpoint restores the RNG
state by default).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from localtrain._base import LocalRule
from localtrain._split import Partition, _balanced_cuts, _from_stops, unit_saved_bytes

__all__ = ["Checkpoint", "KeepBuffers"]


class KeepBuffers:
    """Context manager: every buffer of ``module`` gets back its value on exit.

    The recomputation context of a checkpointed segment: BatchNorm's running statistics are
    updated by the forward pass only, not again by the recomputation. Costs one copy of the
    segment's buffers (a few KiB for a ResNet) while the segment is recomputed.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self):
        with torch.no_grad():
            self.saved = [(b, b.clone()) for b in self.module.buffers()]
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for buf, old in self.saved:
                buf.copy_(old)
        self.saved = []
        return False


def _contexts(module: nn.Module):
    """``context_fn`` of ``checkpoint``: plain forward, buffers kept during the recomputation."""
    return contextlib.nullcontext(), KeepBuffers(module)


class Checkpoint(LocalRule):
    """End-to-end backpropagation with the K-1 first local modules checkpointed (exact gradients).

    ``K`` = number of segments, cut like :func:`localtrain.split` (no auxiliary nets, so
    ``balance="memory"`` balances the activations each segment saves). ``K = 1`` is plain E2E.
    """

    name = "checkpoint"

    def _memory_partition(self, part: Partition) -> Partition:
        """The cuts of ``split(model, K, "memory", sample)``: activation-balanced segments."""
        gen = torch.Generator().manual_seed(0)
        sizes, tail = unit_saved_bytes(self.chain, torch.rand(8, *self.in_shape, generator=gen))
        sizes[-1] += tail
        return _from_stops(part.units, part.tail, _balanced_cuts(sizes, self.K))

    def build_aux(self, k: int) -> nn.Module:
        return nn.Identity()  # no auxiliary network: one global loss

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Forward with segments 0..K-2 checkpointed, cross-entropy, one backward."""
        h = x
        for module in self.modules_[:-1]:
            h = checkpoint(module, h, use_reentrant=False,
                           context_fn=functools.partial(_contexts, module))
        loss = F.cross_entropy(self.modules_[-1](h), y)
        loss.backward()
        return {"loss": float(loss.detach())}
