"""QCFS activation (quantization clip-floor-shift) and the small ANNs that use it.

QCFS (Bu et al., "Optimal ANN-SNN Conversion for High-accuracy and Ultra-low-latency Spiking
Neural Networks", ICLR 2022) replaces ReLU by

    h(x) = lambda * clip(floor(x * L / lambda + phi) / L, 0, 1),     phi = 1/2   (QCFS eq. 14)

with a learnable clip scale ``lambda`` per layer and ``L`` quantisation levels. The floor uses a
straight-through gradient, so ``lambda`` and the weights train with the one training loop. After
training, every QCFS becomes an integrate-and-fire neuron with threshold ``lambda`` whose membrane
starts at ``lambda * phi`` (see :func:`spiking.convert`). The Dynamic Confidence code trains its
ANN with LSQ-style 2-bit activations (3 levels); QCFS is the same clip-floor family.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_positive_int

__all__ = ["ARCHITECTURES", "QCFS", "qcfs_net", "with_qcfs"]


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x) forward, identity gradient (straight-through estimator)."""
    return x + (torch.floor(x) - x).detach()


class QCFS(nn.Module):
    """Quantised clipped activation with a learnable scale (the future SNN threshold).

    A leaf and an activation for :mod:`hwlab.graph` (``_hwlab_leaf``, ``_hwlab_activation``): the
    graph never traces into it, every call of it is an activation site.

    Args:
        levels: L, the number of quantisation steps between 0 and ``lambda`` (QCFS uses 4-8).
        scale: initial clip scale ``lambda``. QCFS initialises it at 8 for normalised CIFAR
            inputs; our inputs are in [0, 1], so we start at 2 (it is learned either way).
        shift: phi, 0.5 in QCFS (it makes the expected conversion error zero).
    """

    _hwlab_leaf = True
    _hwlab_activation = True

    def __init__(self, levels: int = 4, scale: float = 2.0, shift: float = 0.5):
        super().__init__()
        self.levels = check_positive_int(levels, "levels", "QCFS")
        check(isinstance(scale, (int, float)) and scale > 0, "scale", "QCFS", "a number > 0", scale)
        self.shift = float(shift)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.scale
        q = _floor_ste(x * self.levels / lam + self.shift) / self.levels  # QCFS eq. 14
        return lam * q.clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, scale={self.scale.item():.4g}, shift={self.shift}"


def _mlp(in_shape, num_classes, act) -> nn.Sequential:
    n_in = int(torch.tensor(in_shape).prod())
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, 256), act(),
        nn.Linear(256, 128), act(),
        nn.Linear(128, num_classes),
    )


