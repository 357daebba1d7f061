"""``creep_model``: the paper's three-layer network at a CPU-sized scale.

Paper (Wang et al. 2024): inputs padded to 32x32 and scaled to [-1, 1], then
``Conv2d(C, 32, 3) -> Conv2d(32, 16, 3) -> Flatten -> Linear(16*28*28, 10)``, no activations, no
normalisation; level 2 uses 7 qubits and 10 repetitions in the quantum linear layer.

Here, by default: inputs area-resized to at most 14x14 (28x28 MNIST -> 14x14; 8x8 digits stay
8x8) and scaled to [-1, 1] by a fixed, parameterless :class:`Preprocess` child, then
``Conv2d(C, 16, 3) -> Conv2d(16, 8, 3) -> Flatten -> Linear(8*10*10 = 800, 10)``: half the
paper's channels, a quarter of its pixels, so the quantum linear layer needs 5 qubits
(4**5 = 1024 >= 800) instead of 7 and one level-2 training step on a batch of 200 takes a
fraction of a second on one CPU core. Digits (8x8) give 8*4*4 = 128 features and 4 qubits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_int, is_int
from quantum._linear import DEFAULT_REPS
from quantum._swap import swap

__all__ = ["DEFAULT_CHANNELS", "DEFAULT_SIZE", "Preprocess", "creep_model"]

DEFAULT_CHANNELS = (16, 8)  # half the paper's (32, 16): same 2:1 shape, 4x cheaper convolutions
DEFAULT_SIZE = 14  # 28x28 MNIST area-resized to 14x14: 800 features fit 5 qubits (4**5 = 1024)


class Preprocess(nn.Module):
    """Fixed input map of the paper: area-resize to ``size`` x ``size`` (if needed) and scale
    [0, 1] to [-1, 1] (the paper's ``Normalize(0.5, 0.5)``). No parameters."""

    def __init__(self, size: int | None = None):
        super().__init__()
        self.size = size

    def extra_repr(self) -> str:
        return f"size={self.size}, range=[-1, 1]"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.adaptive_avg_pool2d(x, self.size)  # B x C x size x size (area average)
        return 2 * x - 1


def creep_model(in_shape=(1, 28, 28), num_classes: int = 10, channels=DEFAULT_CHANNELS,
                size: int | None = DEFAULT_SIZE, level: int = 0, reps: int = DEFAULT_REPS,
                n_qubits: int | None = None, **swap_kw) -> nn.Sequential:
    """The Conv-Conv-Linear network (no activations, no normalisation) at ``level`` 0, 1 or 2.

    ``in_shape`` (C, H, W) of the [0, 1] inputs; images are resized to ``min(size, H, W)`` (no
    resize with ``size=None``). ``channels`` = (c1, c2) of the two 3x3 convolutions. Level > 0
    goes through :func:`quantum.swap` (``reps``, ``n_qubits`` and ``swap_kw`` are passed on).
    """
    caller = "creep_model"
    ok = isinstance(in_shape, (tuple, list)) and len(in_shape) == 3 and all(
        is_int(s, 1) for s in in_shape)
    check(ok, "in_shape", caller, "a (C, H, W) tuple of positive integers", in_shape)
    c, h, w = map(int, in_shape)
    num_classes = check_int(num_classes, "num_classes", caller, minimum=2)
    ok = isinstance(channels, (tuple, list)) and len(channels) == 2 and all(
        is_int(v, 1) for v in channels)
    check(ok, "channels", caller, "a pair of positive integers", channels)
    if size is not None:
        size = check_int(size, "size", caller, minimum=5)
    side_h, side_w = (h, w) if size is None else (min(size, h), min(size, w))
    check(min(side_h, side_w) >= 5, "in_shape", caller,
          "at least 5x5 pixels (two 3x3 convolutions)", in_shape)
    resize = None if size is None or (side_h, side_w) == (h, w) else side_h
    check(resize is None or side_h == side_w, "in_shape", caller,
          f"square when resized to {size}", in_shape)
    c1, c2 = map(int, channels)
    features = c2 * (side_h - 4) * (side_w - 4)
    model = nn.Sequential(
        Preprocess(resize),
        nn.Conv2d(c, c1, 3),  # B x c1 x (s-2) x (s-2)
        nn.Conv2d(c1, c2, 3),  # B x c2 x (s-4) x (s-4)
        nn.Flatten(),  # B x features
        nn.Linear(features, num_classes),  # B x num_classes
    )
    return swap(model, level, reps=reps, n_qubits=n_qubits, **swap_kw)
