"""Clipped activations and the map from activation modules to the weight layers that feed them.

FT-ClipAct (Hoang, Hanif, Shafique, DATE 2020) replaces every unbounded activation by a clipped
one with one threshold ``t`` per layer:

* ``mode="zero"`` (the paper's choice, as in the ProAct authors' reliable-ReLU toolbox):
  ``y = relu(x) if x <= t else 0``. A value that only a fault can produce is squashed to 0.
  NaN inputs (a flipped exponent can make ``inf - inf``) also become 0, since ``NaN <= t`` is false.
* ``mode="cap"`` (Ranger, Chen et al. DSN 2021): ``y = clamp(relu(x), 0, t)``; NaN stays NaN,
  as with ``torch.clamp``.

Other unbounded activations (GELU, SiLU, ELU, LeakyReLU) are wrapped: the base activation runs
first and its output is clipped the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwlab.errors import check, check_choice

MODES = ("zero", "cap")
UNBOUNDED = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.Mish, nn.Softplus)
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class ClippedReLU(nn.Module):
    """``relu(x)`` clipped at ``threshold``: zeroed (``mode="zero"``) or capped (``"cap"``) above it.

    ``base`` is the activation to clip (default ``nn.ReLU()``); any module listed in
    ``faultlab.clipact._modules.UNBOUNDED`` works. The threshold is a float buffer, so it moves with
    ``.to(device)`` and is saved in the ``state_dict``.
    """

    def __init__(self, threshold: float, mode: str = "zero", base: nn.Module | None = None):
        super().__init__()
        ok = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
        check(ok and not math.isnan(threshold) and 0 <= threshold < float("inf"), "threshold",
              "ClippedReLU", "a finite number >= 0", threshold)
        check_choice(mode, MODES, "mode", "ClippedReLU")
        self.mode = mode
        self.base = base if base is not None else nn.ReLU()
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def set_threshold(self, value: float) -> None:
        """Change the threshold in place (used by the search on its private working copy)."""
        self.threshold.fill_(float(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # same shape as x
        t = self.threshold.to(y.dtype)
        if self.mode == "zero":
            return torch.where(y <= t, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return torch.clamp(y, max=t)

    def extra_repr(self) -> str:
        return f"threshold={float(self.threshold):.6g}, mode={self.mode!r}"


def activation_sites(model: nn.Module) -> list[str]:
    """Names (as in ``named_modules``) of the unbounded activation modules, in forward order.

    Already clipped activations (:class:`ClippedReLU`) count as sites too, so a protected model can
    be re-tuned. Activations inside a ``ClippedReLU`` (its ``base``) are not listed twice.
    """
    names = []
    for name, module in model.named_modules():
        clipped = isinstance(module, ClippedReLU)
        if clipped or (isinstance(module, UNBOUNDED) and not _inside_clipped(model, name)):
            names.append(name)
    return names


def _inside_clipped(model: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    return parent != "" and isinstance(model.get_submodule(parent), ClippedReLU)


def feeding_layers(model: nn.Module) -> dict[str, str | None]:
    """For every activation site, the weight layer (Conv/Linear) that feeds it.

    The feeding layer is the last Conv/Linear module registered before the activation in
    ``named_modules()`` order: in the zoo's flat Sequentials that is the convolution or linear
    layer just before (BatchNorm in between is skipped, its parameters are not faulted), and in a
    residual block it is the block's own convolution (``conv1`` for ``relu1``, ``conv2`` for
    ``relu2``; the shortcut that is summed in carries no weights in the zoo's option-A blocks).
    ``None`` when no weight layer comes before the activation.
    """
    sites = set(activation_sites(model))
    last: str | None = None
    out: dict[str, str | None] = {}
    for name, module in model.named_modules():
        if isinstance(module, WEIGHT_LAYERS):
            last = name
        elif name in sites:
            out[name] = last
    return out


def replace_activations(model: nn.Module, thresholds: dict[str, float], mode: str) -> nn.Module:
    """In place: swap each named activation for a :class:`ClippedReLU` (internal helper)."""
    for name, t in thresholds.items():
        module = model.get_submodule(name)
        base = module.base if isinstance(module, ClippedReLU) else module
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ClippedReLU(float(t), mode=mode, base=base))
    return model
