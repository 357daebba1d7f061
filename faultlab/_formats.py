"""Low-bit storage formats: ``quantize(model, fmt)`` returns a NEW model whose Linear / Conv2d
weights are stored as the integer codes of ``fmt`` (and, for block formats, their scale codes),
dequantised on every forward, so that every fault model hits the stored bits.

Formats (OCP 8-bit FP spec, OCP Microscaling (MX) v1.0, NVFP4; docs/faultlab-formats.md):

============  =========  =====  ==============================  ===================================
fmt           element    block  scale                           stored words (uint8 Parameters)
============  =========  =====  ==============================  ===================================
int8          int8       -      fp32 amax/127 per tensor (buf)  ``weight``: one code per byte
int4          int4       -      fp32 amax/7 per tensor (buf)    ``weight``: two codes per byte
fp8_e4m3      E4M3fn     -      fp32 amax/448 per tensor (buf)  ``weight``: one code per byte
fp8_e5m2      E5M2       -      fp32 amax/57344 per tensor      ``weight``: one code per byte
mxfp8_e4m3    E4M3fn     32     E8M0 per block                  ``weight`` + ``weight_scale``
mxfp8_e5m2    E5M2       32     E8M0 per block                  ``weight`` + ``weight_scale``
mxfp6_e2m3    E2M3       32     E8M0 per block                  ``weight`` (4 codes / 3 bytes) + sc.
mxfp6_e3m2    E3M2       32     E8M0 per block                  ``weight`` (4 codes / 3 bytes) + sc.
mxfp4         E2M1       32     E8M0 per block                  ``weight`` (2 codes / byte) + scale
mxint8        int8*2^-6  32     E8M0 per block                  ``weight`` + ``weight_scale``
nvfp4         E2M1       16     E4M3 per block + fp32 / tensor  ``weight`` (2 codes / byte) + scale
============  =========  =====  ==============================  ===================================

Storage layout (documented contract, see :func:`storage`): the weight is read as a matrix
``(out, K)`` (``K`` = in_features, or in_channels/groups * kh * kw) and its ``numel`` codes are
taken in row-major order (``weight.reshape(-1)``). Codes of 8 bits: ``weight`` is a uint8 tensor
of the weight's shape (flat element index = FaultMap index). 4-bit codes: element ``2j`` in the
LOW nibble (bits 0-3) of byte ``j``, element ``2j + 1`` in the high nibble; ``weight`` is 1-D of
``ceil(numel / 2)`` bytes (a last half-filled byte has a zero high nibble). 6-bit codes: every 3
bytes hold 4 codes as one little-endian 24-bit group, code ``4g + i`` at bits ``6i .. 6i + 5`` of
group ``g``; ``weight`` is 1-D of ``3 * ceil(numel / 4)`` bytes (no unused bits except the tail).
Blocks run along K inside each row: block ``j`` of row ``r`` holds columns ``[jB, min(jB + B, K))``
(a short last block when ``B`` does not divide ``K``; no padding is stored); ``weight_scale`` is a
uint8 tensor ``(out, ceil(K / B))``. Per-tensor fp32 scales are buffers (``weight_tensor_scale``),
kept out of the fault target like biases (as in :func:`faultlab.quantize_int8`).

Semantics: E4M3 is the "fn" variant (no inf; NaN only S.1111.111; max 448), E5M2 is IEEE-like (inf
S.11111.00, NaN S.11111.{01,10,11}), E8M0 is ``2^(e - 127)`` with 0xFF = NaN, FP6 / FP4 have no
inf / NaN. Conversion rounds to nearest, ties to even, and SATURATES finite overflow (and +-inf) to
the element maximum; NaN stays NaN for FP8 elements. The sign of a value that rounds to zero is
kept (-0 codes). MX scale (spec section 6.3, microxcaling / torchao FLOOR): ``shared_exp =
floor(log2(amax)) - emax_elem`` clamped to >= -127 (an all-zero block: -127), scale byte
``shared_exp + 127``; a block holding NaN or +-inf gets scale 0xFF (NaN) and zero element codes;
elements ``P_i = Q(V_i / 2^shared_exp)``. MXINT8: ``P_i = clamp(RNE(64 V_i / X), -127, 127)``, value
``P_i / 64``. NVFP4: ``s_t = amax(|w|) / (448 * 6)`` (1 if the weight is all zero or not finite),
``s_b = E4M3(amax_block / (6 s_t))``, ``q_i = E2M1(clamp(w_i / (s_b s_t), -6, 6))`` (0 where
``s_b s_t = 0``), decoded ``(q_i s_b) s_t``; a block with NaN / inf gets the NaN scale 0x7F.
Per-tensor formats: ``s = amax / max_elem`` (1 if zero), codes ``Q(w / s)`` (ints: RNE, clamp to
+-127 / +-7), decoded ``value * s``. MX values decode as ``P_i * X`` in float32.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faultlab._quant import _check_float_model, quantizable, stored_mha_forward
from hwlab.errors import check, check_choice

__all__ = ["FORMATS", "Format", "QuantizedConv2d", "QuantizedLinear", "QuantizedMultiheadAttention",
           "Stored", "decode", "decode_elements", "encode_elements", "fault_roles", "fault_sites",
           "quantize", "storage"]


@dataclass(frozen=True)
class Format:
    """One storage format: element type, its width, block size and scale type."""

    name: str
    element: str  # int8, int4, e4m3, e5m2, e2m3, e3m2, e2m1, mxint8
    bits: int  # stored bits per element code
    block: int | None  # elements per shared scale; None: one fp32 scale per tensor
    scale: str  # "tensor" (fp32 buffer), "e8m0" (MX), "e4m3" (NVFP4, plus an fp32 tensor scale)


FORMATS = {f.name: f for f in (
    Format("int8", "int8", 8, None, "tensor"),
    Format("int4", "int4", 4, None, "tensor"),
    Format("fp8_e4m3", "e4m3", 8, None, "tensor"),
    Format("fp8_e5m2", "e5m2", 8, None, "tensor"),
    Format("mxfp8_e4m3", "e4m3", 8, 32, "e8m0"),
    Format("mxfp8_e5m2", "e5m2", 8, 32, "e8m0"),
    Format("mxfp6_e2m3", "e2m3", 6, 32, "e8m0"),
    Format("mxfp6_e3m2", "e3m2", 6, 32, "e8m0"),
    Format("mxfp4", "e2m1", 4, 32, "e8m0"),
    Format("mxint8", "mxint8", 8, 32, "e8m0"),
    Format("nvfp4", "e2m1", 4, 16, "e4m3"),
)}

# element -> (largest finite magnitude, emax_elem: exponent of its largest power of two)
_MAX = {"int8": (127.0, 6), "int4": (7.0, 2), "e4m3": (448.0, 8), "e5m2": (57344.0, 15),
        "e2m3": (7.5, 2), "e3m2": (28.0, 4), "e2m1": (6.0, 2), "mxint8": (127 / 64, 0)}
_MINIFLOAT = {"e2m3": (2, 3, 1), "e3m2": (3, 2, 3), "e2m1": (2, 1, 1)}  # exp bits, mant bits, bias
_TORCH_FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
NAN_E8M0 = 0xFF
NAN_E4M3 = 0x7F


def _minifloat_table(ebits: int, mbits: int, bias: int) -> np.ndarray:
    """Decode table of a sign-magnitude float without inf / NaN (OCP FP6 / FP4): 2^(1+e+m) values."""
    n = 1 + ebits + mbits
    out = np.empty(2 ** n, dtype=np.float64)
    for code in range(2 ** n):
        sign = -1.0 if code >> (n - 1) else 1.0
        e = (code >> mbits) & ((1 << ebits) - 1)
        m = code & ((1 << mbits) - 1)
        out[code] = sign * (2.0 ** (1 - bias) * (m / 2 ** mbits) if e == 0
                            else 2.0 ** (e - bias) * (1 + m / 2 ** mbits))
    return out


def _table(element: str) -> torch.Tensor:
    """float32 decode table of every code of ``element`` (2^bits entries)."""
    if element in _TORCH_FP8:  # torch has the dtype: view the bytes
        return torch.arange(256, dtype=torch.uint8).view(_TORCH_FP8[element]).float()
    if element in _MINIFLOAT:
        return torch.from_numpy(_minifloat_table(*_MINIFLOAT[element])).float()
    if element == "int4":
        return torch.tensor([c - 16 if c >= 8 else c for c in range(16)], dtype=torch.float32)
    signed = torch.arange(256, dtype=torch.uint8).view(torch.int8).float()
    return signed / 64 if element == "mxint8" else signed


_TABLES = {e: _table(e) for e in _MAX}
E8M0 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e8m0fnu).float()  # 0xFF -> NaN


def decode_elements(codes: torch.Tensor, element: str) -> torch.Tensor:
    """float32 values of unpacked element ``codes`` (uint8, one code per entry)."""
    if element in _TORCH_FP8:
        return codes.view(_TORCH_FP8[element]).float()
    return _TABLES[element].to(codes.device)[codes.long()]


def encode_elements(x: torch.Tensor, element: str) -> torch.Tensor:
    """uint8 codes of float32 ``x`` (already divided by its scale): RNE, saturating."""
    top, _ = _MAX[element]
    if element in _TORCH_FP8:  # torch casts RNE; clamp first so overflow saturates (also +-inf)
        return torch.clamp(x, -top, top).to(_TORCH_FP8[element]).view(torch.uint8)
    if element in ("int8", "int4", "mxint8"):
        q = torch.round(x * 64 if element == "mxint8" else x)  # ties to even
        q = torch.clamp(q, -top * (64 if element == "mxint8" else 1),
                        top * (64 if element == "mxint8" else 1)).to(torch.int8)
        return q.view(torch.uint8) & (0x0F if element == "int4" else 0xFF)
    ebits, mbits, bias = _MINIFLOAT[element]
    a = torch.clamp(torch.nan_to_num(x.abs(), nan=0.0), max=top)
    _, ex = torch.frexp(a)  # a = m 2^ex, m in [0.5, 1): floor(log2 a) = ex - 1
    e = torch.clamp(ex - 1, min=1 - bias)
    step = torch.ldexp(torch.ones_like(a), e - mbits)
    q = torch.round(a / step) * step  # exact power-of-two steps; ties to even
    pos = _TABLES[element][: 2 ** (1 + ebits + mbits - 1)].to(x.device)  # ascending magnitudes
    code = torch.searchsorted(pos, q).to(torch.uint8)
    return code | (torch.signbit(x).to(torch.uint8) << (ebits + mbits))


# ---- packing -------------------------------------------------------------------------------

def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack flat uint8 codes of ``bits`` (4, 6 or 8) into bytes (module docstring layout)."""
    codes = codes.reshape(-1)
    if bits == 8:
        return codes.clone()
    if bits == 4:
        c = F.pad(codes, (0, codes.numel() % 2)).reshape(-1, 2)
        return c[:, 0] | (c[:, 1] << 4)
    c = F.pad(codes, (0, -codes.numel() % 4)).reshape(-1, 4).to(torch.int32)
    g = c[:, 0] | (c[:, 1] << 6) | (c[:, 2] << 12) | (c[:, 3] << 18)
    return torch.stack([g & 0xFF, (g >> 8) & 0xFF, (g >> 16) & 0xFF], 1).reshape(-1).to(
        torch.uint8)


