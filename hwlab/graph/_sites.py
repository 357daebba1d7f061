"""Activation call sites and the weight layers that feed them, read off an fx graph.

A *site* is one call of a ReLU-like activation, whatever its form: a module (``nn.ReLU``,
``ReLU6``, ``LeakyReLU``, ``Hardtanh``, ``GELU``, ``SiLU``, ``ELU``... or an hwlab activation such
as a clipped ReLU or QCFS, whose class sets ``_hwlab_activation = True``), a function
(``F.relu``, ``F.relu6``, ``torch.relu``, ``torch.clamp(x, min=0)``...) or a tensor method
(``x.relu()``, ``x.relu_()``, ``x.clamp(min=0)``). A module called twice gives two sites. The
written-out forms of swish and Mish are sites too: ``x * torch.sigmoid(x)`` / ``x * x.sigmoid()``
(op ``"silu"``, EfficientNet's swish) and ``x * torch.tanh(F.softplus(x))`` (op ``"mish"``), in
either operand order; the site is the product, its input ``x`` (:func:`site_input`).

Names are stable and readable:

* a module call is named after the module (``"layer1.0.relu"``); its second call gets ``"@2"``
  (``"layer1.0.relu@2"``), the third ``"@3"``...;
* a function or method call is named after the innermost module whose ``forward`` made it and
  the operation, with ``()`` (``"layer1.0.relu()"``, ``"relu()"`` at the top level), numbered
  the same way when one ``forward`` makes several (``"layer1.0.relu()@2"``).

*Producers* of a site are the weight layers that feed it by data flow: walking back from the
site's input through normalisation, pooling, reshapes, adds, concatenations and other
weight-free operations, stopping at weight layers (recorded), at other activation sites and at
the graph inputs. A residual add has producers on both branches (a projection shortcut's conv
too; an identity shortcut ends at the previous block's activation, which is another site).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from hwlab.errors import is_number

__all__ = ["Site", "find_sites", "gate_chain", "is_weight_module", "node_scope", "producers_of",
           "site_input"]

_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.GELU, nn.SiLU, nn.ELU,
                nn.CELU, nn.SELU, nn.Mish, nn.Softplus, nn.PReLU, nn.RReLU, nn.Hardswish)
_ACT_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu",
    F.relu6: "relu6", F.leaky_relu: "leaky_relu", F.hardtanh: "hardtanh", F.gelu: "gelu",
    F.silu: "silu", F.elu: "elu", F.celu: "celu", F.selu: "selu", F.mish: "mish",
    F.softplus: "softplus", F.hardswish: "hardswish",
}
_ACT_METHODS = {"relu": "relu", "relu_": "relu"}
_CLAMPS_F = (torch.clamp, torch.clip, torch.clamp_min)
_CLAMPS_M = ("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_")
_INPLACE_F = (torch.relu_, F.relu_)
_MULS_F = (operator.mul, torch.mul)
_SIGMOIDS_F = (torch.sigmoid, F.sigmoid)
_TANHS_F = (torch.tanh, F.tanh)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class Site:
    """One activation call site."""

    name: str  # stable readable name (see the module docstring)
    node: str  # the fx node's name in the traced graph
    op: str  # "relu", "relu6", "gelu", "clamp", ... (module class name lowered for modules)
    module: str | None  # the activation module's qualified name (module sites), else None
    scope: str  # innermost module whose forward makes the call ("" = the model itself)
    inplace: bool  # the call writes its input in place (relu_, inplace=True)
    call: int  # 1 for the first call of this module / op in this scope, 2 for the second...


def node_scope(node: fx.Node) -> str:
    """Qualified name of the innermost module whose forward created ``node`` ("" = root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    key = next(reversed(stack))
    val = stack[key]
    return val[0] if isinstance(val, tuple) else str(key)


def _is_zero(v) -> bool:
    return is_number(v, 0, 0)


def _clamp_min0(node: fx.Node) -> bool:
    """``clamp(x, min=0)`` / ``clamp_min(x, 0)`` (a ReLU, or a ReLU6-like with a max)."""
    args, kw = node.args, node.kwargs
    lo = kw.get("min", args[1] if len(args) > 1 else None)
    return _is_zero(lo)


def _unary(node, functions, method: str) -> fx.Node | None:
    """The input of ``node`` when it is ``f(x)`` for ``f`` in ``functions`` or ``x.method()``."""
    if not isinstance(node, fx.Node) or len(node.args) != 1 or node.kwargs:
        return None
    if (node.op == "call_function" and node.target in functions) or \
            (node.op == "call_method" and node.target == method):
        return node.args[0] if isinstance(node.args[0], fx.Node) else None
    return None


def _gated(node: fx.Node) -> tuple[str, fx.Node] | None:
    """(op, x) when ``node`` is ``x * sigmoid(x)`` (swish) or ``x * tanh(softplus(x))`` (Mish)."""
    is_mul = (node.op == "call_function" and node.target in _MULS_F) or \
        (node.op == "call_method" and node.target == "mul")
    if not is_mul or len(node.args) != 2 or node.kwargs:
        return None
    for x, gate in (node.args, node.args[::-1]):
        if not isinstance(x, fx.Node):
            continue
        if _unary(gate, _SIGMOIDS_F, "sigmoid") is x:
            return "silu", x
        inner = _unary(gate, _TANHS_F, "tanh")
        if inner is not None and _unary(inner, (F.softplus,), "softplus") is x:
            return "mish", x
    return None


def gate_chain(node: fx.Node) -> list[fx.Node]:
    """The gate nodes of a written-out swish / Mish site, outermost first (else ``[]``)."""
    gated = _gated(node)
    if gated is None:
        return []
    gate = next(a for a in node.args if a is not gated[1])
    chain = []
    while gate is not gated[1]:
        chain.append(gate)
        gate = gate.args[0]
    return chain


def site_input(node: fx.Node) -> fx.Node:
    """The tensor an activation site's node transforms (``x`` of ``x * sigmoid(x)`` too)."""
    gated = _gated(node)
    if gated is not None:
        return gated[1]
    return node.args[0] if node.args else next(iter(node.kwargs.values()))


def activation_op(gm: fx.GraphModule, node: fx.Node) -> tuple[str, bool] | None:
    """(op name, in place) when ``node`` is a ReLU-like activation call, else None."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if getattr(type(m), "_hwlab_activation", False) or isinstance(m, _ACT_MODULES):
            return type(m).__name__.lower(), bool(getattr(m, "inplace", False))
    elif node.op == "call_function":
        if node.target in _ACT_FUNCTIONS:
            inplace = node.target in _INPLACE_F or bool(node.kwargs.get("inplace", False))
            if node.target in (F.relu, F.relu6, F.leaky_relu, F.hardtanh, F.elu, F.celu,
                               F.selu, F.silu, F.mish, F.hardswish) and len(node.args) > 1:
                last = node.args[-1]
                inplace = inplace or (isinstance(last, bool) and last)
            return _ACT_FUNCTIONS[node.target], inplace
        if node.target in _CLAMPS_F and _clamp_min0(node):
            return "clamp", False
    gated = _gated(node) if node.op in ("call_function", "call_method") else None
    if gated is not None:
        return gated[0], False
    if node.op == "call_method":
        if node.target in _ACT_METHODS:
            return _ACT_METHODS[node.target], node.target.endswith("_")
        if node.target in _CLAMPS_M and _clamp_min0(node):
            return "clamp", node.target.endswith("_")
    return None


def find_sites(gm: fx.GraphModule) -> list[Site]:
    """Every activation call site of ``gm`` in execution order."""
    sites, seen = [], {}
    gates = {g for node in gm.graph.nodes for g in gate_chain(node)}  # Mish's inner softplus
    for node in gm.graph.nodes:
        found = None if node in gates else activation_op(gm, node)
        if found is None:
            continue
        op, inplace = found
        if node.op == "call_module":
            base, module, scope = str(node.target), str(node.target), node_scope(node)
            scope = scope if scope != base else base.rpartition(".")[0]
        else:
            module, scope = None, node_scope(node)
            base = f"{scope}.{op}()" if scope else f"{op}()"
        seen[base] = seen.get(base, 0) + 1
        k = seen[base]
        name = base if k == 1 else f"{base}@{k}"
        sites.append(Site(name, node.name, op, module, scope, inplace, k))
    return sites


def is_weight_module(m: nn.Module) -> bool:
    """A layer whose own weights transform the data (Conv, Linear, int8 layers...), not a norm
    or a learnable activation of hwlab's (QCFS scale, clipping threshold)."""
    if isinstance(m, _NORMS) or getattr(type(m), "_hwlab_activation", False):
        return False
    return any(True for _ in m.parameters()) or isinstance(getattr(m, "weight", None),
                                                            torch.Tensor)


def _param_owner(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """For a get_attr of a parameter: the owning module's name, or the parameter's own name for
    a parameter of the model itself (a ViT's ``cls_token``; never ``""``, the whole model)."""
    if node.op != "get_attr":
        return None
    owner, _, attr = str(node.target).rpartition(".")
    try:
        mod = gm.get_submodule(owner) if owner else gm
    except AttributeError:
        return None
    if not isinstance(getattr(mod, attr, None), nn.Parameter):
        return None
    return owner or attr


def weight_op(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The weight layer a node applies: a call of a weight module, or a function of a parameter.

    ``F.conv2d(x, self.weight)`` in a custom layer counts as that layer (the parameter's owner).
    """
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return str(node.target) if is_weight_module(m) else None
    if node.op in ("call_function", "call_method"):
        for a in node.all_input_nodes:
            owner = _param_owner(gm, a)
            if owner is not None:
                return owner
    return None


def producers_of(gm: fx.GraphModule, node: fx.Node, site_nodes: set[str]) -> list[str]:
    """Weight layers feeding ``node``'s input, in graph order (see the module docstring)."""
    found: dict[str, int] = {}
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    stack = [a for a in node.all_input_nodes if a.op != "get_attr"]
    seen: set[fx.Node] = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        layer = weight_op(gm, n)
        if layer is not None:
            found[layer] = min(found.get(layer, order[n]), order[n])
            continue
        if n.name in site_nodes or n.op == "placeholder":
            continue
        if n.op == "call_function" and n.target is operator.getitem and n.args and \
                isinstance(n.args[0], fx.Node) and n.args[0].name in site_nodes:
            continue
        stack.extend(a for a in n.all_input_nodes if a.op != "get_attr")
    return sorted(found, key=found.get)
