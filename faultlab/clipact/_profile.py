"""``profile`` (per-layer maximum activation) and ``clip`` (apply given thresholds)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from faultlab._prefix import as_xy
from faultlab.clipact._modules import MODES, ClippedReLU, activation_sites, replace_activations
from hwlab.errors import check, check_choice, check_positive_int


def profile(model: nn.Module, data, batch_size: int = 500) -> dict[str, float]:
    """Maximum output of every unbounded activation module over ``data`` (a training subset).

    Returns ``{module name: max}`` in forward order, read with forward hooks on the activation
    modules (nothing else of the model runs differently); for an already clipped activation the
    maximum before clipping. The model runs in eval mode and is
    left in the mode it was in. This is Ranger's profiled upper bound and FT-ClipAct's search
    interval ``[0, max]``.
    """
    check(isinstance(model, nn.Module), "model", "profile", "a torch.nn.Module",
          type(model).__name__)
    batch_size = check_positive_int(batch_size, "batch_size", "profile")
    x, _ = as_xy(data, "profile")
    return _profile(model, x, batch_size)


@torch.no_grad()
def _profile(model: nn.Module, x: torch.Tensor, batch_size: int) -> dict[str, float]:
    sites = activation_sites(model)
    check(len(sites) > 0, "model", "profile", "a model with ReLU-like activation modules",
          type(model).__name__)
    maxima = {name: float("-inf") for name in sites}

    def hook_for(name):
        def hook(module, inputs, output):
            maxima[name] = max(maxima[name], float(output.detach().max()))
        return hook

    # A clipped site is profiled before its clipping (its base activation's output), so
    # re-profiling a partly protected model sees the range the activation would have unclipped.
    modules = {n: model.get_submodule(n) for n in sites}
    modules = {n: m.base if isinstance(m, ClippedReLU) else m for n, m in modules.items()}
    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        for lo in range(0, len(x), batch_size):
            model(x[lo: lo + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: max(v, 0.0) for n, v in maxima.items()}  # a ReLU's maximum is at least 0


def clip(model: nn.Module, thresholds: dict[str, float], mode: str = "zero") -> nn.Module:
    """A NEW model with the named activations replaced by :class:`ClippedReLU` at ``thresholds``.

    ``clip(model, profile(model, data), mode="cap")`` is Ranger (profiled bounds, capped). The
    input model is left untouched (deep copy); activations not named keep their original module.
    """
    check(isinstance(model, nn.Module), "model", "clip", "a torch.nn.Module",
          type(model).__name__)
    check_choice(mode, MODES, "mode", "clip")
    sites = set(activation_sites(model))
    check(isinstance(thresholds, dict), "thresholds", "clip", "a dict {activation name: float}",
          type(thresholds).__name__)
    for name, t in thresholds.items():
        check(name in sites, "thresholds", "clip",
              f"keys among the model's activations ({', '.join(sorted(sites))})", name)
        ok = isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t < float("inf")
        check(ok, f"thresholds[{name!r}]", "clip", "a finite number >= 0", t)
    return replace_activations(copy.deepcopy(model), thresholds, mode)


def thresholds(model: nn.Module) -> dict[str, float]:
    """The thresholds of every :class:`ClippedReLU` in ``model`` (``{module name: threshold}``)."""
    return {n: float(m.threshold) for n, m in model.named_modules() if isinstance(m, ClippedReLU)}
