"""Where faults land during training: :class:`TrainFault` and the stored tensors it hits.

A training step holds more state than the trained weights: the gradients (written by backward,
read by the update), the optimizer state (Adam's first and second moments and its step count,
SGD's momentum), and the forward activations (transient, read again by backward). Each is a
*target*; the faults in it are drawn and applied with faultlab's weight machinery
(:func:`faultlab.sample_faults`, the Numba injector), so every fault model (``BitFlip``,
``StuckAt``, ECC, bursts, ...) and exact sites (a :class:`~faultlab.FaultMap`) apply unchanged.

The trick that makes that possible: a gradient, a moment or the step count of a parameter is
stored in a tensor of the parameter's name (the step count: one float32 word), so the model's
parameters are pointed at those tensors for the draw and the injection (:func:`stored_as`); the
fault map then names the parameter, and a map drawn on the weights replays on the gradients.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from faultlab._faults import FAULT_MODELS, FaultMap
from hwlab.errors import check, check_bool, check_choice, check_int, fail, is_int

__all__ = ["STATE_TARGETS", "TARGETS", "TrainFault", "opt_state", "output_holder", "rng_state",
           "set_rng_state", "stored_as", "target_tensors"]

# Optimizer state kept per parameter by torch's optimizers (Adam / AdamW: exp_avg = first moment
# m, exp_avg_sq = second moment v, step = the step count t; SGD: momentum_buffer).
STATE_TARGETS = ("exp_avg", "exp_avg_sq", "step", "momentum_buffer")
TARGETS = ("weights", "gradients", "activations", *STATE_TARGETS)
_PERSISTENT_OK = ("weights", *STATE_TARGETS)  # stored across steps: a stuck cell stays stuck


@dataclass(frozen=True)
class TrainFault:
    """Faults in one target of training, at chosen steps or at a rate in every step.

    ``fault``: any faultlab fault model (``BitFlip(rate=...)``: a fresh map each step it applies,
    the rate per stored bit; ``BitFlip(count=1, bits=(30,))``: one flip of the exponent MSB) or a
    :class:`~faultlab.FaultMap` (exact sites: parameter name, flat index, bit; for activations
    the name is ``"<layer>.out"``). ``steps``: the global step indices it applies in; None =
    every step. ``persistent`` (weights and optimizer state): the map drawn at the first step
    is re-applied after every later update (a stuck or inverting memory cell under every
    write) until step ``until`` (exclusive; None = the end); otherwise a fault happens once per
    step it applies in and training may overwrite it. ``layers`` / ``include_bias`` /
    ``include_norm`` choose the parameters as in ``sample_faults`` (activations: the modules
    whose output is hit; required there).
    """

    target: str
    fault: object
    steps: tuple[int, ...] | None = None  # None: every step (a rate per step)
    persistent: bool = False  # stuck until `until`: re-applied after every update
    until: int | None = None  # first step without a persistent fault (None: never repaired)
    layers: tuple[str, ...] | None = None  # None: every eligible parameter
    include_bias: bool = False  # as in sample_faults: biases excluded by default
    include_norm: bool = False  # as in sample_faults: normalisation parameters excluded

    def __post_init__(self):
        name = "TrainFault"
        check_choice(self.target, TARGETS, "target", name)
        check(isinstance(self.fault, (*FAULT_MODELS, FaultMap)), "fault", name,
              "a faultlab fault model (BitFlip, StuckAt, ...) or a FaultMap", self.fault)
        if self.steps is not None:
            steps = (self.steps,) if is_int(self.steps) else tuple(self.steps)
            for s in steps:
                check_int(s, "steps", name, 0)
            check(len(steps) > 0, "steps", name, "None (every step) or step indices", self.steps)
            object.__setattr__(self, "steps", tuple(sorted({int(s) for s in steps})))
        check_bool(self.persistent, "persistent", name)
        if self.persistent:
            check(self.target in _PERSISTENT_OK, "persistent", name,
                  f"False for target {self.target!r} (persistent faults need stored state: "
                  f"{', '.join(_PERSISTENT_OK)})", self.persistent)
        if self.until is not None:
            check(self.persistent, "until", name, "None unless persistent=True", self.until)
            check_int(self.until, "until", name, (self.steps or (0,))[0] + 1)
        if self.layers is not None:
            layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
            check(len(layers) > 0 and all(isinstance(x, str) and x for x in layers), "layers",
                  name, "None or non-empty module / parameter names", self.layers)
            object.__setattr__(self, "layers", layers)
        if self.target == "activations":
            check(self.layers is not None or isinstance(self.fault, FaultMap), "layers", name,
                  "the modules whose outputs are hit (activations need layers)", self.layers)
        check_bool(self.include_bias, "include_bias", name)
        check_bool(self.include_norm, "include_norm", name)

    def applies(self, step: int) -> bool:
        """Whether a fresh fault of this spec happens in ``step`` (persistent: its first)."""
        if self.steps is None:
            return not self.persistent or step == 0
        return step == self.steps[0] if self.persistent else step in self.steps

    def present(self, step: int) -> bool:
        """Whether a persistent fault is in memory during ``step`` (from its first step to
        ``until``)."""
        start = 0 if self.steps is None else self.steps[0]
        return self.persistent and start <= step and (self.until is None or step < self.until)


def target_tensors(net: nn.Module, optimizer, target: str, caller: str) -> dict[str, torch.Tensor]:
    """Parameter name -> the tensor of ``target`` stored for it now (parameters without one,
    e.g. no gradient this step or no optimizer state yet, are left out)."""
    named = list(net.named_parameters())
    if target == "weights":
        return dict(named)
    if target == "gradients":
        return {n: p.grad for n, p in named if p.grad is not None}
    out = {}
    keys: set[str] = set()
    for n, p in named:
        state = optimizer.state.get(p) if optimizer is not None else None
        if state:
            keys.update(k for k, v in state.items() if isinstance(v, torch.Tensor))
            v = state.get(target)
            if isinstance(v, torch.Tensor):
                out[n] = v
    if keys and not out:
        raise fail("target", caller, f"optimizer state this optimizer keeps "
                   f"({', '.join(sorted(keys))})", target)
    return out


@contextmanager
def stored_as(net: nn.Module, tensors: Mapping[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Point each named parameter's ``.data`` at ``tensors[name]`` for the block, so that
    faultlab's sampler and injector act on those tensors under the parameter names."""
    params = dict(net.named_parameters())
    saved = {}
    try:
        for name, t in tensors.items():
            p = params[name]
            if t is p:
                continue
            saved[name] = p.data
            p.data = t
        yield net
    finally:
        for name, data in saved.items():
            params[name].data = data


def output_holder(layer: str, out: torch.Tensor) -> nn.Module:
    """A module whose one parameter ``<layer>.out`` shares storage with ``out`` (a layer's
    activation), so an activation is hit like a weight."""
    root = node = nn.Module()
    for part in layer.split("."):
        child = nn.Module()
        node.add_module(part, child)
        node = child
    node.register_parameter("out", nn.Parameter(out.data, requires_grad=False))
    return root


def opt_state(optimizer) -> dict:
    """A copy of every parameter's optimizer state (tensors cloned): a checkpoint's half."""
    return {p: {k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                for k, v in s.items()} for p, s in optimizer.state.items()}


def rng_state(x):
    """torch's CPU RNG state, and the device's when the batch lives on CUDA (dropout draws
    there): what a replay needs to run the step's randomness again."""
    cuda = torch.cuda.get_rng_state(x.device) if getattr(x, "is_cuda", False) else None
    return torch.get_rng_state(), cuda


def set_rng_state(x, state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, x.device)
