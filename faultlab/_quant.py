"""int8 weight storage: ``quantize_int8(model)`` returns a NEW model whose Linear / Conv2d weights
are int8 words dequantised on every forward, so faults hit int8 bits.

Schemes (Stutz et al., MLSys 2021, section 4.1, eq. 1; ``m = 8`` bits):

* ``"symmetric"`` (default): range ``[-q_max, q_max]``, ``q_max = max|w|``, ``Delta = q_max / 127``,
  signed two's complement words ``v = round(w / Delta)`` in ``[-127, 127]``; ``w = Delta v``.
* ``"asymmetric"``: range ``[q_min, q_max]`` of the weights, mapped to ``[-1, 1]`` and quantised as
  above, then offset by ``2^(m-1) - 1 = 127`` into an *unsigned* word ``u`` in ``[0, 254]`` (the
  paper's robust choice). The byte keeps dtype ``torch.int8`` (so every faultlab tool handles it)
  but is read as unsigned: ``w = (u - 127) Delta + mid``, ``mid = (q_max + q_min) / 2``,
  ``Delta = (q_max - q_min) / 254``.

``granularity="tensor"`` (one range per layer, the paper's per-layer quantisation) or ``"channel"``
(one range per output channel). ``rounding="nearest"`` (the paper's robust rounding) or
``"floor"`` (eq. 1 as written: float-to-integer truncation towards minus infinity, the paper's
non-robust reference). Stutz's robust quantisation (RQuant) is
``quantize_int8(m, scheme="asymmetric")``. Differences from the paper: biases stay float32
(the paper quantises them per layer too) and are not faulted by default.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_choice

__all__ = ["GRANULARITIES", "ROUNDINGS", "SCHEMES", "Int8Conv2d", "Int8Linear",
           "Int8MultiheadAttention", "quantize_int8"]

QMAX = 127  # symmetric int8 range [-127, 127]; -128 is never produced by rounding (a fault may)
SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("tensor", "channel")
ROUNDINGS = ("nearest", "floor")
FLOATS = (torch.float32, torch.float16, torch.bfloat16)  # dtypes an Int8 layer can compute in


def _range_shape(w: torch.Tensor, granularity: str) -> tuple[int, ...]:
    """Shape of the scale: () per tensor, (out, 1, ..., 1) per output channel."""
    return () if granularity == "tensor" else (w.shape[0],) + (1,) * (w.dim() - 1)


def _quantize(w: torch.Tensor, scheme: str = "symmetric", granularity: str = "tensor",
              rounding: str = "nearest"):
    """Quantise ``w``: returns ``(q, scale, offset)``; ``q`` int8 words, ``offset`` None if symmetric.

    symmetric: scale = max|w| / 127, q = R(w / scale) clamped to [-127, 127];
    asymmetric: mid = (max + min) / 2, scale = (max - min) / 254, u = R((w - mid) / scale) + 127
    clamped to [0, 254], stored as the uint8 bit pattern in an int8 word. R = round or floor.
    A range of width 0 keeps scale 1 (an all-zero weight stays exactly zero).
    """
    w = w.detach().float()
    shape = _range_shape(w, granularity)
    flat = w.reshape(w.shape[0], -1) if shape else w.reshape(1, -1)  # rows x elements
    r = torch.round if rounding == "nearest" else torch.floor
    if scheme == "symmetric":
        amax = flat.abs().amax(dim=1)  # rows
        scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax)).reshape(shape)
        q = torch.clamp(r(w / scale), -QMAX, QMAX).to(torch.int8)
        return q, scale, None
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)  # rows
    width = hi - lo
    scale = torch.where(width > 0, width / (2 * QMAX), torch.ones_like(width)).reshape(shape)
    mid = ((hi + lo) / 2).reshape(shape)
    u = torch.clamp(r((w - mid) / scale) + QMAX, 0, 2 * QMAX).to(torch.uint8)
    return u.view(torch.int8), scale, mid


def _dequantize(q: torch.Tensor, scale: torch.Tensor, offset, dtype) -> torch.Tensor:
    """w = q * scale (symmetric) or (u - 127) * scale + offset (asymmetric, u = q read unsigned)."""
    if offset is None:
        return q.to(dtype) * scale.to(dtype)
    return (q.view(torch.uint8).to(dtype) - QMAX) * scale.to(dtype) + offset.to(dtype)


class _Int8Weight(nn.Module):
    """Shared storage: ``weight`` (int8, frozen Parameter), ``scale`` (and ``offset``), float bias."""

    _hwlab_leaf = True  # hwlab.graph: one opaque call (a rewrite keeps the int8 layer itself)

    def _store(self, source: nn.Module, scheme: str, granularity: str, rounding: str):
        q, scale, offset = _quantize(source.weight, scheme, granularity, rounding)
        self.scheme, self.granularity, self.rounding = scheme, granularity, rounding
        self.weight = nn.Parameter(q, requires_grad=False)  # int8 words: the fault target
        self.register_buffer("scale", scale.float())
        if offset is not None:
            self.register_buffer("offset", offset.float())
        self.bias = None if source.bias is None else nn.Parameter(source.bias.detach().clone())

    def dequantized(self, dtype) -> torch.Tensor:
        return _dequantize(self.weight, self.scale, getattr(self, "offset", None), dtype)

    def _scheme_repr(self) -> str:
        return ("int8" if self.scheme == "symmetric" and self.granularity == "tensor"
                else f"int8 {self.scheme} per-{self.granularity}")


class Int8Linear(_Int8Weight):
    """A Linear layer with int8 weight storage."""

    def __init__(self, source: nn.Linear, scheme: str = "symmetric", granularity: str = "tensor",
                 rounding: str = "nearest"):
        super().__init__()
        self.in_features, self.out_features = source.in_features, source.out_features
        self._store(source, scheme, granularity, rounding)

    def forward(self, x):
        return F.linear(x, self.dequantized(x.dtype), self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{self._scheme_repr()}")


class Int8Conv2d(_Int8Weight):
    """A Conv2d layer (zero padding) with int8 weight storage."""

    def __init__(self, source: nn.Conv2d, scheme: str = "symmetric", granularity: str = "tensor",
                 rounding: str = "nearest"):
        super().__init__()
        self.stride, self.padding = source.stride, source.padding
        self.dilation, self.groups = source.dilation, source.groups
        self._store(source, scheme, granularity, rounding)

    def forward(self, x):
        return F.conv2d(x, self.dequantized(x.dtype), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self):
        return (f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, "
                f"{self._scheme_repr()}")


class Int8MultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with int8 projection weights (the same schemes as Int8Linear).

    The packed ``in_proj_weight`` (or ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight``
    when key / value dimensions differ) is an int8 Parameter under torch's own name, with its
    ``<name>_scale`` (and ``<name>_offset``) buffer; ``out_proj`` is an :class:`Int8Linear`.
    Biases and ``bias_k`` / ``bias_v`` stay float. The forward is
    ``F.multi_head_attention_forward`` on the dequantised weights with the source's options.
    """

    _hwlab_leaf = True

    def __init__(self, source: nn.MultiheadAttention, scheme: str = "symmetric",
                 granularity: str = "tensor", rounding: str = "nearest"):
        super().__init__()
        for a in ("embed_dim", "kdim", "vdim", "_qkv_same_embed_dim", "num_heads", "dropout",
                  "batch_first", "head_dim", "add_zero_attn"):
            setattr(self, a, getattr(source, a))
        self.scheme = scheme
        self.names = ("in_proj_weight",) if source._qkv_same_embed_dim else (
            "q_proj_weight", "k_proj_weight", "v_proj_weight")
        for n in self.names:
            q, scale, offset = _quantize(getattr(source, n), scheme, granularity, rounding)
            setattr(self, n, nn.Parameter(q, requires_grad=False))
            self.register_buffer(f"{n}_scale", scale.float())
            if offset is not None:
                self.register_buffer(f"{n}_offset", offset.float())
        for n in ("in_proj_bias", "bias_k", "bias_v"):
            t = getattr(source, n)
            setattr(self, n, None if t is None else nn.Parameter(t.detach().clone()))
        self.out_proj = Int8Linear(source.out_proj, scheme, granularity, rounding)

    def _deq(self, name: str, dtype) -> torch.Tensor:
        return _dequantize(getattr(self, name), getattr(self, f"{name}_scale"),
                           getattr(self, f"{name}_offset", None), dtype)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        return stored_mha_forward(self, self._deq, query, key, value, key_padding_mask,
                                  need_weights, attn_mask, average_attn_weights, is_causal)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, int8 {self.scheme}"


