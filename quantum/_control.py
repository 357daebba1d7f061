"""Parameter-matched classical controls: the classical layer a quantum layer must beat.

Freinberger & Moser (arXiv 2601.04732) find that hybrid models at best match classical models
with the same number of parameters. :func:`control` answers that question for our layers: it
replaces every quantum layer of a model by a classical layer with the same inputs, the same
outputs and the same number of trainable parameters (exactly, or a deficit of at most
``out_features + 1`` for the linear control), freshly initialised; the rest of the model is
copied, so a study trains both arms with one recipe and one seed.

* :class:`ControlConv2d` for :class:`QuantumConv2d` (``O*I*(4**q - 1) + O`` parameters): a
  classical convolution whose ``k x k`` kernel of each (out, in) pair is ``theta @ P`` with the
  pair's own ``4**q - 1`` trainable coordinates ``theta`` and one fixed matrix ``P`` with
  orthonormal columns (rows when ``4**q - 1 < k*k``). The quantum convolution IS a linear
  convolution with a constrained kernel (``Re(rho)[:k, :k] / C_in``, docs/quantum.md), so the
  matched control is the unconstrained linear convolution: for a 3x3 kernel (15 coordinates, 9
  entries) every kernel is reachable. Initialised as ``nn.Conv2d`` (kernel and bias
  U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
* :class:`ControlLinear` for :class:`QuantumLinear` (``R*(4**n - 1) + out`` parameters, more
  than ``nn.Linear`` has): the re-uploading layer is non-linear in its input, so its control is
  a one-hidden-layer tanh MLP ``W2 tanh(W1 x + b1) + b2`` with as many hidden units as the budget
  pays for; the remainder goes to one more hidden unit that sees only the first ``j`` inputs, so
  the count is exact whenever the remainder can pay that unit's ``out + 2`` minimum.
  Initialised as ``nn.Linear`` layers. ``linear="skip"`` adds a full linear map ``W0 x`` beside
  the MLP (paid from the same budget), so the control contains the plain ``nn.Linear`` the hybrid
  replaced: a stronger control where the MLP alone is a narrow bottleneck (800 -> 13 -> 10).
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_bool, check_choice, check_int
from quantum._common import qubits_for
from quantum._conv import QuantumConv2d
from quantum._linear import QuantumLinear

log = logging.getLogger(__name__)

__all__ = ["CONTROL_LINEAR", "ControlConv2d", "ControlLinear", "control", "control_layer",
           "parameter_counts"]


def _uniform(shape, bound: float) -> torch.Tensor:
    return torch.empty(shape).uniform_(-bound, bound)


class ControlConv2d(nn.Module):
    """A classical ``Conv2d`` with ``4**q - 1`` trainable coordinates per (out, in) kernel, the
    parameter count of ``QuantumConv2d(in_channels, out_channels, kernel_size, ...)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride=1,
                 padding=0, bias: bool = True):
        super().__init__()
        caller = "ControlConv2d"
        self.in_channels = check_int(in_channels, "in_channels", caller, 1)
        self.out_channels = check_int(out_channels, "out_channels", caller, 1)
        self.kernel_size = check_int(kernel_size, "kernel_size", caller, 1, 2 ** 5)
        check_bool(bias, "bias", caller)
        self.stride, self.padding = stride, padding
        k2, n_gen = self.kernel_size ** 2, 4 ** qubits_for(self.kernel_size) - 1
        gen = torch.Generator().manual_seed(0)  # P is fixed and the same for every layer
        q, _ = torch.linalg.qr(torch.randn(max(n_gen, k2), max(n_gen, k2), generator=gen))
        basis = q[:n_gen, :k2] if n_gen >= k2 else q[:k2, :n_gen].T  # G x k*k, orthonormal
        self.register_buffer("basis", basis.contiguous(), persistent=False)
        bound = 1 / math.sqrt(self.in_channels * k2)  # nn.Conv2d's default initialisation
        kernel = _uniform((out_channels, in_channels, k2), bound)  # O x I x k*k
        # theta in P's row space gives theta @ P = kernel exactly when P has orthonormal columns
        theta = kernel @ basis.T if n_gen >= k2 else _uniform((out_channels, in_channels,
                                                               n_gen), bound)
        self.theta = nn.Parameter(theta)  # O x I x G
        self.bias = nn.Parameter(_uniform((out_channels,), bound)) if bias else None

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"coordinates={self.theta.shape[-1]}")

    def kernel(self) -> torch.Tensor:
        """The convolution kernel ``theta @ P``: O x I x k x k."""
        k = self.kernel_size
        return (self.theta @ self.basis).reshape(self.out_channels, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check(x.dim() == 4 and x.shape[1] == self.in_channels, "x", "ControlConv2d",
              f"a B x {self.in_channels} x H x W tensor", tuple(x.shape))
        return F.conv2d(x, self.kernel().to(x.dtype), self.bias, self.stride, self.padding)


class ControlLinear(nn.Module):
    """``W2 tanh(W1 x + b1) + b2`` (in_features -> out_features) with ``n_params`` trainable
    parameters: ``m`` full hidden units plus, when the remainder pays for it, one hidden unit
    that reads only the first ``j`` inputs. ``skip=True`` adds ``W0 x`` (out x in, from the
    same budget)."""

    def __init__(self, in_features: int, out_features: int, n_params: int, bias: bool = True,
                 skip: bool = False):
        super().__init__()
        caller = "ControlLinear"
        self.in_features = check_int(in_features, "in_features", caller, 1)
        self.out_features = check_int(out_features, "out_features", caller, 1)
        check_bool(bias, "bias", caller)
        check_bool(skip, "skip", caller)
        fixed = (out_features if bias else 0) + (in_features * out_features if skip else 0)
        unit = in_features + 1 + out_features
        least = fixed + min(unit, out_features + 2)
        n_params = check_int(n_params, "n_params", caller, minimum=least)
        full, rest = divmod(n_params - fixed, unit)
        partial = rest - out_features - 1 if rest >= out_features + 2 else 0  # j inputs
        hidden = full + (partial > 0)
        self.partial = partial
        b1, b2 = 1 / math.sqrt(in_features), 1 / math.sqrt(hidden)
        self.w1 = nn.Parameter(_uniform((full, in_features), b1))  # m x in
        self.w1_partial = nn.Parameter(_uniform((partial,), b1)) if partial else None  # j
        self.b1 = nn.Parameter(_uniform((hidden,), b1))  # h
        self.w2 = nn.Parameter(_uniform((out_features, hidden), b2))  # out x h
        self.bias = nn.Parameter(_uniform((out_features,), b2)) if bias else None  # out
        self.skip = nn.Parameter(_uniform((out_features, in_features), b1)) if skip else None

    @property
    def hidden(self) -> int:
        return self.b1.numel()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"hidden={self.hidden} (last reads {self.partial or self.in_features} inputs), "
                f"skip={self.skip is not None}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check(isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[-1] == self.in_features,
              "x", "ControlLinear", f"a tensor ... x {self.in_features}",
              tuple(getattr(x, "shape", ())) or type(x).__name__)
        z = x @ self.w1.T  # ... x m
        if self.w1_partial is not None:
            z = torch.cat([z, x[..., : self.partial] @ self.w1_partial[:, None]], dim=-1)
        out = F.linear(torch.tanh(z + self.b1), self.w2, self.bias)  # ... x out
        return out if self.skip is None else out + x @ self.skip.T


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