def unpack(data: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The first ``numel`` codes (uint8, flat) of packed ``data``."""
    data = data.reshape(-1)
    if bits == 8:
        return data
    if bits == 4:
        return torch.stack([data & 0x0F, data >> 4], 1).reshape(-1)[:numel]
    b = data.reshape(-1, 3).to(torch.int32)
    g = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return torch.stack([(g >> (6 * i)) & 0x3F for i in range(4)], 1).reshape(-1)[:numel].to(
        torch.uint8)


# ---- whole-tensor quantisation -------------------------------------------------------------

def _blocks(w: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """``w`` as (out, nb, block) float32 blocks along K (zero padded) and K."""
    m = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
    k = m.shape[1]
    nb = -(-k // block)
    return F.pad(m, (0, nb * block - k)).reshape(m.shape[0], nb, block), k


def _unblock(b: torch.Tensor, k: int) -> torch.Tensor:
    return b.reshape(b.shape[0], -1)[:, :k].reshape(-1)


def encode(w: torch.Tensor, fmt: str) -> dict:
    """Quantise ``w``: ``{"codes": unpacked flat uint8, "scale": uint8 (out, nb) or None,
    "tensor_scale": float32 scalar or None}`` (module docstring rules)."""
    f = FORMATS[fmt]
    w = w.detach().float()
    top, emax = _MAX[f.element]
    if f.scale == "tensor":
        amax = w.abs().amax() if w.numel() else torch.tensor(0.0)
        s = torch.where((amax > 0) & torch.isfinite(amax), amax / top, torch.ones_like(amax))
        return {"codes": encode_elements(w.reshape(-1) / s, f.element), "scale": None,
                "tensor_scale": s}
    b, k = _blocks(w, f.block)
    amax = b.abs().amax(-1)  # (out, nb); NaN if the block holds a NaN
    bad = ~torch.isfinite(amax)
    if f.scale == "e8m0":
        _, ex = torch.frexp(amax)
        shared = torch.where(amax > 0, ex - 1 - emax, torch.full_like(ex, -127)).clamp(min=-127)
        shared = torch.where(bad, torch.zeros_like(shared), shared)
        inv = E8M0.to(w.device)[(127 - shared).long()]  # 2^-shared_exp, exact
        codes = encode_elements(torch.where(bad[..., None], 0.0, b * inv[..., None]), f.element)
        scale = torch.where(bad, NAN_E8M0, shared + 127).to(torch.uint8)
        return {"codes": _unblock(codes, k), "scale": scale, "tensor_scale": None}
    tmax = w.abs().amax() if w.numel() else torch.tensor(0.0)  # NVFP4
    st = torch.where((tmax > 0) & torch.isfinite(tmax), tmax / (448.0 * 6.0), torch.ones_like(tmax))
    sb = encode_elements(torch.where(bad, 0.0, amax / (6.0 * st)), "e4m3")
    sb = torch.where(bad, NAN_E4M3, sb).to(torch.uint8)
    total = decode_elements(sb, "e4m3") * st
    ok = (total != 0) & ~bad
    x = torch.where(ok[..., None], b / torch.where(ok, total, 1.0)[..., None], 0.0)
    codes = encode_elements(torch.clamp(x, -6.0, 6.0), "e2m1")
    return {"codes": _unblock(codes, k), "scale": sb, "tensor_scale": st}


def decode(codes: torch.Tensor, fmt: str, shape, scale=None, tensor_scale=None) -> torch.Tensor:
    """float32 weight of ``shape`` from unpacked flat ``codes`` (and the scales of ``encode``)."""
    f = FORMATS[fmt]
    vals = decode_elements(codes, f.element)
    if f.scale == "tensor":
        return (vals * tensor_scale).reshape(shape)
    out = scale.shape[0]
    k = vals.numel() // out
    nb = scale.shape[1]
    b = F.pad(vals.reshape(out, k), (0, nb * f.block - k)).reshape(out, nb, f.block)
    if f.scale == "e8m0":
        b = b * E8M0.to(vals.device)[scale.long()][..., None]
    else:
        b = (b * decode_elements(scale, "e4m3")[..., None]) * tensor_scale
    return _unblock(b, k).reshape(shape)


# ---- layers --------------------------------------------------------------------------------

class _Stored(nn.Module):
    """Shared storage. Per stored float weight ``NAME`` (``weight``; ``in_proj_weight`` of
    attention): ``NAME`` (uint8 codes, frozen Parameter), ``NAME_scale`` (uint8 block scale codes,
    frozen Parameter; block formats), ``NAME_tensor_scale`` (fp32 buffer; per-tensor and NVFP4).
    ``_codes`` maps each NAME to (fmt, float shape)."""

    _hwlab_leaf = True  # hwlab.graph: one opaque call, as the int8 layers (not its table decode)

    def _register(self, name: str, w: torch.Tensor, fmt: str):
        f = FORMATS[fmt]
        w = w.detach()
        q = encode(w, fmt)
        if not hasattr(self, "_codes"):
            self._codes = {}
        self._codes[name] = (fmt, tuple(w.shape))
        packed = pack(q["codes"], f.bits)
        self.register_parameter(name, nn.Parameter(
            packed.reshape(w.shape) if f.bits == 8 else packed, requires_grad=False))
        if q["scale"] is not None:
            self.register_parameter(f"{name}_scale", nn.Parameter(q["scale"].contiguous(),
                                                                  requires_grad=False))
        if q["tensor_scale"] is not None:
            self.register_buffer(f"{name}_tensor_scale", q["tensor_scale"].reshape(()).float())

    def _decoded(self, name: str, dtype=torch.float32) -> torch.Tensor:
        fmt, shape = self._codes[name]
        codes = unpack(getattr(self, name), FORMATS[fmt].bits, int(np.prod(shape)))
        return decode(codes, fmt, shape, getattr(self, f"{name}_scale", None),
                      getattr(self, f"{name}_tensor_scale", None)).to(dtype)

    def _store(self, source: nn.Module, fmt: str):
        self.fmt, self.shape = fmt, tuple(source.weight.shape)
        self._register("weight", source.weight, fmt)
        self.bias = None if source.bias is None else nn.Parameter(source.bias.detach().clone())

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        """The float weight as the forward sees it (decoded from the stored words now)."""
        return self._decoded("weight", dtype)


class QuantizedLinear(_Stored):
    """A Linear layer with weights stored in a low-bit format (module docstring)."""

    def __init__(self, source: nn.Linear, fmt: str):
        super().__init__()
        self.in_features, self.out_features = source.in_features, source.out_features
        self._store(source, fmt)

    def forward(self, x):
        return F.linear(x, self.dequantized(x.dtype), self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.fmt}"


class QuantizedConv2d(_Stored):
    """A Conv2d layer (zero padding) with weights stored in a low-bit format."""

    def __init__(self, source: nn.Conv2d, fmt: str):
        super().__init__()
        self.stride, self.padding = source.stride, source.padding
        self.dilation, self.groups = source.dilation, source.groups
        self._store(source, fmt)

    def forward(self, x):
        return F.conv2d(x, self.dequantized(x.dtype), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self):
        return f"{self.shape}, stride={self.stride}, padding={self.padding}, {self.fmt}"


class QuantizedMultiheadAttention(_Stored):
    """``nn.MultiheadAttention`` whose projection weights are stored in a low-bit format.

    The packed input projection is ``in_proj_weight`` (+ ``in_proj_weight_scale``), or
    ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight`` when key / value dimensions differ;
    the output projection is a :class:`QuantizedLinear` ``out_proj``. Biases, ``bias_k`` /
    ``bias_v`` stay float. The forward is ``F.multi_head_attention_forward`` on the decoded
    weights, with the source module's options (batch_first, dropout, add_zero_attn).
    """

    def __init__(self, source: nn.MultiheadAttention, fmt: str):
        super().__init__()
        self.fmt = fmt
        for a in ("embed_dim", "kdim", "vdim", "_qkv_same_embed_dim", "num_heads", "dropout",
                  "batch_first", "head_dim", "add_zero_attn"):
            setattr(self, a, getattr(source, a))
        if source._qkv_same_embed_dim:
            self._register("in_proj_weight", source.in_proj_weight, fmt)
        else:
            for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self._register(n, getattr(source, n), fmt)
        self.in_proj_bias = None if source.in_proj_bias is None else nn.Parameter(
            source.in_proj_bias.detach().clone())
        self.bias_k = None if source.bias_k is None else nn.Parameter(source.bias_k.detach().clone())
        self.bias_v = None if source.bias_v is None else nn.Parameter(source.bias_v.detach().clone())
        self.out_proj = QuantizedLinear(source.out_proj, fmt)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        return stored_mha_forward(self, self._decoded, query, key, value, key_padding_mask,
                                  need_weights, attn_mask, average_attn_weights, is_causal)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, {self.fmt}"


def _new(child: nn.Module, fmt: str) -> nn.Module:
    if isinstance(child, nn.MultiheadAttention):
        new = QuantizedMultiheadAttention(child, fmt)
    else:
        new = (QuantizedLinear if type(child) is nn.Linear else QuantizedConv2d)(child, fmt)
    return new.train(child.training)


def _convertible(module: nn.Module) -> bool:
    return quantizable(module) or isinstance(module, nn.MultiheadAttention)


def _convert(module: nn.Module, fmt: str, memo: dict) -> int:
    """Replace quantisable children in place; a module used twice is converted once."""
    done = 0
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        if id(child) in memo:
            setattr(module, name, memo[id(child)])
        elif _convertible(child):
            memo[id(child)] = new = _new(child, fmt)
            setattr(module, name, new)
            done += 1
        else:
            memo[id(child)] = child
            done += _convert(child, fmt, memo)
    return done


def quantize(model: nn.Module, fmt: str) -> nn.Module:
    """A NEW model with every ``nn.Linear`` / ``nn.Conv2d`` weight stored in ``fmt``; input untouched.

    ``fmt``: one of :data:`FORMATS` (int8, int4, fp8_e4m3, fp8_e5m2, mxfp8_e4m3, mxfp8_e5m2,
    mxfp6_e2m3, mxfp6_e3m2, mxfp4, mxint8, nvfp4). Each converted layer holds its stored codes as
    a frozen uint8 ``Parameter`` named ``weight`` and, for block formats, its scale codes as a
    uint8 ``Parameter`` named ``weight_scale`` (``fc1.weight`` / ``fc1.weight_scale``): both are
    eligible words of ``sample_faults`` / ``inject`` / ``campaign``, 8 bits a word, so a BER is
    per stored bit. Weights are dequantised on every forward with the exact OCP semantics (see
    the module docstring and docs/faultlab-formats.md); biases stay float. Conversion follows
    :func:`faultlab.quantize_int8` (shared layers stay shared, non-zero padding modes stay float,
    train/eval mode kept, float64 models refused), and ``nn.MultiheadAttention`` projections are
    stored too (:class:`QuantizedMultiheadAttention`: ``attn.in_proj_weight`` /
    ``attn.in_proj_weight_scale``, ``attn.out_proj.weight`` / ``attn.out_proj.weight_scale``).
    """
    caller = "quantize"
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
          type(model).__name__)
    check_choice(fmt, tuple(FORMATS), "fmt", caller)
    _check_float_model(model, caller)
    with torch.no_grad():
        if _convertible(model):
            return _new(model, fmt)
        new = copy.deepcopy(model)
        n = _convert(new, fmt, {})
    check(n > 0, "model", caller, "a model with nn.Linear or nn.Conv2d layers",
          f"{type(model).__name__} without any")
    return new


# ---- what a stored word is -----------------------------------------------------------------

@dataclass(frozen=True)
class Stored:
    """What one stored parameter of a :func:`quantize` model holds.

    ``role``: ``"element"`` (element codes) or ``"scale"`` (block scale codes); ``fmt`` the format,
    ``code_bits`` the bits of one code (4 / 6 / 8; scales 8), ``block`` elements per scale,
    ``shape`` the float weight's shape (elements) and ``numel`` its element count.
    """

    role: str
    fmt: str
    code_bits: int
    block: int | None
    shape: tuple
    numel: int

    def elements(self, byte_index) -> np.ndarray:
        """Flat weight-element indices that stored byte ``byte_index`` of this parameter feeds:
        its one or two codes (element words; for 6-bit codes the one or two codes with bits in
        the byte), or the whole block (scale words)."""
        i = int(byte_index)
        if self.role == "scale":
            k = self.numel // self.shape[0]
            row, j = divmod(i, -(-k // self.block))
            return np.arange(row * k + j * self.block, row * k + min((j + 1) * self.block, k))
        if self.code_bits == 8:
            out = np.array([i])
        elif self.code_bits == 4:
            out = np.array([2 * i, 2 * i + 1])
        else:
            g, r = divmod(i, 3)  # bits 8r .. 8r+7 of group g: codes (8r)//6 .. (8r+7)//6
            out = 4 * g + np.arange((8 * r) // 6, (8 * r + 7) // 6 + 1)
        return out[out < self.numel]


def storage(model: nn.Module) -> dict[str, Stored]:
    """``{parameter name: Stored}`` for the stored-code parameters of a :func:`quantize` model, in
    ``named_parameters()`` order: where element and scale words live and how wide a code is."""
    out = {}
    for mname, mod in model.named_modules():
        if isinstance(mod, _Stored):
            pre = f"{mname}." if mname else ""
            for name, (fmt, shape) in mod._codes.items():
                f = FORMATS[fmt]
                numel = int(np.prod(shape))
                out[f"{pre}{name}"] = Stored("element", fmt, f.bits, f.block, shape, numel)
                if f.block:
                    out[f"{pre}{name}_scale"] = Stored("scale", fmt, 8, f.block, shape, numel)
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def fault_roles(model: nn.Module, fmap) -> np.ndarray:
    """Per FaultMap entry: ``"element"``, ``"scale"`` or ``"other"`` (a parameter that is not a
    stored code of :func:`quantize`, e.g. a float bias)."""
    info = storage(model)
    per_name = np.array([info[n].role if n in info else "other" for n in fmap.names] or ["other"],
                        dtype=object)
    return per_name[fmap.param] if len(fmap) else np.array([], dtype=object)


def fault_sites(model: nn.Module, fmap):
    """What each FaultMap entry hits, as a pandas DataFrame (one row an entry, map order):
    ``param``, ``index`` (stored byte), ``bit`` (of the byte), ``kind``, ``role`` (element / scale
    / other), ``fmt``, ``element`` (flat index of the weight element whose code holds the bit; for
    a scale word the block's first element; -1 for padding bits and other parameters),
    ``code_bit`` (bit inside that element or scale code, 0 = LSB) and ``block`` (row-major block
    index of the element or scale, -1 without blocks)."""
    info = storage(model)
    frame = fmap.to_frame()
    n = len(fmap)
    role = np.full(n, "other", dtype=object)
    fmt = np.full(n, None, dtype=object)
    element = np.full(n, -1, dtype=np.int64)
    code_bit = fmap.bit.astype(np.int64)
    block = np.full(n, -1, dtype=np.int64)
    for p, name in enumerate(fmap.names):
        sel = np.nonzero(fmap.param == p)[0]
        st = info.get(name)
        if st is None or sel.size == 0:
            continue
        idx, bit = fmap.index[sel].astype(np.int64), fmap.bit[sel].astype(np.int64)
        role[sel], fmt[sel] = st.role, st.fmt
        k = st.numel // st.shape[0]
        nb = -(-k // st.block) if st.block else 0
        if st.role == "scale":
            row, j = np.divmod(idx, nb)
            element[sel], block[sel] = row * k + j * st.block, idx
            continue
        if st.code_bits == 8:
            el, cb = idx, bit
        elif st.code_bits == 4:
            el, cb = 2 * idx + bit // 4, bit % 4
        else:
            pos = 8 * (idx % 3) + bit
            el, cb = 4 * (idx // 3) + pos // 6, pos % 6
        pad = el >= st.numel
        element[sel] = np.where(pad, -1, el)
        code_bit[sel] = cb
        if st.block:
            row, col = np.divmod(el, k)
            block[sel] = np.where(pad, -1, row * nb + col // st.block)
    frame["role"], frame["fmt"], frame["element"] = role, fmt, element
    frame["code_bit"], frame["block"] = code_bit, block
    return frame
