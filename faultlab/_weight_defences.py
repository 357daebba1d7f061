"""Weight-side defences that change what is stored, not the activations.

* :func:`saturate` (Fuengfusin and Tamukoh, arXiv 2411.19027): every Linear / Conv2d computes
  with ``tau(W)`` for a saturating ``tau`` (tanh, arctan, softsign) of the RAW weights ``W``,
  which are what the faulty memory stores; a corrupted raw weight is read through ``tau``, so
  the effective weight stays within its bound (1 for tanh and softsign, pi / 2 for arctan). A NaN
  read from memory is set to 0 after ``tau`` (``tau(NaN)`` is NaN; ``tanh(+-inf) = +-1`` is fine):
  our choice, stated. The converted model computes what the input computes (``W = tau^-1`` of
  the original weights, which must lie inside the bound); training it a few epochs (any
  ``hwlab.train`` loop) lets the weights move into saturation, as the paper does.
* :func:`scale_weights` (Fuengfusin and Tamukoh, arXiv 2411.18993): store ``c * W`` and divide
  by ``c`` after reading, for float weights. Notes' caution: in floating point a scale by a power
  of two leaves every mantissa flip's relative error unchanged and only moves which exponent bits
  are set; hwlab's per-layer int8 already uses its whole range (there ``c`` is absorbed into the
  step), so an int8 model is refused. Measure before assuming a gain.

Both return a NEW model (the input is untouched) whose parameter names are the input's, so fault
maps, campaigns and state dicts stay valid; the layers are ``hwlab.graph`` leaves.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_number

__all__ = ["SATURATIONS", "WeightTransformed", "saturate", "scale_weights"]

# name -> (tau, its inverse, the bound of |tau|)
SATURATIONS = {
    "tanh": (torch.tanh, torch.atanh, 1.0),
    "arctan": (torch.atan, torch.tan, math.pi / 2),
    "softsign": (F.softsign, lambda y: y / (1 - y.abs()), 1.0),
}


class WeightTransformed(nn.Module):
    """A Linear or Conv2d whose stored ``weight`` is read through ``how`` before use:
    ``("saturate", name)`` or ``("scale", c)``."""

    _hwlab_leaf = True  # hwlab.graph: one opaque call

    def __init__(self, source: nn.Module, how: tuple):
        super().__init__()
        self.how = how
        self.kind = "linear" if isinstance(source, nn.Linear) else "conv2d"
        if self.kind == "conv2d":
            self.stride, self.padding = source.stride, source.padding
            self.dilation, self.groups = source.dilation, source.groups
        w = source.weight.detach()
        stored = SATURATIONS[how[1]][1](w) if how[0] == "saturate" else w * how[1]
        self.weight = nn.Parameter(stored.clone(), requires_grad=source.weight.requires_grad)
        self.bias = None if source.bias is None else nn.Parameter(source.bias.detach().clone())

    def effective_weight(self) -> torch.Tensor:
        """The weight the layer computes with, read from what is stored (faults included)."""
        if self.how[0] == "scale":
            return self.weight / self.how[1]
        w = SATURATIONS[self.how[1]][0](self.weight)
        return torch.nan_to_num(w, nan=0.0)  # a NaN read from memory: 0 (our choice)

    def forward(self, x):
        w = self.effective_weight()
        if self.kind == "linear":
            return F.linear(x, w, self.bias)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.how[0]}={self.how[1]}, weight={tuple(self.weight.shape)}"


def _convertible(m: nn.Module) -> bool:
    return type(m) is nn.Linear or (type(m) is nn.Conv2d and m.padding_mode == "zeros"
                                     and not isinstance(m.padding, str))


def _convert(model: nn.Module, how: tuple, caller: str) -> nn.Module:
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
          type(model).__name__)
    for name, t in model.named_parameters():
        check(t.dtype != torch.int8, "model", caller, "a model with float weights (int8 storage "
              "already uses its whole range)", f"parameter {name!r} of dtype int8")
    new = copy.deepcopy(model)
    done = 0
    for parent in list(new.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and _convertible(child):
                layer = WeightTransformed(child, how)
                layer.train(child.training)
                setattr(parent, name, layer)
                done += 1
    check(done > 0, "model", caller, "a model with nn.Linear or nn.Conv2d layers",
          type(model).__name__)
    return new


def saturate(model: nn.Module, fn: str = "tanh") -> nn.Module:
    """A NEW model computing with ``fn(W)`` of stored raw weights ``W`` (see the module doc).

    Every weight of the input must lie strictly inside the bound of ``fn`` (``|w| < 1`` for tanh
    and softsign, ``< pi / 2`` for arctan) so the conversion is exact up to rounding."""
    c = "saturate"
    check(fn in SATURATIONS, "fn", c, f"one of {', '.join(SATURATIONS)}", fn)
    bound = SATURATIONS[fn][2]
    for name, m in model.named_modules():
        if _convertible(m):
            top = float(m.weight.detach().abs().max())
            check(top < bound, "model", c, f"weights inside (-{bound:g}, {bound:g}) for {fn}",
                  f"max |w| {top:.4g} in {name!r}")
    return _convert(model, ("saturate", fn), c)


def scale_weights(model: nn.Module, c: float) -> nn.Module:
    """A NEW model storing ``c * W`` and computing with ``W`` (``c`` > 0; see the module doc)."""
    c = check_number(c, "c", "scale_weights", minimum=0, inclusive=(False, True))
    return _convert(model, ("scale", float(c)), "scale_weights")