def stored_mha_forward(m, weight, query, key, value, key_padding_mask=None, need_weights=True,
                       attn_mask=None, average_attn_weights=True, is_causal=False):
    """``nn.MultiheadAttention``'s forward on stored weights (int8 here, the formats of
    ``faultlab.quantize``): ``weight(name, dtype)`` decodes a projection weight of ``m``
    (``in_proj_weight``, or ``q/k/v_proj_weight`` when key / value dimensions differ);
    ``m.out_proj.dequantized(dtype)`` the output projection."""
    batched = query.dim() == 3
    if m.batch_first and batched:
        query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    dt = query.dtype
    if m._qkv_same_embed_dim:
        in_w, proj = weight("in_proj_weight", dt), {}
    else:
        in_w, proj = None, {"use_separate_proj_weight": True,
                            **{n: weight(n, dt) for n in ("q_proj_weight", "k_proj_weight",
                                                           "v_proj_weight")}}
    out, weights = F.multi_head_attention_forward(
        query, key, value, m.embed_dim, m.num_heads, in_w, m.in_proj_bias, m.bias_k, m.bias_v,
        m.add_zero_attn, m.dropout, m.out_proj.dequantized(dt), m.out_proj.bias,
        training=m.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
        attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal,
        **proj)
    if m.batch_first and batched:
        out = out.transpose(1, 0)
    return out, weights


