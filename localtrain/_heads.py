"""Auxiliary networks of the local rules: classifier heads and reconstruction decoders.

Each builder takes the feature shape it sees, without batch: ``(C, H, W)`` for CNN feature maps,
``(N, D)`` for transformer tokens, ``(D,)`` for vectors, and returns an ``nn.Module``.

- :func:`infopro_head` is InfoPro's ``1c2f`` auxiliary classifier (Wang et al. 2021, official code):
  conv3x3 (C -> 2C, stride 2; C -> C, stride 1 from 64 channels on) - BN - ReLU - global average
  pool - FC 128 - ReLU - FC classes. On tokens: LayerNorm - mean over tokens - FC 128 - ReLU - FC.
- :func:`dgl_head` is DGL's auxiliary net (Belilovsky et al. 2020, as in the AugLocal code):
  adaptive pool to ceil(H/4) - three (1x1 conv - BN - ReLU) - adaptive pool to <= 2x2 - two
  (FC - BN - ReLU) - FC. On tokens: LayerNorm - mean - FC - GELU - FC.
- :class:`Decoder` reconstructs a target (the image for InfoPro, the module's input features for
  feature reconstruction): on maps, InfoPro's decoder (bilinear resize to the target size - conv3x3
  to 12 - BN - ReLU - conv3x3 to the target channels). Image targets (values in [0, 1]) use a sigmoid and binary cross-entropy as in InfoPro;
  feature targets use mean squared error. Token-to-token reconstruction is a per-token MLP; tokens
  to image is a per-token MLP to the token's patch pixels (ViT unpatchify).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Decoder", "ResBlock", "TokenGrid", "dgl_head", "infopro_head", "linear_head"]

_HIDDEN = 128  # InfoPro's aux_net_feature_dim: hidden width of the 1c2f classifier


class TokenGrid(nn.Module):
    """(B, N, D) tokens -> (B, D, g, g) map of the last g*g tokens (drops leading class tokens)."""

    def __init__(self, n_tokens: int):
        super().__init__()
        self.g = math.isqrt(n_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.g
        x = x[:, x.shape[1] - g * g:]  # B x g*g x D
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], g, g)  # B x D x g x g


class TokenMean(nn.Module):
    """(B, N, D) -> (B, D): mean over tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def _token_mlp(d: int, hidden: int, out: int, act: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d), TokenMean(), nn.Linear(d, hidden), act(),
                         nn.Linear(hidden, out))


def infopro_head(shape, num_classes: int) -> nn.Module:
    """InfoPro's ``1c2f`` auxiliary classifier for features of ``shape`` (see module docstring)."""
    if len(shape) == 3:
        c = shape[0]
        c_out, stride = (2 * c, 2) if c < 64 else (c, 1)
        return nn.Sequential(
            nn.Conv2d(c, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(c_out, _HIDDEN), nn.ReLU(), nn.Linear(_HIDDEN, num_classes))
    if len(shape) == 2:
        return _token_mlp(shape[1], _HIDDEN, num_classes, nn.ReLU)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), _HIDDEN), nn.ReLU(),
                         nn.Linear(_HIDDEN, num_classes))


def dgl_head(shape, num_classes: int) -> nn.Module:
    """DGL's auxiliary classifier (see module docstring)."""
    if len(shape) == 3:
        c, h, _ = shape
        s1 = math.ceil(h / 4)
        s2 = min(s1, 2)
        f = c * s2 * s2
        convs = []
        for _ in range(3):
            convs += [nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(s1), *convs, nn.AdaptiveAvgPool2d(s2), nn.Flatten(),
            nn.Linear(f, f, bias=False), nn.BatchNorm1d(f), nn.ReLU(),
            nn.Linear(f, f, bias=False), nn.BatchNorm1d(f), nn.ReLU(),
            nn.Linear(f, num_classes))
    if len(shape) == 2:
        return _token_mlp(shape[1], shape[1], num_classes, nn.GELU)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), _HIDDEN), nn.ReLU(),
                         nn.Linear(_HIDDEN, num_classes))


