"""Variant builders of the ``faultlab.mitigation`` study: each turns the zoo model into a
deployed, protected model and says what the protection cost (see ``faultlab._mitigation_study``).

A builder is ``(config, context) -> Built``; ``context`` holds the zoo model in float
(``"float"``), deployed (``"base"``, int8 or float32), its training time (``"zoo_seconds"``) and
the training images used for searches, profiles and hardening (``"select"``). Adding a row (e.g.
the systolic array's FAP, #18): a builder in :data:`BUILDERS` and its name in ``VARIANTS``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

__all__ = ["BUILDERS", "Built", "deploy", "load_split"]
# faultlab's and hwlab's parts are imported inside the builders (lazily): the study registry
# imports this module, through faultlab._mitigation_study, just to list the study.


@dataclass
class Built:
    """A deployed variant: its model, how faults reach it, and what it cost."""

    model: nn.Module
    fault: str = "bitflip"  # "bitflip" or "secded:<policy>" (ECC memory)
    plan: Any = None  # a faultlab._harden.Plan filtering the maps, or None
    memory_overhead: float = 0.0  # extra stored bits / weight bits
    seconds: float = 0.0  # training / search / selection time
    info: dict = dataclasses.field(default_factory=dict)


@lru_cache(maxsize=8)
def load_split(dataset: str, which: str, seed: int, n: int):
    """The ``which`` split of ``dataset`` (its first ``n`` images, stratified), cached."""
    from hwlab.data import load

    data = load(dataset, which, seed=seed)
    return data.subset(n) if n < len(data) else data


def deploy(c, model: nn.Module, scheme: str | None = None) -> nn.Module:
    from faultlab._quant import quantize_int8

    model = model.eval()
    return quantize_int8(model, scheme=scheme or c.scheme) if c.dtype == "int8" else model


def _train(c, task_of, net=None, step: float = 1.0) -> tuple[nn.Module, float]:
    """``net`` (default: a fresh ``c.model``, any model spec) trained ``train_epochs`` epochs with
    the recipe (the zoo's for a zoo model, hwlab's default :class:`~hwlab.zoo.Recipe` otherwise)
    at ``step`` times its learning rate; ``c.lr`` > 0 replaces the rate."""
    from hwlab.models import resolve
    from hwlab.train import fit
    from hwlab.zoo import recipe_for

    train = load_split(c.dataset, "train", c.seed, c.train_size or 10**9)
    if net is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            net = resolve(c.model, in_shape=train.in_shape, num_classes=train.num_classes)
    recipe = recipe_for(c.model, c.dataset)
    cfg = dataclasses.replace(recipe.train_config("cpu"), epochs=c.train_epochs, seed=c.seed,
                              lr=c.lr or recipe.lr * step)
    hist = fit(task_of(net), train, cfg)
    return net.eval(), hist.seconds


def _randbet(c, ctx, w_max):
    from faultlab._fat import FaultAwareTask
    from faultlab._faults import BitFlip

    p = c.train_rate or max(c.resolved_rates()) / 2
    model, sec = _train(c, lambda net: FaultAwareTask(
        net, BitFlip(rate=p), dtype=c.dtype, scheme=c.scheme, w_max=w_max, seed=c.seed))
    return Built(deploy(c, model), seconds=sec, info={"train_rate": p, "w_max": w_max})


def _clipping(c, ctx):
    from faultlab._clipping import ClippedTask

    model, sec = _train(c, lambda net: ClippedTask(net, c.w_max))
    return Built(deploy(c, model), seconds=sec, info={"w_max": c.w_max})


def _clipact(c, ctx, mode):
    from faultlab import clipact

    t0 = time.perf_counter()
    res = clipact.search_thresholds(ctx["base"], ctx["select"], mode=mode,
                                    rates=c.resolved_rates(), maps=c.search_maps,
                                    rounds=c.search_rounds,
                                    min_rounds=min(3, c.search_rounds), seed=c.seed,
                                    eval_size=min(500, len(ctx["select"])))
    model = clipact.clip(ctx["base"], res.thresholds, mode=mode).eval()
    return Built(model, memory_overhead=_threshold_overhead(ctx["base"], res.thresholds),
                 seconds=time.perf_counter() - t0, info={"thresholds": res.thresholds})


def _threshold_overhead(base, thresholds) -> float:
    from faultlab._words import WORDS, eligible_parameters

    bits = sum(t.numel() * WORDS[t.dtype][0] for _, t in eligible_parameters(base))
    return 32 * len(thresholds) / bits  # one float32 threshold per site


def _ranger(c, ctx):
    from faultlab import clipact

    t0 = time.perf_counter()
    maxima = clipact.profile(ctx["base"], ctx["select"])
    return Built(clipact.clip(ctx["base"], maxima, mode="cap").eval(),
                 memory_overhead=_threshold_overhead(ctx["base"], maxima),
                 seconds=time.perf_counter() - t0, info={"thresholds": maxima})


def _harden(c, ctx):
    from faultlab._harden import harden

    rates = sorted(c.resolved_rates())
    rate = c.harden_rate or rates[(len(rates) - 1) // 2]
    t0 = time.perf_counter()
    res = harden(ctx["base"], ctx["select"], rate, target=c.harden_target,
                 trials=c.harden_trials, table_trials=3, seed=c.seed)
    plan = res.plan if res.plan is not None else res.chain[-1]  # none met: the strongest
    pareto = res.pareto[["plan", "overhead", "accuracy"]].to_dict("records")
    return Built(ctx["base"], plan=plan, memory_overhead=plan.overhead,
                 seconds=time.perf_counter() - t0,
                 info={"harden_rate": rate, "plan": plan.label(), "met": res.plan is not None,
                       "selection_clean": res.clean_accuracy, "pareto": pareto})


def _proact(c, ctx):
    from faultlab.clipact import HyReLU, proact
    from faultlab.clipact._proact import WEIGHT_DECAYS

    t0 = time.perf_counter()
    model = proact(ctx["float"], ctx["select"], epochs=c.proact_epochs,
                   weight_decays=WEIGHT_DECAYS[:c.proact_decays], seed=c.seed)
    extra = sum(m.threshold.numel() for m in model.modules() if isinstance(m, HyReLU))
    bits = sum(p.numel() * 32 for n, p in ctx["float"].named_parameters()
               if not n.endswith("bias"))
    return Built(deploy(c, model), memory_overhead=32 * extra / bits,
                 seconds=time.perf_counter() - t0, info={"thresholds": int(extra)})


def _weight_side(c, ctx, how):
    from faultlab._weight_defences import saturate, scale_weights

    if how == "scaled":
        return Built(scale_weights(ctx["float"], c.scale), info={"c": c.scale})
    # fine-tuned, as the paper converts: from trained weights, at a tenth of the recipe's step
    model, sec = _train(c, lambda net: net, net=saturate(ctx["float"], c.saturation), step=0.1)
    return Built(model, seconds=sec, info={"fn": c.saturation})


BUILDERS = {
    "unprotected": lambda c, ctx: Built(ctx["base"], seconds=ctx["zoo_seconds"]),
    "rquant": lambda c, ctx: Built(deploy(c, ctx["float"], "asymmetric") if c.dtype == "int8"
                                   else ctx["base"], info={"scheme": "asymmetric"}),
    "clipact-zero": lambda c, ctx: _clipact(c, ctx, "zero"),
    "clipact-cap": lambda c, ctx: _clipact(c, ctx, "cap"),
    "ranger": _ranger,
    "clipping": _clipping,
    "randbet": lambda c, ctx: _randbet(c, ctx, None),
    "randbet-clipping": lambda c, ctx: _randbet(c, ctx, c.w_max),
    "secded": lambda c, ctx: Built(ctx["base"], fault=f"secded:{c.ecc_policy}",
                                   memory_overhead=8 / 64, info={"policy": c.ecc_policy}),
    "harden": _harden,
    "proact": _proact,
    "saturating": lambda c, ctx: _weight_side(c, ctx, "saturating"),
    "scaled": lambda c, ctx: _weight_side(c, ctx, "scaled"),
}
