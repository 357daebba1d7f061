"""Cut points of an fx graph and the segments between them.

A *cut point* is a node after which exactly one value is still needed: every path from the input
to the output passes through it, and it carries everything the rest of the network uses
(parameters aside, which any segment may read). In a ResNet they are the block outputs and the
points inside the stem and the head; inside a residual block there is none, because the
shortcut keeps the block's input alive until the add.

``segment(gm, start, stop)`` builds a new ``GraphModule`` (sharing the submodules and parameters of
``gm``) that maps the value at cut ``start`` (or the model input) to the value at ``stop`` (or the
model output). Chaining the segments of consecutive cuts computes the same function as ``gm``,
operation for operation, so the results are bit-identical to running ``gm``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

__all__ = ["Cut", "find_cuts", "mutates_input", "saved_bytes_per_node", "segment"]


@dataclass(frozen=True)
class Cut:
    """One cut point: the node whose value carries everything downstream."""

    node: str  # fx node name
    index: int  # position in the graph's node order
    scope: str  # innermost module that computed it ("" = the model's own forward)
    shape: tuple[int, ...] | None  # value shape on the sample batch (None without a sample)
    act_bytes: int | None  # bytes of that value on the sample batch
    saved_before: int | None = None  # bytes saved for backward by the ops up to the cut
    saved_after: int | None = None  # bytes saved for backward by the ops after it


def _meta(node: fx.Node):
    tm = node.meta.get("tensor_meta")
    if tm is None or not hasattr(tm, "shape"):
        return None, None
    numel = 1
    for s in tm.shape:
        numel *= int(s)
    return tuple(int(s) for s in tm.shape), numel * torch.empty((), dtype=tm.dtype).element_size()


def find_cuts(gm: fx.GraphModule) -> list[tuple[fx.Node, int]]:
    """(node, index) of every cut point, in graph order; the output's own value is excluded."""
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    out = next(n for n in nodes if n.op == "output")
    last_use = {}
    for n in nodes:
        if n.op in ("get_attr", "output"):
            continue
        uses = [index[u] for u in n.users]
        last_use[n] = max(uses) if uses else index[n]
    expire: dict[int, list[fx.Node]] = {}
    for n, last in last_use.items():
        expire.setdefault(last, []).append(n)
    live: set[fx.Node] = set()  # values computed so far that a later node still reads
    cuts = []
    for i, n in enumerate(nodes):
        if n.op == "output":
            break
        if n.op == "get_attr":
            continue  # parameters and buffers: any segment may read them
        if last_use[n] > i:
            live.add(n)
        for dead in expire.get(i, ()):
            if dead is not n:
                live.discard(dead)  # its last reader is n
        if live == {n} and n.op != "placeholder" and n not in out.all_input_nodes \
                and _single_tensor(n):
            cuts.append((n, i))
    return cuts


def _single_tensor(node: fx.Node) -> bool:
    """False when ``node``'s value may be a container: a tuple or list (a leaf module returning
    ``(a, b)``, an LSTM, ``split``, ``chunk``), which is never a cut point (segments and caches
    pass one tensor). Shape propagation tells for sure; without it, a reader that takes an item
    by an integer or a string key (``out[0]``, not a tensor slice ``x[:, :c]``) marks a
    container; a tensor read only that way merely loses a cut point (never a wrong result)."""
    tm = node.meta.get("tensor_meta")
    if tm is not None:
        return isinstance(tm, TensorMetadata)
    for u in node.users:
        if u.op == "call_function" and u.target is operator.getitem and len(u.args) > 1 \
                and isinstance(u.args[1], (int, str)):
            return False
    return True


def make_cut(node: fx.Node, index: int) -> Cut:
    from hwlab.graph._sites import node_scope

    shape, nbytes = _meta(node)
    return Cut(node.name, index, node_scope(node), shape, nbytes)


def segment(gm: fx.GraphModule, start: str | None, stop: str | None) -> fx.GraphModule:
    """A GraphModule from the value at node ``start`` (None: the input) to ``stop`` (None: output)."""
    nodes = list(gm.graph.nodes)
    by_name = {n.name: n for n in nodes}
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    begin = 0
    if start is not None:
        s = by_name[start]
        env[s] = g.placeholder("h")
        begin = nodes.index(s) + 1

    def lookup(n: fx.Node) -> fx.Node:
        if n not in env:  # only parameters / buffers may come from before the cut
            if n.op != "get_attr":
                raise KeyError(f"value {n.name!r} crosses cut {start!r}")
            env[n] = g.node_copy(n, lookup)
        return env[n]

    for n in nodes[:begin]:
        if n.op == "placeholder" and start is None:
            env[n] = g.node_copy(n, lookup)
    for n in nodes[begin:]:
        if n.op == "placeholder":
            if start is None:
                env[n] = g.node_copy(n, lookup)
            continue
        if n.op == "output":
            g.output(fx.map_arg(n.args[0], lookup))
            break
        env[n] = g.node_copy(n, lookup)
        if stop is not None and n.name == stop:
            g.output(env[n])
            break
    seg = fx.GraphModule(gm, g, f"{type(gm).__name__}Segment")
    seg.train(gm.training)
    return seg


def mutates_input(seg: fx.GraphModule) -> bool:
    """True when a segment may write its input in place (in-place ops anywhere in it).

    Conservative: any ``*_`` method, ``inplace=True`` call or in-place module counts, so a cached
    input is cloned before such a segment runs.
    """
    for n in seg.graph.nodes:
        if n.op == "call_method" and str(n.target).endswith("_"):
            return True
        if n.op == "call_function":
            name = getattr(n.target, "__name__", "")
            if name.endswith("_") and not name.startswith("_") or n.kwargs.get("inplace"):
                return True
            if n.args and isinstance(n.args[-1], bool) and n.args[-1] and "relu" in name:
                return True
        if n.op == "call_module" and getattr(seg.get_submodule(n.target), "inplace", False):
            return True
    return False


def saved_bytes_per_node(gm: fx.GraphModule, sample: torch.Tensor) -> dict[str, int]:
    """Cumulative bytes autograd saves for backward up to each node (sample batch, train mode).

    Each storage is counted once, parameters excluded; runs on a deep copy so BatchNorm
    statistics of ``gm`` never move.
    """
    import copy

    probe = copy.deepcopy(gm).train()
    params = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    seen: set[int] = set()
    total = [0]

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total[0] += st.nbytes()
        return t

    cumulative: dict[str, int] = {}

    class _Counting(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            cumulative[n.name] = total[0]
            return out

    device = next((p.device for p in probe.parameters()), torch.device("cpu"))
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _Counting(probe).run(sample.to(device))
    return cumulative
