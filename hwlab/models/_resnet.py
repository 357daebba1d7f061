"""CIFAR-style ResNets (He et al. 2016, section 4.2): ``resnet20`` and ``resnet32``.

3x3 stem conv with 16 channels, three stages of n BasicBlocks (16, 32, 64 channels; stride 2 at
the start of stages 2 and 3), global average pooling, one linear layer; depth = 6n + 2 (n = 3 and
5). Shortcuts are the paper's option A: identity, with stride-2 subsampling and zero-padded extra
channels where the shape changes (no parameters). Each block is one child of the ``nn.Sequential``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check_positive_int
from hwlab.models._registry import register_model


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad channels up to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # B x C_in x H/s x W/s
        extra = self.c_out - self.c_in
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))  # B x C_out x H/s x W/s


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); activations are ``nn.ReLU`` modules."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        same = stride == 1 and c_in == c_out
        self.shortcut = nn.Identity() if same else PadShortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))  # B x C_out x H/s x W/s
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def _init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # He et al. 2015 init
    return model


def cifar_resnet(in_shape, num_classes: int, n: int, width: int = 16) -> nn.Sequential:
    """ResNet-(6n+2) for small images; ``width`` is the first stage's channel count (paper: 16)."""
    width = check_positive_int(width, "width", "cifar_resnet")
    c = in_shape[0]
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    c = width
    for stage in range(3):
        c_out = width * 2**stage
        for i in range(n):
            layers.append(BasicBlock(c, c_out, stride=2 if (stage > 0 and i == 0) else 1))
            c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return _init(nn.Sequential(*layers))


@register_model("resnet20")
def resnet20(in_shape=(3, 32, 32), num_classes=10, width=16) -> nn.Sequential:
    """ResNet-20 (n = 3, 0.27 M parameters at width 16)."""
    return cifar_resnet(in_shape, num_classes, n=3, width=width)


@register_model("resnet32")
def resnet32(in_shape=(3, 32, 32), num_classes=10, width=16) -> nn.Sequential:
    """ResNet-32 (n = 5, 0.46 M parameters at width 16)."""
    return cifar_resnet(in_shape, num_classes, n=5, width=width)
