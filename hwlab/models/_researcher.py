"""Non-Sequential models written the way researchers write them: ``resnet18``, ``mobilenetv2``,
``densenet``.

These are the shapes of code hwlab must handle without help (docs/own-models.md): a ``forward``
with functional ``F.relu`` and a residual add (ResNet-18), ``nn.ReLU6`` modules, depthwise
convolutions and inverted residuals (MobileNetV2), ``torch.cat`` concatenation with BN-ReLU-Conv
layers (DenseNet). None of them is an ``nn.Sequential`` at the top level; packages see them
through :mod:`hwlab.graph`. Widths are scaled down (a ``width`` keyword) so that they train on a
2-core CPU; the paper widths are given beside each default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check_number, check_positive_int
from hwlab.models._registry import register_model


def _init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # He 2015
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
    return model


# -- ResNet-18 (He et al. 2016, the CIFAR variant of kuangliu/pytorch-cifar) -------------------
class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), with functional ``F.relu``.

    The shortcut is the identity, or a 1x1 stride-s convolution + BatchNorm where the shape
    changes (option B of He et al. 2016).
    """

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # B x C_out x H/s x W/s
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)  # residual add
        return F.relu(out)


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem, four stages of two BasicBlocks, global pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        c = width
        stages = []
        for i in range(4):
            c_out = width * 2**i
            blocks = [BasicBlock(c, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out, 1)]
            stages.append(nn.Sequential(*blocks))
            c = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # B x W x H x W
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)  # B x 8W x H/8 x W/8
        out = F.adaptive_avg_pool2d(out, 1)  # B x 8W x 1 x 1
        out = out.view(out.size(0), -1)  # B x 8W
        return self.linear(out)


@register_model("resnet18")
def resnet18(in_shape=(3, 32, 32), num_classes=10, width=16) -> nn.Module:
    """CIFAR ResNet-18 (paper width 64: 11.2 M parameters; default 16: 0.70 M)."""
    width = check_positive_int(width, "width", "resnet18")
    return _init(ResNet18(in_shape[0], num_classes, width))


# -- MobileNetV2 (Sandler et al. 2018) ---------------------------------------------------------
class InvertedResidual(nn.Module):
    """1x1 expand - ReLU6 - 3x3 depthwise - ReLU6 - 1x1 linear projection, + x when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # depthwise
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for small images: stride-1 stem, inverted residual stages, 1x1 head conv."""

    # (expansion t, channels c, repeats n, first stride s) of Sandler et al. table 2, shortened
    # to four stages with CIFAR strides (the stem keeps the resolution).
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2))

    def __init__(self, in_channels: int, num_classes: int, width: float):
        super().__init__()

        def ch(c: int) -> int:
            return max(4, round(c * width / 4) * 4)  # multiples of 4 channels

        c = ch(32)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c), nn.ReLU6(inplace=True))
        blocks = []
        for t, c_out, n, s in self.SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(c, ch(c_out), s if i == 0 else 1, t))
                c = ch(c_out)
        self.features = nn.Sequential(*blocks)
        last = ch(128)
        self.head = nn.Sequential(nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last),
                                  nn.ReLU6(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.features(self.stem(x)))  # B x last x H' x W'
        x = x.mean([2, 3])  # global average pool, B x last
        return self.classifier(x)


@register_model("mobilenetv2")
def mobilenetv2(in_shape=(3, 32, 32), num_classes=10, width=0.5) -> nn.Module:
    """MobileNetV2-style net; ``width`` multiplies the channels (paper 1.0 with 7 stages)."""
    width = check_number(width, "width", "mobilenetv2", 0, inclusive=(False, True))
    return _init(MobileNetV2(in_shape[0], num_classes, width))


# -- DenseNet (Huang et al. 2017) --------------------------------------------------------------
class DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3 producing ``growth`` new channels, concatenated to the input."""

    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.relu(self.bn(x)))  # B x growth x H x W
        return torch.cat([x, out], 1)  # B x (C + growth) x H x W


class Transition(nn.Module):
    """BN-ReLU-Conv1x1 (halve channels) - 2x2 average pool (skipped below 2x2, decided when the
    model is built: a shape test in ``forward`` would be data-dependent control flow)."""

    def __init__(self, c_in: int, c_out: int, pool: bool):
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.bn(x))))


class DenseNet(nn.Module):
    """Small DenseNet-BC-like net: stem conv, three dense blocks with transitions, BN-ReLU-pool."""

    def __init__(self, in_shape, num_classes: int, growth: int, layers: int):
        super().__init__()
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_shape[0], c, 3, padding=1, bias=False)
        hw = min(in_shape[1:])
        stages = []
        for i in range(3):
            block = []
            for _ in range(layers):
                block.append(DenseLayer(c, growth))
                c += growth
            stages.append(nn.Sequential(*block))
            if i < 2:
                pool = hw >= 2
                stages.append(Transition(c, c // 2, pool))
                c //= 2
                hw = hw // 2 if pool else hw
        self.dense = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dense(self.conv1(x))  # B x C x H/4 x W/4
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)  # B x C x 1 x 1
        return self.linear(torch.flatten(out, 1))  # B x classes


@register_model("densenet")
def densenet(in_shape=(3, 32, 32), num_classes=10, growth=8, layers=4) -> nn.Module:
    """Small DenseNet (paper DenseNet-BC-100: growth 12, 16 layers per block; here 8 and 4)."""
    growth = check_positive_int(growth, "growth", "densenet")
    layers = check_positive_int(layers, "layers", "densenet")
    return _init(DenseNet(in_shape, num_classes, growth, layers))