CONTROL_LINEAR = ("mlp", "skip")  # ControlLinear without / with the linear map beside it


def control_layer(layer: nn.Module, linear: str = "mlp") -> nn.Module:
    """The parameter-matched classical control of one quantum layer (freshly initialised, on
    the layer's device, in its train/eval mode); ``linear`` picks the ``QuantumLinear``
    control: ``"mlp"`` or ``"skip"`` (MLP plus a linear map, see :class:`ControlLinear`; the
    MLP alone where the layer's parameters cannot pay for the map and one hidden unit)."""
    check_choice(linear, CONTROL_LINEAR, "linear", "control_layer")
    if isinstance(layer, QuantumConv2d):
        new = ControlConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                            layer.stride, layer.padding, bias=layer.bias is not None)
    elif isinstance(layer, QuantumLinear):
        n, cols, rows = _count(layer), layer.in_features, layer.out_features
        skip = linear == "skip" and n >= rows * cols + rows * (layer.bias is not None) + rows + 2
        if linear == "skip" and not skip:  # the budget does not pay for W0 and one hidden unit
            log.info("control_layer: %d parameters cannot hold a %dx%d linear map and a hidden "
                     "unit: the MLP control alone", n, rows, cols)
        new = ControlLinear(cols, rows, n, bias=layer.bias is not None, skip=skip)
    else:
        raise TypeError(f"layer of control_layer must be a QuantumConv2d or QuantumLinear, "
                        f"got {type(layer).__name__}")
    return new.to(layer.theta.device).train(layer.training)


def control(model: nn.Module, linear: str = "mlp") -> nn.Module:
    """A NEW model with every quantum layer of ``model`` replaced by its control (``linear``:
    as in :func:`control_layer`); every other parameter, buffer and the mode are copied
    (``model`` is untouched)."""
    check(isinstance(model, nn.Module), "model", "control", "an nn.Module", type(model).__name__)
    check_choice(linear, CONTROL_LINEAR, "linear", "control")
    new = copy.deepcopy(model)
    names = [n for n, m in new.named_modules() if isinstance(m, (QuantumConv2d, QuantumLinear))]
    for name in names:
        parent, _, leaf = name.rpartition(".")
        holder = new.get_submodule(parent) if parent else new
        setattr(holder, leaf, control_layer(new.get_submodule(name), linear))
    return new


def parameter_counts(hybrid: nn.Module, matched: nn.Module) -> dict[str, tuple[int, int]]:
    """``{layer name: (parameters of the quantum layer, of the control)}`` for every quantum
    layer of ``hybrid`` and the layer of the same name in ``matched`` (e.g. ``control(hybrid)``)."""
    check(isinstance(hybrid, nn.Module) and isinstance(matched, nn.Module), "hybrid, matched",
          "parameter_counts", "two nn.Modules", (type(hybrid).__name__, type(matched).__name__))
    return {n: (_count(m), _count(matched.get_submodule(n))) for n, m in hybrid.named_modules()
            if isinstance(m, (QuantumConv2d, QuantumLinear))}
