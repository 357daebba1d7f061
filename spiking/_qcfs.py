"""QCFS activation (quantization clip-floor-shift) and the small ANNs that use it.

QCFS (Bu et al., "Optimal ANN-SNN Conversion for High-accuracy and Ultra-low-latency Spiking
Neural Networks", ICLR 2022) replaces ReLU by

    h(x) = lambda * clip(floor(x * L / lambda + phi) / L, 0, 1),     phi = 1/2   (QCFS eq. 14)

with a learnable clip scale ``lambda`` per layer and ``L`` quantisation levels. The floor uses a
straight-through gradient, so ``lambda`` and the weights train with the one training loop. After
training, every QCFS becomes an integrate-and-fire neuron with threshold ``lambda`` whose membrane
starts at ``lambda * phi`` (see :func:`spiking.convert`). The Dynamic Confidence code trains its
ANN with LSQ-style 2-bit activations (3 levels); QCFS is the same clip-floor family.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hwlab.errors import check, check_positive_int

__all__ = ["ARCHITECTURES", "QCFS", "qcfs_net", "with_qcfs"]


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x) forward, identity gradient (straight-through estimator)."""
    return x + (torch.floor(x) - x).detach()


class QCFS(nn.Module):
    """Quantised clipped activation with a learnable scale (the future SNN threshold).

    Args:
        levels: L, the number of quantisation steps between 0 and ``lambda`` (QCFS uses 4-8).
        scale: initial clip scale ``lambda``. QCFS initialises it at 8 for normalised CIFAR
            inputs; our inputs are in [0, 1], so we start at 2 (it is learned either way).
        shift: phi, 0.5 in QCFS (it makes the expected conversion error zero).
    """

    def __init__(self, levels: int = 4, scale: float = 2.0, shift: float = 0.5):
        super().__init__()
        self.levels = check_positive_int(levels, "levels", "QCFS")
        check(isinstance(scale, (int, float)) and scale > 0, "scale", "QCFS", "a number > 0", scale)
        self.shift = float(shift)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.scale
        q = _floor_ste(x * self.levels / lam + self.shift) / self.levels  # QCFS eq. 14
        return lam * q.clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, scale={self.scale.item():.4g}, shift={self.shift}"


def _mlp(in_shape, num_classes, act) -> nn.Sequential:
    n_in = int(torch.tensor(in_shape).prod())
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, 256), act(),
        nn.Linear(256, 128), act(),
        nn.Linear(128, num_classes),
    )


def _lenet(in_shape, num_classes, act) -> nn.Sequential:
    c, h, w = in_shape
    feat = 16 * (h // 4) * (w // 4)  # two 2x2 average pools; convs keep the size (padding 2)
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), act(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), act(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(feat, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )


ARCHITECTURES = {"mlp": _mlp, "lenet": _lenet}


def qcfs_net(arch: str = "lenet", in_shape=(1, 28, 28), num_classes: int = 10, levels: int = 4,
             scale: float = 2.0) -> nn.Sequential:
    """A small ANN with QCFS activations, ready for :func:`spiking.convert`.

    ``"lenet"`` is LeNet-5 with average pooling (max pooling has no exact spiking counterpart, so
    QCFS and the Dynamic Confidence code use average pooling); ``"mlp"`` is 256-128 hidden units.
    """
    check(arch in ARCHITECTURES, "arch", "qcfs_net", f"one of {', '.join(ARCHITECTURES)}", arch)
    check(len(tuple(in_shape)) == 3, "in_shape", "qcfs_net", "a (C, H, W) tuple", in_shape)
    check_positive_int(num_classes, "num_classes", "qcfs_net", minimum=2)
    check_positive_int(levels, "levels", "qcfs_net")
    return ARCHITECTURES[arch](tuple(in_shape), num_classes, lambda: QCFS(levels, scale))


def with_qcfs(model: nn.Module, levels: int = 4, scale: float = 2.0) -> nn.Module:
    """A NEW model with every ``nn.ReLU`` replaced by QCFS and every ``nn.MaxPool2d`` by an
    ``nn.AvgPool2d`` of the same geometry (for zoo models such as ``hwlab``'s ``mlp``/``lenet5``).

    The input model is left untouched. Weights are copied; the result needs (re)training.
    """
    check(isinstance(model, nn.Module), "model", "with_qcfs", "an nn.Module", type(model).__name__)
    check_positive_int(levels, "levels", "with_qcfs")
    new = copy.deepcopy(model)
    _swap(new, levels, scale)
    return new


def _swap(module: nn.Module, levels: int, scale: float) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, QCFS(levels, scale))
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
        else:
            _swap(child, levels, scale)
