"""``trace`` -> :class:`ModelGraph`: sites, producers, weight layers and cut points of any model."""

from __future__ import annotations

import itertools
from functools import cached_property

import torch
from torch import fx, nn

from hwlab.errors import check, fail
from hwlab.graph._cuts import Cut, find_cuts, make_cut, mutates_input, saved_bytes_per_node, segment
from hwlab.graph._rewrite import copy_model, rewrite_graph
from hwlab.graph._sites import Site, find_sites, producers_of, weight_op
from hwlab.graph._trace import as_sample, propagate_shapes, symbolic_trace

__all__ = ["ModelGraph", "rewrite", "trace"]


class ModelGraph:
    """What hwlab knows about one traced model. Build it with :func:`trace`.

    ``module`` is the ``torch.fx.GraphModule`` over the model: it SHARES the model's submodules
    and parameters (faults injected into the model are seen by it and by every segment).
    """

    def __init__(self, model: nn.Module, module: fx.GraphModule, sample: torch.Tensor | None,
                 leaf_modules: tuple):
        self.model = model
        self.module = module
        self.sample = sample
        self.leaf_modules = leaf_modules

    def __repr__(self) -> str:
        return (f"<ModelGraph of {type(self.model).__name__}: {len(self.sites)} sites, "
                f"{len(self.weight_layers)} weight layers, {len(self.cuts)} cut points>")

    # -- activation sites and their producers -------------------------------------------------
    @cached_property
    def sites(self) -> list[Site]:
        """Every ReLU-like activation call site, in execution order."""
        return find_sites(self.module)

    def site(self, name: str) -> Site:
        """The site called ``name`` (an error lists the known names)."""
        for s in self.sites:
            if s.name == name:
                return s
        raise fail("site", "ModelGraph.site", f"one of {', '.join(s.name for s in self.sites)}",
                   name)

    @cached_property
    def producers(self) -> dict[str, list[str]]:
        """Site name -> the weight layers (module names) that feed it by data flow."""
        nodes = {n.name: n for n in self.module.graph.nodes}
        site_nodes = {s.node for s in self.sites}
        return {s.name: producers_of(self.module, nodes[s.node], site_nodes) for s in self.sites}

    # -- weight layers --------------------------------------------------------------------------
    @cached_property
    def weight_layers(self) -> list[str]:
        """Module names of the weight layers in execution order (first use), e.g. for heatmaps."""
        seen: dict[str, None] = {}
        for n in self.module.graph.nodes:
            layer = weight_op(self.module, n)
            if layer is not None:
                seen.setdefault(layer, None)
        return list(seen)

    def first_use(self, names) -> int | None:
        """Index of the first graph node that reads any of the modules / parameters ``names``.

        ``names``: module names (``"layer1.0.conv1"``, or a container such as ``"layer1"``) or
        parameter names (``"layer1.0.conv1.weight"``). None when the graph never reads them.
        """
        prefixes = []
        for name in names:
            name = str(name)
            prefixes.append(name)
            owner = name.rpartition(".")[0]
            if owner and isinstance(self._attr(name), (nn.Parameter, torch.Tensor)):
                prefixes.append(owner)
        first = None
        for i, n in enumerate(self.module.graph.nodes):
            if n.op in ("call_module", "get_attr"):
                t = str(n.target)
                if any(t == p or t.startswith(p + ".") or p.startswith(t + ".")
                       for p in prefixes):  # p inside a leaf module t: t's call reads it
                    first = i
                    break
        return first

    def _attr(self, name: str):
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj

    # -- cut points and segments ----------------------------------------------------------------
    @cached_property
    def cuts(self) -> list[Cut]:
        """Every cut point in graph order (see :mod:`hwlab.graph._cuts`)."""
        return [make_cut(n, i) for n, i in find_cuts(self.module)]

    def cut_before(self, names) -> Cut | None:
        """The latest cut point before the first node that reads any of ``names`` (or None)."""
        first = self.first_use(names)
        if first is None:
            return None
        before = [c for c in self.cuts if c.index < first]
        return before[-1] if before else None

    def segment(self, start: Cut | str | None, stop: Cut | str | None = None) -> fx.GraphModule:
        """GraphModule from the value at cut ``start`` (None: input) to ``stop`` (None: output)."""
        names = {c.node for c in self.cuts}
        ends = []
        for c in (start, stop):
            name = c.node if isinstance(c, Cut) else c
            check(name is None or name in names, "cut", "ModelGraph.segment",
                  "None or one of the model's cut points", name)
            ends.append(name)
        return segment(self.module, ends[0], ends[1])

    def split(self, cuts) -> list[fx.GraphModule]:
        """``len(cuts) + 1`` segments that, chained, compute the model (cuts in graph order)."""
        names = [c.node if isinstance(c, Cut) else c for c in cuts]
        index = {c.node: c.index for c in self.cuts}
        for name in names:
            check(name in index, "cuts", "ModelGraph.split", "cut points of the model", name)
        check(len(set(names)) == len(names) and names == sorted(names, key=index.get), "cuts",
              "ModelGraph.split", "distinct cut points in graph order", names)
        ends = [None, *names, None]
        return [segment(self.module, a, b) for a, b in itertools.pairwise(ends)]

    def with_saved_bytes(self) -> list[Cut]:
        """The cut points with the bytes saved for backward before/after each (needs a sample)."""
        check(self.sample is not None, "sample", "ModelGraph.with_saved_bytes",
              "a sample batch given to hwlab.graph.trace", None)
        cum = saved_bytes_per_node(self.module, self.sample)
        total = max(cum.values(), default=0)
        out = []
        for c in self.cuts:
            before = cum.get(c.node, 0)
            out.append(Cut(c.node, c.index, c.scope, c.shape, c.act_bytes, before,
                           total - before))
        return out

    @staticmethod
    def mutates_input(seg: fx.GraphModule) -> bool:
        """True when ``seg`` may write its input in place (clone a cached input first)."""
        return mutates_input(seg)


