"""Clipped activations, and the activation call sites of any model (read off ``hwlab.graph``).

FT-ClipAct (Hoang, Hanif, Shafique, DATE 2020) replaces every unbounded activation by a clipped
one with one threshold ``t`` per layer. Here "layer" is an activation CALL SITE (one per call, as
``hwlab.graph`` names them): a module called twice gets two thresholds, and functional
(``F.relu``, ``torch.relu``, ``torch.clamp(x, min=0)``), method (``x.relu()``, ``x.relu_()``) and
in-place calls are sites like modules.

* ``mode="zero"`` (the paper's choice, as in the ProAct authors' reliable-ReLU toolbox):
  ``y = relu(x) if x <= t else 0``. A value that only a fault can produce is squashed to 0.
  NaN inputs (a flipped exponent can make ``inf - inf``) also become 0, since ``NaN <= t`` is false.
* ``mode="cap"`` (Ranger, Chen et al. DSN 2021): ``y = clamp(relu(x), 0, t)``; NaN stays NaN,
  as with ``torch.clamp``.

Other unbounded activations (GELU, SiLU, ELU, LeakyReLU...) are wrapped: the base activation runs
first and its output is clipped the same way. Bounded ones (ReLU6, Hardtanh, ``clamp(0, 6)``)
are not sites of clipact.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import fx, nn

import hwlab.graph as hg
from hwlab.errors import check, check_choice, check_number, fail

MODES = ("zero", "cap")
UNBOUNDED = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.Mish, nn.Softplus,
             nn.Hardswish)
UNBOUNDED_OPS = ("relu", "leaky_relu", "gelu", "silu", "elu", "celu", "mish", "softplus",
                 "hardswish", "clamp")
_GATED = {"silu": nn.SiLU, "mish": nn.Mish}  # x * sigmoid(x), x * tanh(softplus(x)) written out
_INPLACE_LAST = (F.relu, F.leaky_relu, F.elu, F.celu)  # a trailing positional bool is `inplace`


class ClippedReLU(nn.Module):
    """``relu(x)`` clipped at ``threshold``: zeroed (``mode="zero"``) or capped (``"cap"``) above it.

    ``base`` is the activation to clip (default ``nn.ReLU()``); any module listed in
    ``faultlab.clipact._modules.UNBOUNDED`` works (it should be out of place). The threshold is a
    float buffer, so it moves with ``.to(device)`` and is saved in the ``state_dict``. ``site``
    records the call site it clips (its name in the unprotected model), so the sites of a
    protected model keep their names when it is traced again. The class attributes make
    ``hwlab.graph`` keep it opaque and find it as an activation site (re-tuning).
    """

    _hwlab_leaf = True  # hwlab.graph: a leaf, not traced through
    _hwlab_activation = True  # hwlab.graph: an activation site, not a weight layer

    def __init__(self, threshold: float, mode: str = "zero", base: nn.Module | None = None,
                 site: str | None = None):
        super().__init__()
        check_number(threshold, "threshold", "ClippedReLU", 0)
        check_choice(mode, MODES, "mode", "ClippedReLU")
        check(site is None or isinstance(site, str), "site", "ClippedReLU", "None or a site name",
              site)
        self.mode = mode
        self.base = base if base is not None else nn.ReLU()
        self.site = site
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @property
    def inplace(self) -> bool:
        """Whether the base activation writes its input (hwlab.graph's in-place checks read it)."""
        return bool(getattr(self.base, "inplace", False))

    def set_threshold(self, value: float) -> None:
        """Change the threshold in place (used by the search on its private working copy)."""
        self.threshold.fill_(float(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip_output(self.base(x))

    def clip_output(self, y: torch.Tensor) -> torch.Tensor:
        """The clipping alone, applied to the base activation's output ``y``."""
        t = self.threshold.to(y.dtype)
        if self.mode == "zero":
            return torch.where(y <= t, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return torch.clamp(y, max=t)

    def extra_repr(self) -> str:
        site = f", site={self.site!r}" if self.site is not None else ""
        return f"threshold={float(self.threshold):.6g}, mode={self.mode!r}{site}"


class FunctionalActivation(nn.Module):
    """A functional or method activation call (``F.relu``, ``x.clamp(min=0)``) as a module.

    ``fn(x, *args, **kwargs)``, always out of place (the base of a :class:`ClippedReLU` that
    replaces such a call site).
    """

    def __init__(self, fn, args: tuple = (), kwargs: dict | None = None):
        super().__init__()
        self.fn = fn
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *self.args, **self.kwargs)

    def extra_repr(self) -> str:
        parts = [getattr(self.fn, "__name__", repr(self.fn)), *map(repr, self.args),
                 *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return ", ".join(parts)


@contextmanager
def eval_mode(model: nn.Module):
    """Every submodule in eval mode inside the block; each one's own mode restored after it."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def trace(model: nn.Module, caller: str, leaf_modules=()) -> hg.ModelGraph:
    """``hwlab.graph.trace`` of ``model`` (in eval mode, so ``self.training`` is traced as False)."""
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
          type(model).__name__)
    with eval_mode(model):
        return hg.trace(model, leaf_modules=leaf_modules)


def _clippable(graph: hg.ModelGraph, site: hg.Site) -> bool:
    if site.module is not None:
        m = graph.module.get_submodule(site.module)
        return isinstance(m, (ClippedReLU, *UNBOUNDED))
    if site.op not in UNBOUNDED_OPS:
        return False
    if site.op == "clamp":  # clamp(x, min=0) is a ReLU; with a max it is already bounded
        node = _node(graph, site)
        hi = node.kwargs.get("max", node.args[2] if len(node.args) > 2 else None)
        return hi is None
    return True


def _node(graph: hg.ModelGraph, site: hg.Site) -> fx.Node:
    return next(n for n in graph.module.graph.nodes if n.name == site.node)


def _strip(name: str) -> str:
    base, at, k = name.rpartition("@")
    return base if at and k.isdigit() else name


def require_sites(graph: hg.ModelGraph, sites: dict, caller: str) -> None:
    """Refuse a model without clippable sites, saying whether it has activations at all."""
    if sites:
        return
    bounded = sorted({s.op for s in graph.sites})
    check(False, "model", caller, "a model with unbounded activation call sites (ReLU, GELU, "
          "SiLU / swish, Mish, ELU, ...; ReLU6, Hardtanh and clamp(0, t) are already bounded)",
          f"{type(graph.model).__name__} with only bounded sites ({', '.join(bounded)})"
          if bounded else f"{type(graph.model).__name__} without any activation call site "
          "hwlab.graph recognises")


def clip_sites(graph: hg.ModelGraph) -> dict[str, hg.Site]:
    """clipact's site name -> graph site, for every clippable site in execution order.

    The names are ``hwlab.graph``'s, except that a :class:`ClippedReLU` called once answers to
    the site it was made for (``site``), and the other calls are numbered as they were in the
    unprotected model: the sites of a protected model have the names of the original's.
    """
    calls: dict[str, int] = {}
    for s in graph.sites:
        if s.module is not None:
            calls[s.module] = calls.get(s.module, 0) + 1
    seen: dict[str, int] = {}
    named: list[tuple[str, hg.Site]] = []
    for s in graph.sites:
        m = graph.module.get_submodule(s.module) if s.module is not None else None
        label = m.site if isinstance(m, ClippedReLU) and calls[s.module] == 1 else None
        base = _strip(label) if label else _strip(s.name)
        seen[base] = seen.get(base, 0) + 1
        name = label or (base if seen[base] == 1 else f"{base}@{seen[base]}")
        named.append((name, s))
    if len({n for n, _ in named}) != len(named):  # labels that no longer fit: graph names
        named = [(s.name, s) for _, s in named]
    return {n: s for n, s in named if _clippable(graph, s)}


def base_activation(graph: hg.ModelGraph, site: hg.Site, caller: str) -> nn.Module:
    """A NEW out-of-place module computing the activation of ``site`` (the base to clip)."""
    if site.module is not None:
        m = graph.module.get_submodule(site.module)
        base = copy.deepcopy(m.base if isinstance(m, ClippedReLU) else m)
        if getattr(base, "inplace", False):
            base.inplace = False  # the rewrite rewires the readers of an in-place call's input
        return base
    node = _node(graph, site)
    if hg.gate_chain(node):  # a written-out swish / Mish: its module computes the same
        return _GATED[site.op]()
    args, kwargs = list(node.args[1:]), {k: v for k, v in node.kwargs.items() if k != "inplace"}
    if node.op == "call_method":
        fn = getattr(torch.Tensor, str(node.target).rstrip("_"))
    else:
        fn = torch.relu if node.target in (torch.relu_, F.relu_) else node.target
        if node.target in _INPLACE_LAST and args and isinstance(args[-1], bool):
            args = args[:-1]
    consts = all(not isinstance(a, fx.Node) for a in [*args, *kwargs.values()])
    check(consts, "model", caller, "activation calls whose extra arguments are constants",
          f"{site.name} ({node.format_node()})")
    return FunctionalActivation(fn, tuple(args), kwargs)


def activation_sites(model: nn.Module, leaf_modules=()) -> list[str]:
    """Names of the unbounded activation CALL sites of ``model``, in execution order.

    One name per call, as ``hwlab.graph`` names sites (``"layer1.0.relu"``, ``"layer1.0.relu@2"``
    for the second call of that module, ``"layer1.0.relu()"`` for an ``F.relu`` / ``x.relu()`` in
    ``layer1.0``'s forward). Already clipped activations (:class:`ClippedReLU`) count as sites
    too, under the names they had before clipping, so a protected model can be re-tuned.
    ``leaf_modules``: as in ``hwlab.graph.trace`` (the fix for an untraceable submodule).
    """
    return list(clip_sites(trace(model, "activation_sites", leaf_modules)))


def feeding_layers(model: nn.Module, leaf_modules=()) -> dict[str, list[str]]:
    """For every activation site, the weight layers (Conv/Linear...) that feed it by data flow.

    Read off the traced graph (``hwlab.graph``'s producers): walking back from the site's input
    through BatchNorm, pooling, reshapes, adds and concatenations to the weight layers, stopping
    at other activation sites and at the input. A residual add has producers on both branches
    (a projection shortcut's conv too; an identity shortcut ends at the previous activation).
    An empty list when no weight layer feeds the site.
    """
    graph = trace(model, "feeding_layers", leaf_modules)
    return {name: list(graph.producers[s.name]) for name, s in clip_sites(graph).items()}


def clip_graph(model: nn.Module, graph: hg.ModelGraph, thresholds: dict, mode: str,
               caller: str, leaf_modules=()) -> nn.Module:
    """A NEW module with the named sites clipped (validated keys and values; internal helper)."""
    sites = clip_sites(graph)
    check(isinstance(thresholds, dict), "thresholds", caller, "a dict {activation site: float}",
          type(thresholds).__name__)
    replace = {}
    for name, t in thresholds.items():
        if name not in sites:
            shown = ", ".join(sorted(sites)[:16]) + (", ..." if len(sites) > 16 else "")
            raise fail("thresholds", caller, f"keys among the model's activation sites ({shown})",
                       name)
        check_number(t, f"thresholds[{name!r}]", caller, 0)
        base = base_activation(graph, sites[name], caller)
        replace[sites[name].name] = ClippedReLU(float(t), mode=mode, base=base, site=name)
    modes = {n: m.training for n, m in model.named_modules()}
    with eval_mode(model):  # traced in eval mode: `self.training` in a forward is traced as False
        new = hg.rewrite(model, replace, leaf_modules=leaf_modules)
    for n, m in new.named_modules():  # each module back in its own mode; new ones as the model
        m.training = modes.get(n, model.training)
    return new