def _lenet(in_shape, num_classes, act) -> nn.Sequential:
    c, h, w = in_shape
    feat = 16 * (h // 4) * (w // 4)  # two 2x2 average pools; convs keep the size (padding 2)
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), act(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), act(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(feat, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )


ARCHITECTURES = {"mlp": _mlp, "lenet": _lenet}


def qcfs_net(arch: str = "lenet", in_shape=(1, 28, 28), num_classes: int = 10, levels: int = 4,
             scale: float = 2.0) -> nn.Sequential:
    """A small ANN with QCFS activations, ready for :func:`spiking.convert`.

    ``"lenet"`` is LeNet-5 with average pooling (max pooling has no exact spiking counterpart, so
    QCFS and the Dynamic Confidence code use average pooling); ``"mlp"`` is 256-128 hidden units.
    """
    check(arch in ARCHITECTURES, "arch", "qcfs_net", f"one of {', '.join(ARCHITECTURES)}", arch)
    check(len(tuple(in_shape)) == 3, "in_shape", "qcfs_net", "a (C, H, W) tuple", in_shape)
    check_positive_int(num_classes, "num_classes", "qcfs_net", minimum=2)
    check_positive_int(levels, "levels", "qcfs_net")
    return ARCHITECTURES[arch](tuple(in_shape), num_classes, lambda: QCFS(levels, scale))


def with_qcfs(model: nn.Module, levels: int = 4, scale: float = 2.0,
              leaf_modules=()) -> nn.Module:
    """A NEW model with every ReLU call site replaced by its own QCFS and max pooling by average
    pooling of the same geometry; ``model`` is left untouched.

    Sites are found by :mod:`hwlab.graph` on any traceable model: ``nn.ReLU`` / ``nn.ReLU6`` /
    ``nn.Hardtanh(0, t)`` modules, ``F.relu`` / ``F.relu6`` / ``torch.relu`` / ``clamp(min=0)``
    calls, ``x.relu()`` / ``relu_()``, ``inplace=True``; a module called twice gives two QCFS
    (each call site learns its own scale, as QCFS has one scale per layer). Pools: ``nn.MaxPool2d``
    -> ``nn.AvgPool2d``, ``nn.AdaptiveMaxPool2d`` -> ``nn.AdaptiveAvgPool2d``, ``F.max_pool2d`` /
    ``torch.max_pool2d`` -> ``F.avg_pool2d``, ``F.adaptive_max_pool2d`` -> ``F.adaptive_avg_pool2d``
    (max pooling has no exact spiking counterpart; QCFS and Dynamic Confidence use average
    pooling). Other activations (GELU, SiLU, LeakyReLU...) are left as they are, and
    :func:`spiking.convert` names them.

    When every site is an activation module called once and every pool a module, the modules are
    swapped in a deep copy (the model keeps its class, e.g. ``nn.Sequential``); otherwise the
    result is an ``hwlab.graph.rewrite`` ``GraphModule``. Either way parameter names are kept
    (a QCFS that replaces module ``features.1`` has its scale at ``features.1.scale``). Weights
    are copied; the result needs (re)training. ``leaf_modules``: passed to ``hwlab.graph``.
    """
    import hwlab.graph as hg

    check(isinstance(model, nn.Module), "model", "with_qcfs", "an nn.Module", type(model).__name__)
    check_positive_int(levels, "levels", "with_qcfs")
    check(isinstance(scale, (int, float)) and scale > 0, "scale", "with_qcfs", "a number > 0", scale)
    g = hg.trace(model, leaf_modules=leaf_modules)
    gm = g.module
    replace: dict[str, nn.Module] = {}
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    for site in g.sites:
        if _relu_like(gm, site):
            replace[site.name] = QCFS(levels, scale)
    functional_pools = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
                replace[str(n.target)] = _avg_module(m, str(n.target))
        elif n.op == "call_function" and n.target in _MAX_POOL_FUNCTIONS:
            functional_pools.append(n.name)
    sites = {s.name: s for s in g.sites}
    nodes = {n.name: n for n in gm.graph.nodes}
    by_module = all(k not in sites or (sites[k].module is not None and calls[sites[k].module] == 1
                                       and not _input_read_again(nodes[sites[k].node], sites[k]))
                    for k in replace)
    if by_module and not functional_pools:
        new = copy.deepcopy(model)
        for key, module in replace.items():
            _set_submodule(new, sites[key].module if key in sites else key, module)
        return new
    new = hg.rewrite(model, replace, leaf_modules=leaf_modules)
    _avg_functions(new)
    return new


def _input_read_again(node, site) -> bool:
    """An in-place site whose input another node reads too (an out-of-place QCFS must be rewired
    there, which only the graph rewrite does)."""
    if not site.inplace or not node.args or not hasattr(node.args[0], "users"):
        return False
    return len(node.args[0].users) > 1


def _relu_like(gm, site) -> bool:
    """ReLU, ReLU6, clamp(min=0) and Hardtanh(0, t): activations QCFS stands in for."""
    if site.op in ("relu", "relu6", "clamp"):
        return True
    if site.op == "hardtanh" and site.module is not None:
        return float(gm.get_submodule(site.module).min_val) == 0.0
    return False


def _avg_module(m: nn.Module, name: str) -> nn.Module:
    if isinstance(m, nn.AdaptiveMaxPool2d):
        check(not m.return_indices, f"layer {name!r}", "with_qcfs",
              "a max pool without return_indices", "return_indices=True")
        return nn.AdaptiveAvgPool2d(m.output_size)
    check(m.dilation in (1, (1, 1)) and not m.return_indices, f"layer {name!r}", "with_qcfs",
          "a max pool with dilation 1 and without return_indices (average pooling has neither)",
          f"dilation={m.dilation}, return_indices={m.return_indices}")
    return nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)


def _max_pool_args(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False):
    return input, kernel_size, stride, padding, dilation, ceil_mode, return_indices


def _adaptive_args(input, output_size, return_indices=False):
    return input, output_size, return_indices


_MAX_POOL_FUNCTIONS = {F.max_pool2d: "max", torch.max_pool2d: "max",
                       F.adaptive_max_pool2d: "adaptive"}


def _avg_functions(gm) -> None:
    """In place on a rewritten GraphModule: functional max pools -> average pools."""
    changed = False
    for n in gm.graph.nodes:
        kind = _MAX_POOL_FUNCTIONS.get(n.target) if n.op == "call_function" else None
        if kind == "max":
            x, k, s, p, d, ceil, idx = _max_pool_args(*n.args, **n.kwargs)
            check(d in (1, (1, 1)) and not idx, f"call {n.name!r}", "with_qcfs",
                  "a max pool with dilation 1 and without return_indices", f"dilation={d}")
            n.target, n.args = F.avg_pool2d, (x, k, s if s not in (None, []) else None, p, ceil)
            n.kwargs = {}
            changed = True
        elif kind == "adaptive":
            x, size, idx = _adaptive_args(*n.args, **n.kwargs)
            check(not idx, f"call {n.name!r}", "with_qcfs", "a max pool without return_indices",
                  "return_indices=True")
            n.target, n.args, n.kwargs = F.adaptive_avg_pool2d, (x, size), {}
            changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
