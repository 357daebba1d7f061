"""A tiny vision transformer (Dosovitskiy et al. 2021): ``vit-tiny``.

Children of the ``nn.Sequential``: PatchEmbed (conv patchify + class token + learned positions),
``depth`` pre-norm transformer blocks (one child each), final LayerNorm, ClassToken (selects the
class token), Linear head. Differs from ViT-Ti/16 (dim 192, depth 12, 3 heads, 16x16 patches) in
size only: dim 64, depth 4, 4 heads, MLP ratio 2 and 4x4 patches (2x2 below 16x16 inputs), so it
trains on a CPU in about a minute. Activations are ``nn.GELU`` modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_int, check_positive_int
from hwlab.models._registry import register_model


class PatchEmbed(nn.Module):
    """B x C x H x W -> B x (1 + N) x D tokens: patches, a class token, learned positions."""

    def __init__(self, in_shape, dim: int, patch: int):
        super().__init__()
        c, h, w = in_shape
        self.proj = nn.Conv2d(c, dim, patch, stride=patch)
        n = (h // patch) * (w // patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + n, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # B x N x D
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # B x 1 x D
        return torch.cat([cls, x], dim=1) + self.pos_embed  # B x (1 + N) x D


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(d_head)) v, fused qkv projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # B x heads x T x d_head
        return self.proj(out.transpose(1, 2).reshape(b, t, d))  # B x T x D


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)) with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # B x T x D
        return x + self.mlp(self.norm2(x))


class ClassToken(nn.Module):
    """B x T x D -> B x D: the class token (``pool="cls"``) or the mean of all tokens."""

    def __init__(self, pool: str = "cls"):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.pool == "cls" else x.mean(dim=1)


@register_model("vit-tiny")
def vit_tiny(in_shape=(1, 28, 28), num_classes=10, dim=64, depth=4, heads=4, mlp_ratio=2,
             patch=None, pool="cls") -> nn.Sequential:
    """Tiny ViT; ``patch`` defaults to 4 for inputs of 16x16 and more, else 2 (1 below 4x4)."""
    dim = check_positive_int(dim, "dim", "vit-tiny")
    depth = check_positive_int(depth, "depth", "vit-tiny")
    heads = check_positive_int(heads, "heads", "vit-tiny")
    check(dim % heads == 0, "dim", "vit-tiny", f"a multiple of heads={heads}", dim)
    check(pool in ("cls", "mean"), "pool", "vit-tiny", "one of cls, mean", pool)
    side = min(in_shape[1:])
    if patch is None:
        patch = 4 if side >= 16 else 2 if side >= 4 else 1
    patch = check_int(patch, "patch", "vit-tiny", 1, side)
    layers: list[nn.Module] = [PatchEmbed(in_shape, dim, patch)]
    layers += [Block(dim, heads, mlp_ratio) for _ in range(depth)]
    layers += [nn.LayerNorm(dim), ClassToken(pool), nn.Linear(dim, num_classes)]
    return nn.Sequential(*layers)
