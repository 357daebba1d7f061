"""``profile`` (maximum per activation call site), ``clip`` (apply thresholds), ``thresholds``."""

from __future__ import annotations

import torch
from torch import fx, nn

from faultlab.clipact._modules import (
    MODES,
    ClippedReLU,
    clip_graph,
    clip_sites,
    eval_mode,
    require_sites,
    trace,
)
from hwlab.data import iter_batches
from hwlab.errors import check_choice, check_positive_int


def profile(model: nn.Module, data, batch_size: int = 500, leaf_modules=()) -> dict[str, float]:
    """Maximum output of every unbounded activation CALL site over ``data`` (a training subset).

    Returns ``{site name: max}`` in execution order (names as in :func:`activation_sites`): a
    module called twice has two entries, functional / method / in-place calls have their own.
    The values are read at the site itself while the traced graph runs (an ``fx.Interpreter``;
    the model computes exactly what its forward computes), so a reused module is not merged.
    For an already clipped site, the maximum before clipping. ``data``: a Split, an ``(x, y)``
    pair, a DataLoader or an iterable of ``(x, y)`` batches (streamed; labels unused). The model
    runs in eval mode and every submodule is left in the mode it was in. This is Ranger's
    profiled upper bound and FT-ClipAct's search interval ``[0, max]``.
    """
    batch_size = check_positive_int(batch_size, "batch_size", "profile")
    graph = trace(model, "profile", leaf_modules)
    sites = clip_sites(graph)
    require_sites(graph, sites, "profile")
    return profile_graph(graph, sites, iter_batches(data, batch_size, "profile"))


class _SiteMax(fx.Interpreter):
    """Runs the graph and keeps the running maximum of each site's output (pre-clip if clipped)."""

    def __init__(self, gm: fx.GraphModule, keys: dict[str, str]):
        super().__init__(gm)
        self.keys = keys  # fx node name -> site name
        self.maxima: dict[str, torch.Tensor] = {}

    def _record(self, key: str, y: torch.Tensor) -> None:
        m = y.detach().amax().float() if y.numel() else torch.tensor(float("-inf"))
        prev = self.maxima.get(key)
        self.maxima[key] = m if prev is None else torch.maximum(prev, m.to(prev.device))

    def run_node(self, n: fx.Node):
        key = self.keys.get(n.name)
        if key is None:
            return super().run_node(n)
        if n.op == "call_module":
            m = self.module.get_submodule(n.target)
            if isinstance(m, ClippedReLU):  # the range it would have unclipped
                args, _ = self.fetch_args_kwargs_from_env(n)
                y = m.base(args[0])
                self._record(key, y)
                return m.clip_output(y)
        out = super().run_node(n)
        self._record(key, out)  # right after the call: an in-place one is read before reuse
        return out


@torch.no_grad()
def profile_graph(graph, sites: dict, batches) -> dict[str, float]:
    """Per-site maxima of the traced model over the ``(x, y)`` batches (internal helper)."""
    model = graph.model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    runner = _SiteMax(graph.module, {s.node: name for name, s in sites.items()})
    with eval_mode(model):
        for x, _ in batches:
            runner.run(x.to(device))
    out = {}
    for name in sites:  # a ReLU's maximum is at least 0 (a site never reached: 0)
        v = runner.maxima.get(name)
        out[name] = max(float(v), 0.0) if v is not None else 0.0
    return out


def clip(model: nn.Module, thresholds: dict[str, float], mode: str = "zero",
         leaf_modules=()) -> nn.Module:
    """A NEW model with the named activation sites clipped (:class:`ClippedReLU`) at ``thresholds``.

    ``clip(model, profile(model, data), mode="cap")`` is Ranger (profiled bounds, capped). Keys
    are site names (:func:`activation_sites`); sites not named keep their original activation.
    The result is a ``torch.fx.GraphModule`` (``hwlab.graph.rewrite``) with every parameter and
    buffer of the model under its original name, so a FaultMap drawn on the model replays on it
    and its state dict loads; each new threshold is a buffer ``<path>.threshold``. The input
    model is left untouched.
    """
    check_choice(mode, MODES, "mode", "clip")
    graph = trace(model, "clip", leaf_modules)
    return clip_graph(model, graph, thresholds, mode, "clip", leaf_modules)


def thresholds(model: nn.Module, leaf_modules=()) -> dict[str, float]:
    """``{site name: threshold}`` of every clipped activation site of ``model``, execution order.

    Names are those of the unprotected model's sites (a ClippedReLU remembers its site), so
    ``thresholds(protect(model, ...)) == search_thresholds(model, ...).thresholds``.
    """
    graph = trace(model, "thresholds", leaf_modules)
    out = {}
    for name, s in clip_sites(graph).items():
        m = graph.module.get_submodule(s.module) if s.module is not None else None
        if isinstance(m, ClippedReLU):
            out[name] = float(m.threshold)
    return out