def linear_head(shape, num_classes: int) -> nn.Module:
    """Pool + linear classifier (the end of an AugLocal auxiliary net; BN first when shallow)."""
    if len(shape) == 3:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shape[0], num_classes))
    if len(shape) == 2:
        return nn.Sequential(nn.LayerNorm(shape[1]), TokenMean(), nn.Linear(shape[1], num_classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), num_classes))


class ResBlock(nn.Module):
    """A fresh CIFAR-ResNet basic block (He et al. 2016) from ``c_in`` to ``c_out`` channels.

    AugLocal builds auxiliary layers like this where a selected layer's input shape differs from the
    features at hand (a stage change): option-B projection shortcut when the shape changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Decoder(nn.Module):
    """Reconstruct ``target`` (shape ``target_shape``) from features of shape ``feat_shape``.

    ``image=True`` means the target is the input image in [0, 1]: sigmoid output and binary
    cross-entropy (InfoPro). Otherwise mean squared error against the (detached) target features.
    ``forward(features, target)`` returns the scalar loss.
    """

    def __init__(self, feat_shape, target_shape, image: bool, width: int = 12):
        super().__init__()
        self.image = image
        feat_shape, target_shape = tuple(feat_shape), tuple(target_shape)
        self.target_shape = target_shape
        self.to_map: nn.Module = nn.Identity()
        self.decoder: nn.Module
        if len(feat_shape) == 2 and len(target_shape) == 2:
            d_in, d_out = feat_shape[1], target_shape[1]  # token -> token MLP
            self.decoder = nn.Sequential(nn.Linear(d_in, d_in), nn.GELU(), nn.Linear(d_in, d_out))
            self.mode = "tokens"
        elif len(feat_shape) == 2 and len(target_shape) == 3:
            # tokens -> image: per-token MLP to its patch's pixels, laid back on the grid (as the
            # ViT/MAE unpatchify); cheaper than resizing D-channel maps to the image size
            self.to_map = TokenGrid(feat_shape[0])
            g, (c, h, w) = self.to_map.g, target_shape
            self.patch = (max(h // g, 1), max(w // g, 1))
            d = feat_shape[1]
            self.decoder = nn.Sequential(nn.Linear(d, d), nn.GELU(),
                                         nn.Linear(d, c * self.patch[0] * self.patch[1]))
            self.mode = "patches"
        elif len(target_shape) == 3 and len(feat_shape) == 3:
            self.decoder = nn.Sequential(
                nn.Conv2d(feat_shape[0], width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, target_shape[0], 3, padding=1))  # InfoPro's 2-conv decoder
            self.mode = "map"
        else:
            self.decoder = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(feat_shape),
                                                                 math.prod(target_shape)))
            self.mode = "flat"

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.mode == "map":
            z = F.interpolate(features, size=self.target_shape[1:], mode="bilinear",
                              align_corners=True)
            out = self.decoder(z)  # B x C_t x H_t x W_t
        elif self.mode == "patches":
            g, (ph, pw), c = self.to_map.g, self.patch, self.target_shape[0]
            z = self.decoder(features[:, features.shape[1] - g * g:])  # B x g*g x c*ph*pw
            z = z.reshape(len(z), g, g, c, ph, pw).permute(0, 3, 1, 4, 2, 5)  # B x c x g x ph x g x pw
            out = z.reshape(len(z), c, g * ph, g * pw)
            if out.shape[2:] != target.shape[2:]:
                out = F.interpolate(out, size=target.shape[2:], mode="nearest")
        else:
            out = self.decoder(features).reshape(target.shape)
        if self.image:
            return F.binary_cross_entropy_with_logits(out, target)  # = BCE(sigmoid(out), target)
        return F.mse_loss(out, target)
