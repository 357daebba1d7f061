"""``swap(model, level)``: replace classical layers by their quantum versions, one group at a time.

The paper's order (Wang et al. 2024, Sec. 4): level 1 replaces the convolutions, level 2 also the
fully connected layer. ``order="paper"`` groups the layers that way (all ``Conv2d`` in module
order, then all ``Linear``); ``order="layer"`` makes every layer its own group in module order,
a finer creep (level 1 = first conv only). Layers already quantum count as swapped members of
their group. ``layers=[names or glob patterns]`` instead replaces exactly the named layers (module
names as in ``named_modules()``, e.g. ``"layer1.0.conv1"`` or ``"layer4.*.conv?"``), on any model:
the layer is replaced where it is registered, so every call of it in ``forward`` uses the quantum
layer. The input model is never modified: the result is a deep copy.
"""

from __future__ import annotations

import copy
import fnmatch

from torch import nn

from hwlab.errors import check, check_choice, check_int, fail, is_int
from quantum._common import DEFAULT_DEVICE, DEFAULT_DIFF, check_backend
from quantum._conv import QuantumConv2d
from quantum._linear import DEFAULT_REPS, QuantumLinear

__all__ = ["ORDERS", "classical_parameters", "match_layers", "max_level", "quantum_parameters",
           "swap", "swappable_layers"]

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


def match_layers(model: nn.Module, layers, caller: str = "swap") -> list[str]:
    """The swappable layers (module order) named by ``layers``: names or glob patterns.

    Every pattern must match at least one swappable layer (``Conv2d`` / ``Linear`` or their
    quantum versions); an unmatched one is an error listing the swappable layers.
    """
    if isinstance(layers, str):
        layers = [layers]
    ok = isinstance(layers, (list, tuple)) and len(layers) > 0 and all(
        isinstance(p, str) and p for p in layers)
    check(ok, "layers", caller, "a non-empty list of layer names or glob patterns", layers)
    names = [n for n, m in model.named_modules() if isinstance(m, _CONV + _LINEAR)]
    chosen: set[str] = set()
    for pattern in layers:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hit:
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise fail("layers", caller, f"names or glob patterns of swappable layers ({shown})",
                       pattern)
        chosen.update(hit)
    return [n for n in names if n in chosen]


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


def swap(model: nn.Module, level: int | None = None, order: str = "paper",
         reps: int = DEFAULT_REPS, n_qubits: int | None = None, device: str = DEFAULT_DEVICE,
         diff_method: str = DEFAULT_DIFF, layers=None) -> nn.Module:
    """A NEW model with the classical layers of the first ``level`` groups made quantum, or with
    exactly the ``layers`` named (names or glob patterns; give one of ``level`` and ``layers``).

    ``Conv2d`` -> :class:`QuantumConv2d` (same channels, kernel, stride, padding, bias),
    ``Linear`` -> :class:`QuantumLinear` (``reps`` repetitions, ``n_qubits`` or the fewest that
    fit). New quantum layers are freshly initialised (N(0, 1), as the official code) on the device
    of the layer they replace; every other parameter, buffer and the train/eval mode are copied.
    ``model`` is left untouched. Input and output shapes are unchanged.
    """
    check(isinstance(model, nn.Module), "model", "swap", "an nn.Module", type(model).__name__)
    check((level is None) != (layers is None), "level and layers", "swap",
          "exactly one of level or layers", {"level": level, "layers": layers})
    check_choice(order, ORDERS, "order", "swap")
    if layers is None:
        groups = swappable_layers(model, order)
        level = check_int(level, "level", "swap", minimum=0, maximum=len(groups))
        names = [n for g in groups[:level] for n in g]
    else:
        names = match_layers(model, layers, "swap")
    check_int(reps, "reps", "swap", 1)
    check(n_qubits is None or is_int(n_qubits), "n_qubits", "swap", "None or an integer", n_qubits)
    check_backend(device, diff_method, "swap")
    new = copy.deepcopy(model)
    for name in names:
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
