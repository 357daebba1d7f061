"""AugLocal (Ma et al., ICLR 2024): auxiliary nets built from uniformly sampled subsequent layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check_number, check_positive_int
from localtrain._base import LocalRule, fresh_copy
from localtrain._heads import ResBlock, linear_head

__all__ = ["AugLocal", "auglocal_depths", "auglocal_layer_indices"]


def auglocal_layer_indices(l: int, L: int, d: int) -> list[int]:
    """Layers of the auxiliary net of hidden layer ``l`` (of ``L``) with depth ``d``.

    ``round(l + (L - l - 1) / d * i)`` for ``i = 1..d`` (always ends at layer L-1); every
    subsequent layer when ``d >= L - 1 - l`` (official code). Python's ``round`` (half to even), as
    in the official code.
    """
    if d >= L - 1 - l:
        return list(range(l + 1, L))
    return [round(l + (L - l - 1) / d * i) for i in range(1, d + 1)]


def auglocal_depths(K: int, d: int, tau: float = 0.5) -> list[int]:
    """Pyramidal depth of the K-1 auxiliary nets: ``max(1, round(d (1 - k tau/(K-2)) + k tau/(K-2)))``.

    Module 0 gets ``d``; the depth falls linearly towards ``d (1 - tau) + tau`` at module K-2
    (``tau = 0.5``: halfway to 1). With K = 2 the single auxiliary net has depth ``d``.
    """
    out = []
    for k in range(K - 1):
        r = k * tau / (K - 2) if K > 2 else 0.0
        out.append(max(1, round(d * (1 - r) + r)))
    return out


class AugLocal(LocalRule):
    """AugLocal: module k's auxiliary net = fresh copies of uniformly selected later layers.

    "Layers" are the model's units (stem + blocks; 16 for ResNet-32, as in the official code). For
    module k ending at unit l, :func:`auglocal_layer_indices` picks ``d_k`` later units
    (:func:`auglocal_depths`, ``depth`` = d, ``tau`` = 0.5) and the auxiliary net stacks fresh,
    re-initialised copies of them (no weight sharing), then global average pooling and a linear
    classifier (BatchNorm first when the depth is 1); cross-entropy only. Where a selected layer's
    input shape differs from the features at hand (a stage change in a ResNet), a fresh residual
    block maps the channels and halves the resolution once, as the official code's ``BasicBlock``
    does. Differs from the official code: the K modules come from :func:`localtrain.split`; the
    official layer-wise setting instead leaves the last d+1 layers to the global loss.
    """

    name = "auglocal"

    def __init__(self, model, K=4, in_shape=(1, 28, 28), balance="memory", lr=1e-3,
                 depth: int = 3, tau: float = 0.5):
        caller = "make_rule('auglocal')"
        self.depth = check_positive_int(depth, "depth", caller)
        self.tau = check_number(tau, "tau", caller, 0, 1)
        self.depths = auglocal_depths(K if isinstance(K, int) else 2, self.depth, self.tau)
        super().__init__(model, K, in_shape, balance, lr)

    @property
    def layer_indices(self) -> list[list[int]]:
        """The units each auxiliary net copies (:func:`auglocal_layer_indices`), per module."""
        n = len(self.partition.units)
        return [auglocal_layer_indices(self.partition.last_units[k], n, self.depths[k])
                for k in range(self.K - 1)]

    def unit_shapes(self, u: int) -> tuple[tuple, tuple]:
        """(input shape, output shape) of body unit ``u``."""
        a, b = self.partition.units[u]
        shape_in = self.in_shape if a == 0 else self.child_shapes[a - 1]
        return tuple(shape_in), tuple(self.child_shapes[b - 1])

    def build_aux(self, k: int) -> nn.Module:
        n_units = len(self.partition.units)
        idx = auglocal_layer_indices(self.partition.last_units[k], n_units, self.depths[k])
        cur = tuple(self.out_shapes[k])
        layers: list[nn.Module] = []
        for j in idx:
            shape_in, shape_out = self.unit_shapes(j)
            if cur == shape_in:
                layer = fresh_copy(nn.Sequential(*self.unit_children(j)))
            elif len(cur) == 3 and len(shape_out) == 3:
                stride = 2 if cur[1] > shape_out[1] else 1
                layer = ResBlock(cur[0], shape_out[0], stride)
            else:  # token / vector features of another width: project, then the fresh layer
                layer = nn.Sequential(nn.Linear(cur[-1], shape_in[-1]),
                                      fresh_copy(nn.Sequential(*self.unit_children(j))))
            layers.append(layer)
            with torch.no_grad():
                cur = tuple(layer.eval()(torch.zeros(2, *cur)).shape[1:])
            layer.train()
        head = linear_head(cur, self.num_classes)
        if len(idx) <= 1 and len(cur) == 3:  # official: BN before the classifier when depth <= 1
            head = nn.Sequential(head[0], head[1], nn.BatchNorm1d(cur[0]), head[2])
        return nn.Sequential(*layers, head)

    def local_loss(self, k, out, inp, x, y):
        return F.cross_entropy(self.net["aux"][k](out), y), {}
