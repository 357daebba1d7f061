"""int8 weight storage: ``quantize_int8(model)`` returns a NEW model whose Linear / Conv2d weights
are int8 words (symmetric per-tensor scale) dequantised on every forward, so faults hit int8 bits.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check

__all__ = ["Int8Conv2d", "Int8Linear", "quantize_int8"]

QMAX = 127  # symmetric int8 range [-127, 127]; -128 is never produced by rounding (a fault may)


def _quantize(w: torch.Tensor):
    """Symmetric per-tensor quantisation: scale = max|w| / 127, q = round(w / scale)."""
    w = w.detach().float()
    amax = w.abs().max()
    scale = (amax / QMAX) if amax > 0 else torch.ones(())  # an all-zero weight keeps scale 1
    q = torch.clamp(torch.round(w / scale), -QMAX, QMAX).to(torch.int8)
    return q, scale.reshape(()).float()


class _Int8Weight(nn.Module):
    """Shared storage: ``weight`` (int8, frozen Parameter), ``scale`` buffer, float ``bias``."""

    def _store(self, source: nn.Module):
        q, scale = _quantize(source.weight)
        self.weight = nn.Parameter(q, requires_grad=False)  # int8 words: the fault target
        self.register_buffer("scale", scale)
        self.bias = None if source.bias is None else nn.Parameter(source.bias.detach().clone())

    def dequantized(self, dtype) -> torch.Tensor:
        return self.weight.to(dtype) * self.scale.to(dtype)  # w = q * scale


class Int8Linear(_Int8Weight):
    """A Linear layer with int8 weight storage."""

    def __init__(self, source: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = source.in_features, source.out_features
        self._store(source)

    def forward(self, x):
        return F.linear(x, self.dequantized(x.dtype), self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Conv2d(_Int8Weight):
    """A Conv2d layer (zero padding) with int8 weight storage."""

    def __init__(self, source: nn.Conv2d):
        super().__init__()
        self.stride, self.padding = source.stride, source.padding
        self.dilation, self.groups = source.dilation, source.groups
        self._store(source)

    def forward(self, x):
        return F.conv2d(x, self.dequantized(x.dtype), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, int8"


def _convert(module: nn.Module) -> int:
    done = 0
    for name, child in module.named_children():
        if isinstance(child, nn.MultiheadAttention):
            continue  # its out_proj weight is read directly by F.multi_head_attention_forward
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear(child))
            done += 1
        elif type(child) is nn.Conv2d and child.padding_mode == "zeros" and not isinstance(
                child.padding, str):
            setattr(module, name, Int8Conv2d(child))
            done += 1
        else:
            done += _convert(child)
    return done


def quantize_int8(model: nn.Module) -> nn.Module:
    """A NEW model with every ``nn.Linear`` / ``nn.Conv2d`` weight stored as int8; input untouched.

    Symmetric per-tensor post-training quantisation (scale = max|w| / 127, round to nearest); the
    int8 words are a frozen ``Parameter`` named ``weight`` (so ``sample_faults`` / ``inject`` see
    them like any other weight) and are dequantised on every forward; biases stay float32. Layers
    inside ``nn.MultiheadAttention`` and Conv2d with string or non-zero padding modes are left in
    float. The copy keeps the input's train/eval mode.
    """
    check(isinstance(model, nn.Module), "model", "quantize_int8", "a torch.nn.Module",
          type(model).__name__)
    new = copy.deepcopy(model)
    with torch.no_grad():
        n = _convert(new)
    check(n > 0, "model", "quantize_int8", "a model with nn.Linear or nn.Conv2d layers",
          f"{type(model).__name__} without any")
    return new
