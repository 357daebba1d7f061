"""The progressive bit search on the integer formats of :func:`faultlab.quantize`.

``quantize(model, "int8" | "int4" | "mxint8")`` stores each Linear / Conv2d weight as uint8
words (``<layer>.weight``, see ``faultlab._formats``): int8 and mxint8 one two's complement code
per byte, int4 two codes per byte (element ``2j`` in the low nibble of byte ``j``). A flip of
bit ``b`` of byte ``j`` changes one element ``e`` (``e = j``, or ``2j + b // 4``) by

    delta = +-v_c * unit_e     (+ for a 0 -> 1 flip, - for 1 -> 0)

with ``v_c`` the two's complement value of code bit ``c`` (``1, 2, ..., 64, -128`` for 8-bit
codes, ``1, 2, 4, -8`` for a nibble) and ``unit_e`` what one code step is worth in the decoded
weight: the fp32 tensor scale (int8, int4) or ``2^(s - 127) / 64`` with ``s`` the E8M0 scale
byte of the element's 32-element block (mxint8). The first-order loss change of the flip is
``g_e * delta`` (``g = dL/dW`` of the decoded weight), exactly what :func:`byte_gains` returns
for every bit of every byte; the search (:mod:`faultlab._attack`) takes the best ``n_b`` of each
layer, installs them and keeps the layer whose flips raise the attack-batch loss most, as for
``quantize_int8`` layers. The stored words are uint8 parameters, so the result is an ordinary
FaultMap over them. The block scale words (``weight_scale``) are not attacked here (the element
codes only); a padding nibble (odd element count, int4) has no element and is never chosen.
"""

from __future__ import annotations

import torch
from torch import nn

from faultlab._formats import E8M0, FORMATS, _Stored

__all__ = ["ATTACKABLE_FORMATS", "byte_gains", "is_attackable", "stored_candidates"]

ATTACKABLE_FORMATS = ("int8", "int4", "mxint8")  # formats whose element code is an integer
_CODE_BITS = {"int8": torch.tensor([1, 2, 4, 8, 16, 32, 64, -128], dtype=torch.float32),
              "int4": torch.tensor([1, 2, 4, -8, 1, 2, 4, -8], dtype=torch.float32)}


def is_attackable(module: nn.Module) -> bool:
    """A :func:`faultlab.quantize` Linear / Conv2d layer whose ``weight`` holds integer codes."""
    return (isinstance(module, _Stored) and "weight" in getattr(module, "_codes", {})
            and module._codes["weight"][0] in ATTACKABLE_FORMATS)


def element_units(module: _Stored) -> torch.Tensor:
    """Per flat weight element: the decoded value of one code step (its scale)."""
    fmt, shape = module._codes["weight"]
    numel = int(torch.tensor(shape).prod())
    f = FORMATS[fmt]
    if f.block is None:
        return module.weight_tensor_scale.float().expand(numel)
    out = shape[0]
    k = numel // out
    scale = E8M0[module.weight_scale.detach().long()] / 64  # out x blocks
    cols = torch.arange(k) // f.block
    return scale[:, cols].reshape(-1)


def byte_gains(module: _Stored, g: torch.Tensor) -> torch.Tensor:
    """``bytes x 8``: the first-order loss change ``g_e * delta`` of flipping each bit of each
    stored byte of ``module.weight`` (``g``: dL/dW of the decoded weight, any shape; 0 for a
    padding nibble)."""
    fmt, _ = module._codes["weight"]
    words = module.weight.detach().reshape(-1)
    g = g.reshape(-1).float()
    numel = g.numel()
    per = 2 if fmt == "int4" else 1
    element = torch.arange(words.numel())[:, None] * per + (
        torch.arange(8) // 4 if per == 2 else torch.zeros(8, dtype=torch.long))  # bytes x 8
    valid = element < numel
    element = element.clamp(max=numel - 1)
    bits = (words.to(torch.int16)[:, None] >> torch.arange(8, dtype=torch.int16)) & 1
    value = _CODE_BITS["int4" if per == 2 else "int8"]
    delta = torch.where(bits == 0, value, -value) * element_units(module)[element]
    return torch.where(valid, g[element] * delta, torch.zeros(()))


def stored_candidates(module: _Stored, g: torch.Tensor, k_top, n_b, cost=None):
    """(flat byte indices, bits) of the ``n_b`` flips of ``module.weight`` with the largest
    first-order loss increase among its ``k_top`` bytes of largest possible gain (None: fewer
    than ``n_b`` flips raise the loss); ``cost(top) -> k x 8`` physical flips (ECC-aware)."""
    gains = byte_gains(module, g)
    k = gains.shape[0] if k_top is None else min(k_top, gains.shape[0])
    top = torch.topk(gains.abs().amax(1), k).indices
    gain = gains[top]
    gain = torch.where(gain > 0, gain, torch.zeros(()))
    if cost is not None:
        gain = gain / cost(top).clamp(min=1).to(gain.dtype)
    if int((gain > 0).sum()) < n_b:
        return None
    best = torch.topk(gain.reshape(-1), n_b).indices
    return top[best // 8], (best % 8).to(torch.int64)
