"""ANN-to-SNN conversion of any traceable QCFS network (residual adds, concatenation, pooling).

The QCFS ANN is traced once with :mod:`hwlab.graph`; every QCFS call site is rewritten
(``hwlab.graph.rewrite``, parameter names kept) into its own ``snntorch.Leaky`` neuron, and the
graph is then edited so that each neuron reads its membrane from an extra graph input and the
graph returns ``(output, (membrane_0, ..., membrane_{K-1}))``. One call of that graph is one time
step; the membranes are carried explicitly by :meth:`GraphSpikingNet.step`, so ``record``, the
stopping rules and ``run_live`` (which index-selects the membranes of the samples still running)
work on it as on a sequential :class:`~spiking.SpikingNet`.

Only operations that are linear at each time step may remain besides the neurons (a residual add
of two spike trains, a concatenation, average pooling, BatchNorm in eval mode, a reshape): for
them the time average of the SNN's values follows the ANN's values, which is what makes the
conversion exact in the limit (Bu et al. 2022, Theorem 2, applied to each neuron's input).
"""

from __future__ import annotations

import copy
import operator

import snntorch as snn
import torch
import torch.nn.functional as F
from torch import fx, nn

from hwlab.errors import fail

from ._qcfs import QCFS
from ._snn import _PASS_THROUGH, SpikingNet, _neuron, _shift

__all__ = ["GraphSpikingNet", "convert_graph"]

# call_function targets that are linear (or shape-only) at every time step
_LINEAR_FUNCTIONS = {
    operator.add, operator.sub, operator.neg, operator.getitem, torch.add, torch.sub, torch.cat,
    torch.concat, torch.stack, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
    torch.transpose, torch.permute, torch.chunk, torch.split, torch.mean, torch.sum, F.avg_pool1d,
    F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.linear, F.conv1d, F.conv2d,
    F.batch_norm, F.dropout, F.pad, getattr,
}
_SCALING_FUNCTIONS = {operator.mul, operator.truediv, torch.mul}  # allowed by a constant only
_LINEAR_METHODS = {
    "view", "reshape", "flatten", "size", "dim", "mean", "contiguous", "squeeze", "unsqueeze",
    "permute", "transpose", "add", "add_", "sub", "chunk", "split", "expand", "expand_as",
    "view_as", "reshape_as", "clone", "to", "type_as", "float", "sum", "neg", "sub_",
}
_SCALING_METHODS = {"mul", "mul_", "div", "div_"}


class GraphSpikingNet(SpikingNet):
    """A :class:`~spiking.SpikingNet` whose step is one run of a traced graph.

    ``body(x_t, *membranes) -> (output, membranes)``; ``neuron_paths`` are the module paths of
    the ``snntorch.Leaky`` neurons in execution order (``neurons`` returns those modules).
    ``layers`` is empty: the graph, not a list, gives the order.
    """

    def __init__(self, body: fx.GraphModule, neuron_paths, encoding: str = "direct",
                 mem_init: float = 0.0):
        super().__init__([], encoding=encoding, mem_init=mem_init)
        self.body = body
        self.neuron_paths = tuple(neuron_paths)

    @property
    def neurons(self) -> list[snn.Leaky]:
        return [self.body.get_submodule(p) for p in self.neuron_paths]

    def initial_state(self) -> list[torch.Tensor | None]:
        return [None] * len(self.neuron_paths)

    def step(self, x_t: torch.Tensor, state: list) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out, mems = self.body(x_t, *state)  # IF per neuron: U += I; S = U > theta; U -= S theta
        return out, list(mems)


def _initial_membrane(h: torch.Tensor, mem, frac: float, threshold: torch.Tensor):
    """``mem``, or U[0] = frac * theta when it is None (the first step)."""
    if mem is None:
        return torch.full_like(h, frac) * threshold
    return mem


def _describe(n: fx.Node) -> str:
    """The operation and the module whose forward made it (the model's own for the root)."""
    from hwlab.graph._sites import node_scope

    what = getattr(n.target, "__name__", str(n.target))
    scope = node_scope(n)
    return f"{what} in {scope!r}" if scope else f"{what} in the model itself"


