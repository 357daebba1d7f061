"""``swap(model, level)``: replace classical layers by their quantum versions, one group at a time.

The paper's order (Wang et al. 2024, Sec. 4): level 1 replaces the convolutions, level 2 also the
fully connected layer. ``order="paper"`` groups the layers that way (all ``Conv2d`` in module
order, then all ``Linear``); ``order="layer"`` makes every layer its own group in module order,
a finer creep (level 1 = first conv only). Layers already quantum count as swapped members of
their group. The input model is never modified: the result is a deep copy.
"""

from __future__ import annotations

import copy

from torch import nn

from hwlab.errors import check, check_choice, fail
from quantum._common import DEFAULT_DEVICE, DEFAULT_DIFF, check_backend, check_int
from quantum._conv import QuantumConv2d
from quantum._linear import DEFAULT_REPS, QuantumLinear

__all__ = ["ORDERS", "classical_parameters", "max_level", "quantum_parameters", "swap",
           "swappable_layers"]

ORDERS = ("paper", "layer")
_CONV, _LINEAR = (nn.Conv2d, QuantumConv2d), (nn.Linear, QuantumLinear)


def swappable_layers(model: nn.Module, order: str = "paper") -> list[list[str]]:
    """Groups of module names, in swap order (``swap(model, k)`` replaces the first k groups)."""
    check(isinstance(model, nn.Module), "model", "swappable_layers", "an nn.Module",
          type(model).__name__)
    check_choice(order, ORDERS, "order", "swappable_layers")
    convs = [n for n, m in model.named_modules() if isinstance(m, _CONV)]
    linears = [n for n, m in model.named_modules() if isinstance(m, _LINEAR)]
    if order == "paper":
        return [g for g in (convs, linears) if g]
    return [[n] for n, m in model.named_modules() if isinstance(m, _CONV + _LINEAR)]


def max_level(model: nn.Module, order: str = "paper") -> int:
    """The highest level ``swap`` accepts for ``model`` (every swappable layer quantum)."""
    return len(swappable_layers(model, order))


def _quantum_conv(conv: nn.Conv2d, name: str, device: str, diff_method: str) -> QuantumConv2d:
    k = conv.kernel_size
    ok = (k[0] == k[1] and conv.groups == 1 and conv.dilation == (1, 1)
          and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple))
    if not ok:
        raise fail(f"layer {name!r}", "swap", "a Conv2d with a square kernel, groups=1, "
                   "dilation=1 and numeric zero padding",
                   f"kernel_size={k}, groups={conv.groups}, dilation={conv.dilation}, "
                   f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
    return QuantumConv2d(conv.in_channels, conv.out_channels, k[0], conv.stride, conv.padding,
                         bias=conv.bias is not None, device=device, diff_method=diff_method)


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def swap(model: nn.Module, level: int, order: str = "paper", reps: int = DEFAULT_REPS,
         n_qubits: int | None = None, device: str = DEFAULT_DEVICE,
         diff_method: str = DEFAULT_DIFF) -> nn.Module:
    """A NEW model with the classical layers of the first ``level`` groups made quantum.

    ``Conv2d`` -> :class:`QuantumConv2d` (same channels, kernel, stride, padding, bias),
    ``Linear`` -> :class:`QuantumLinear` (``reps`` repetitions, ``n_qubits`` or the fewest that
    fit). New quantum layers are freshly initialised (N(0, 1), as the official code) on the device
    of the layer they replace; every other parameter, buffer and the train/eval mode are copied.
    ``model`` is left untouched. Input and output shapes are unchanged.
    """
    check(isinstance(model, nn.Module), "model", "swap", "an nn.Module", type(model).__name__)
    check_choice(order, ORDERS, "order", "swap")
    groups = swappable_layers(model, order)
    level = check_int(level, "level", "swap", minimum=0, maximum=len(groups))
    check_int(reps, "reps", "swap")
    check(n_qubits is None or isinstance(n_qubits, int) and not isinstance(n_qubits, bool),
          "n_qubits", "swap", "None or an integer", n_qubits)
    check_backend(device, diff_method, "swap")
    new = copy.deepcopy(model)
    for name in (n for g in groups[:level] for n in g):
        old = new.get_submodule(name)
        if isinstance(old, (QuantumConv2d, QuantumLinear)):
            continue
        if isinstance(old, nn.Conv2d):
            layer = _quantum_conv(old, name, device, diff_method)
        else:
            layer = QuantumLinear(old.in_features, old.out_features, n_qubits=n_qubits, reps=reps,
                                  bias=old.bias is not None, device=device,
                                  diff_method=diff_method)
        layer.to(old.weight.device).train(old.training)
        _set(new, name, layer)
    return new


def quantum_parameters(model: nn.Module) -> list[str]:
    """Names of the quantum gate parameters (``theta``) of ``model``."""
    return [f"{n}.theta" for n, m in model.named_modules()
            if isinstance(m, (QuantumConv2d, QuantumLinear))]


def classical_parameters(model: nn.Module) -> list[str]:
    """Names of the weights of the classical swappable layers (``Conv2d`` / ``Linear``)."""
    return [f"{n}.weight" for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]