def quantizable(module: nn.Module) -> bool:
    """True for the layers ``quantize_int8`` converts (exactly nn.Linear / zero-padded nn.Conv2d)."""
    if type(module) is nn.Linear:
        return True
    return type(module) is nn.Conv2d and module.padding_mode == "zeros" and not isinstance(
        module.padding, str)


def _convert(module: nn.Module, opts: tuple, memo: dict) -> int:
    """Replace quantisable children in place; a module used twice is converted once (memo by id)."""
    done = 0
    for name, child in list(module._modules.items()):  # named_children() skips repeated modules
        if child is None:
            continue
        if id(child) in memo:
            setattr(module, name, memo[id(child)])
        elif type(child) is nn.MultiheadAttention:  # every projection, out_proj included
            new = Int8MultiheadAttention(child, *opts)
            new.train(child.training)
            memo[id(child)] = new
            setattr(module, name, new)
            done += 1
        elif quantizable(child):
            new = (Int8Linear if type(child) is nn.Linear else Int8Conv2d)(child, *opts)
            new.train(child.training)
            memo[id(child)] = new
            setattr(module, name, new)
            done += 1
        else:
            memo[id(child)] = child  # converted in place below; seen again: same object
            done += _convert(child, opts, memo)
    return done


def _check_float_model(model: nn.Module, caller: str) -> None:
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        check(not t.is_floating_point() or t.dtype in FLOATS, "model", caller,
              "a model whose floating-point parameters and buffers are float32, float16 or "
              "bfloat16", f"{name} of dtype {str(t.dtype).replace('torch.', '')}")


def quantize_int8(model: nn.Module, *, scheme: str = "symmetric", granularity: str = "tensor",
                  rounding: str = "nearest") -> nn.Module:
    """A NEW model with every ``nn.Linear`` / ``nn.Conv2d`` weight stored as int8; input untouched.

    Post-training quantisation; the defaults (symmetric, per tensor, round to nearest: scale =
    max|w| / 127) are those of earlier releases. ``scheme="asymmetric"`` stores unsigned words with
    an offset, ``granularity="channel"`` one range per output channel, ``rounding="floor"``
    truncates (see the module docstring and Stutz et al. 2021). The int8 words are a frozen
    ``Parameter`` named ``weight`` (so ``sample_faults`` / ``inject`` see them like any other
    weight, under the float model's parameter names) and are dequantised on every forward; biases
    stay float. Linear / Conv2d layers anywhere in the module tree are converted (a layer shared by
    two attributes stays shared); an ``nn.MultiheadAttention`` becomes an
    :class:`Int8MultiheadAttention` (in / q / k / v and out projections int8; hand-written
    attention built from ``nn.Linear`` is converted like any Linear); Conv2d with string or
    non-zero padding modes is left in float. The copy keeps the input's train/eval mode. A model
    with float64 (or other non-float32/16/bfloat16) parameters or buffers is an error.
    """
    caller = "quantize_int8"
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
          type(model).__name__)
    check_choice(scheme, SCHEMES, "scheme", caller)
    check_choice(granularity, GRANULARITIES, "granularity", caller)
    check_choice(rounding, ROUNDINGS, "rounding", caller)
    _check_float_model(model, caller)
    opts = (scheme, granularity, rounding)
    with torch.no_grad():
        if type(model) is nn.MultiheadAttention:
            return Int8MultiheadAttention(model, *opts).train(model.training)
        if quantizable(model):  # the model is itself one Linear / Conv2d
            return (Int8Linear if type(model) is nn.Linear else Int8Conv2d)(model, *opts).train(
                model.training)
        new = copy.deepcopy(model)
        n = _convert(new, opts, {})
    check(n > 0, "model", caller, "a model with nn.Linear or nn.Conv2d layers",
          f"{type(model).__name__} without any")
    return new