def _shape_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose values are sizes, not tensors: ``x.size()``, ``x.dim()``, ``x.shape`` and
    any arithmetic or indexing on them only (``C // 2`` of a channel shuffle). Integer
    arithmetic on sizes is not a neural operation: it is the same at every time step."""
    shapes: set[fx.Node] = set()
    for n in gm.graph.nodes:
        size_call = n.op == "call_method" and n.target in ("size", "dim")
        shape_attr = (n.op == "call_function" and n.target is getattr and len(n.args) > 1
                      and n.args[1] in ("shape", "ndim"))
        on_sizes = n.op in ("call_function", "call_method") and bool(n.all_input_nodes) and all(
            a in shapes for a in n.all_input_nodes)
        if size_call or shape_attr or on_sizes:
            shapes.add(n)
    return shapes


def _is_const(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_linear(gm: fx.GraphModule, sites) -> None:
    """Every node is a QCFS site or linear at each step; else an error naming the first other."""
    non_qcfs = [s for s in sites if s.op != "qcfs"]
    shapes = _shape_nodes(gm)
    for n in gm.graph.nodes:
        if n in shapes:
            continue
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            if not isinstance(m, (QCFS, *_PASS_THROUGH)):
                allowed = "QCFS, " + ", ".join(t.__name__ for t in _PASS_THROUGH)
                raise fail("layers", "convert", f"one of {allowed}",
                           f"{type(m).__name__} at module {n.target}")
        elif n.op == "call_function":
            ok = n.target in _LINEAR_FUNCTIONS or (
                n.target in _SCALING_FUNCTIONS and any(_is_const(a) for a in n.args))
            if not ok:
                site = next((s.name for s in non_qcfs if s.node == n.name), None)
                raise _nonlinear(site or _describe(n))
        elif n.op == "call_method":
            ok = n.target in _LINEAR_METHODS or (
                n.target in _SCALING_METHODS and _is_const(n.args[1] if len(n.args) > 1 else None))
            if not ok:
                site = next((s.name for s in non_qcfs if s.node == n.name), None)
                raise _nonlinear(site or _describe(n))


def _nonlinear(what: str):
    return fail("operations", "convert", "QCFS activations (use spiking.with_qcfs first) or "
                "operations linear at each time step (adds, concatenation, average pooling, "
                "reshapes, scaling by a constant)", what)


def convert_graph(ann: nn.Module, encoding: str, leaf_modules=()) -> GraphSpikingNet:
    """The graph path of :func:`spiking.convert` (see the module docstring)."""
    import hwlab.graph as hg

    work = copy.deepcopy(ann).eval()  # BatchNorm in eval mode: affine at each step
    g = hg.trace(work, leaf_modules=leaf_modules)
    _check_linear(g.module, g.sites)
    qsites = [s for s in g.sites if s.op == "qcfs"]
    modules = [_site_module(g.module, s) for s in qsites]
    shift = _shift(modules)
    with torch.no_grad():
        neurons = {s.name: _neuron(m) for s, m in zip(qsites, modules)}
    body = hg.rewrite(work, neurons, leaf_modules=leaf_modules)
    paths = _thread_membranes(body, shift)
    return GraphSpikingNet(body, paths, encoding=encoding, mem_init=shift).eval()


def _site_module(gm: fx.GraphModule, site) -> QCFS:
    node = next(n for n in gm.graph.nodes if n.name == site.node)
    return gm.get_submodule(node.target)


def _thread_membranes(gm: fx.GraphModule, mem_init: float) -> list[str]:
    """Give every Leaky call an explicit membrane input and output (in place on ``gm``)."""
    graph = gm.graph
    calls = [n for n in graph.nodes if n.op == "call_module"
             and isinstance(gm.get_submodule(n.target), snn.Leaky)]
    last = [n for n in graph.nodes if n.op == "placeholder"][-1]
    mems_in = []
    for k in range(len(calls)):
        with graph.inserting_after(last):
            last = graph.placeholder(f"mem{k}", default_value=None)
        mems_in.append(last)
    mems_out = []
    for n, mem in zip(calls, mems_in):
        h = n.args[0]
        with graph.inserting_before(n):
            theta = graph.get_attr(f"{n.target}.threshold")
            u0 = graph.call_function(_initial_membrane, (h, mem, float(mem_init), theta))
        n.args = (h, u0)
        with graph.inserting_after(n):
            spk = graph.call_function(operator.getitem, (n, 0))
        with graph.inserting_after(spk):
            new_mem = graph.call_function(operator.getitem, (n, 1))
        keep = (spk, new_mem)
        n.replace_all_uses_with(spk, delete_user_cb=lambda u, keep=keep: u not in keep)
        mems_out.append(new_mem)
    out = next(n for n in graph.nodes if n.op == "output")
    out.args = ((out.args[0], tuple(mems_out)),)
    graph.lint()
    gm.recompile()
    return [str(n.target) for n in calls]