def trace(model: nn.Module, sample=None, leaf_modules=()) -> ModelGraph:
    """Trace ``model`` once with ``torch.fx`` and return its :class:`ModelGraph`.

    ``sample``: an input batch (or an input shape ``(C, H, W)`` for a seeded random batch of 2)
    used to record shapes and bytes at every node; it also checks that the model accepts that
    input (a wrong shape is a clear error naming it). ``leaf_modules``: qualified module names
    or classes to keep opaque (the fix for a submodule fx cannot trace). The model itself is not
    modified; the graph shares its parameters.
    """
    gm = symbolic_trace(model, leaf_modules, "hwlab.graph.trace")
    _sync_modes(gm, model)
    x = as_sample(sample, "hwlab.graph.trace")
    if x is not None:
        propagate_shapes(gm, x, "hwlab.graph.trace")
    return ModelGraph(model, gm, x, tuple(leaf_modules or ()))


def rewrite(model: nn.Module, replace: dict, leaf_modules=()) -> fx.GraphModule:
    """A NEW GraphModule with the named sites or layers replaced; ``model`` is left untouched.

    ``replace``: ``{site name or layer name: new module}`` (site names as in
    ``trace(model).sites``). Surviving parameters and buffers keep their qualified names. See
    :mod:`hwlab.graph._rewrite` for where each replacement goes.
    """
    check(isinstance(model, nn.Module), "model", "hwlab.graph.rewrite", "a torch.nn.Module",
          type(model).__name__)
    check(isinstance(replace, dict), "replace", "hwlab.graph.rewrite",
          "a dict {site or layer name: nn.Module}", type(replace).__name__)
    work = copy_model(model)
    gm = symbolic_trace(work, leaf_modules, "hwlab.graph.rewrite")
    _sync_modes(gm, work)
    return rewrite_graph(gm, find_sites(gm), replace, "hwlab.graph.rewrite")


def _sync_modes(gm: fx.GraphModule, model: nn.Module) -> None:
    """Give the containers fx created the train/eval mode of the model's module of that name.

    Leaf modules are the model's own objects (shared), so their mode is left as it is.
    """
    own = dict(model.named_modules())
    for name, sub in gm.named_modules():
        src = own.get(name, model)
        if sub is not src:
            sub.training = src.training
