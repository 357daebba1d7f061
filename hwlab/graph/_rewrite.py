"""Rewrites: a NEW GraphModule with chosen activation sites or layers replaced by given modules.

The model is deep-copied and traced, so the input model is never touched. Every parameter and
buffer that survives keeps its qualified name (``layer1.0.conv1.weight`` stays
``layer1.0.conv1.weight``), so fault maps, state dicts and stored results stay valid.

Where a replacement goes:

* a **layer** (a leaf module's name, e.g. ``"layer1.0.conv1"``): the module at that path is
  swapped; every call of it uses the new module;
* a **site** called once through its own module (``"features.1"``): the module at that path is
  swapped, so the new module's parameters/buffers are named after it (``features.1.threshold``);
* a **site** of a module called several times, or a function / method call: the new module gets
  its own path next to the scope that made the call (``layer1.0.relu_call2`` for the second call
  of ``layer1.0.relu``; ``layer1.0.relu_fn1`` for the first ``F.relu`` in ``layer1.0``'s forward)
  and the call is redirected to it. The new module is called with the site's input tensor.

An in-place activation (``relu_``, ``inplace=True``) whose input is read again later is rewired:
later readers of the input read the replacement's output instead, so semantics are kept when
the replacement is out of place.
"""

from __future__ import annotations

import copy

from torch import fx, nn

from hwlab.errors import check, fail
from hwlab.graph._sites import gate_chain, site_input

__all__ = ["rewrite_graph", "site_path"]


def site_path(site, taken: set[str]) -> str:
    """The attribute path a replacement of ``site`` gets when it cannot take the module's own."""
    if site.module is not None:
        base = f"{site.module}_call{site.call}"
    else:
        base = f"{site.scope}.{site.op}_fn{site.call}" if site.scope else f"{site.op}_fn{site.call}"
    path, k = base, 1
    while path in taken:
        k += 1
        path = f"{base}_{k}"
    return path


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    owner = root.get_submodule(parent) if parent else root
    owner.add_module(leaf, new) if leaf not in owner._modules else setattr(owner, leaf, new)


def rewrite_graph(gm: fx.GraphModule, sites: list, replace: dict, caller: str) -> fx.GraphModule:
    """In place on ``gm`` (a private traced copy): apply ``replace`` {site or layer: module}."""
    by_site = {s.name: s for s in sites}
    nodes = {n.name: n for n in gm.graph.nodes}
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    taken = {name for name, _ in gm.named_modules()}
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for key, new in replace.items():
        check(isinstance(new, nn.Module), f"replace[{key!r}]", caller, "an nn.Module",
              type(new).__name__)
        if key in by_site:
            site = by_site[key]
            node = nodes[site.node]
            if site.module is not None and calls.get(site.module) == 1:
                _set_submodule(gm, site.module, new)
                if site.inplace and node.args and isinstance(node.args[0], fx.Node):
                    _rewire(node.args[0], node, order)  # the new module may be out of place
                continue
            path = site_path(site, taken)
            taken.add(path)
            _set_submodule(gm, path, new)
            x = site_input(node)
            with gm.graph.inserting_before(node):
                repl = gm.graph.call_module(path, (x,))
            repl.meta = dict(node.meta)
            order[repl] = order[node]  # a later in-place site compares against it
            node.replace_all_uses_with(repl)
            if site.inplace and isinstance(x, fx.Node):
                _rewire(x, repl, order, after=node)
            _erase_with_gate(gm.graph, node)
        elif key in calls:  # a leaf module that the graph calls
            _set_submodule(gm, key, new)
        else:
            known = sorted(by_site) + sorted(calls)
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise fail("replace", caller, f"keys naming activation sites or called layers "
                       f"({shown})", key)
    gm.graph.lint()
    gm.recompile()
    return gm


def _erase_with_gate(graph: fx.Graph, node: fx.Node) -> None:
    """Erase a replaced site's node and the gate only it read (the ``sigmoid(x)`` of a
    written-out swish, ``tanh(softplus(x))`` of a Mish)."""
    chain = gate_chain(node)
    graph.erase_node(node)
    for n in chain:  # outermost first: each one's reader is gone before it is looked at
        if not n.users:
            graph.erase_node(n)


def _rewire(x: fx.Node, repl: fx.Node, order: dict, after: fx.Node | None = None) -> None:
    """Readers of ``x`` after the in-place call ``after`` (default ``repl``) read ``repl``."""
    at = order[after if after is not None else repl]
    for user in list(x.users):
        if user is not repl and order.get(user, -1) > at:
            user.replace_input_with(x, repl)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy that keeps the train/eval mode of every submodule."""
    return copy.deepcopy(model)
