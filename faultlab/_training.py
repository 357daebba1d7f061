"""Faults during training: :func:`training` wraps any ``hwlab.train`` Task.

``hwlab.train.fit`` runs, per step, ``task.backward(x, y)`` then ``task.update(optimizer,
losses)``; the wrapper (:class:`FaultyTraining`) does the inner task's work in between:

1. ``backward``: take the checkpoint when one is due (every ``checkpoint_every`` steps; every step
   for ``skip`` / ``recompute``), remember the batch and the RNG state (for replay), inject the
   weight faults of this step, hook the activation faults, run the inner task's backward;
2. ``update``: inject the gradient and optimizer-state faults of this step, run the ``pre``
   detectors (loss, gradients), apply the update, re-assert persistent faults, run the ``post``
   detectors (weights, optimizer state); on a detection apply the policy:

   * ``none``: record it and go on;
   * ``skip``: no update in this step (undone from the step's checkpoint when found after it);
   * ``recompute``: restore the step's checkpoint and run the step again (same batch, same RNG);
   * ``rollback``: restore the last checkpoint, replay the steps since (deterministically: the
     batches, RNG states and learning rates are kept), and run this step again. If the step
     still trips a detector, the checkpoint before that one is tried (the ISCA'23 artifact
     replays the last two iterations); then it is recorded as not recovered.

Transient faults (one step) are events in time: a replay does not repeat them, persistent ones
(stuck cells) are re-applied after every write. Every fault is recorded (``log``: step, target
and the FaultMap, replayable as ``TrainFault(target, fmap, steps=(step,))``) and every detection
(``detections``). Without faults the wrapped run is bit-identical to plain ``fit``: detectors
and checkpoints only read, and faults are drawn from their own seeds, never from torch's RNG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from faultlab._faults import FaultMap
from faultlab._inject import apply_fault_map
from faultlab._sample import _sample_faults
from faultlab._train_detect import DEFAULT_DETECTORS, Frozen, step_stats
from faultlab._train_sites import (
    TrainFault,
    opt_state,
    output_holder,
    rng_state,
    set_rng_state,
    stored_as,
    target_tensors,
)
from faultlab._words import eligible_parameters
from hwlab.errors import check, check_choice, check_int, fail
from hwlab.seeds import derive_seed
from hwlab.train import Task, as_task

__all__ = ["POLICIES", "Detection", "FaultyTraining", "Injection", "training"]

log = logging.getLogger(__name__)

POLICIES = ("none", "skip", "recompute", "rollback")


@dataclass(frozen=True)
class Injection:
    """Faults that happened: ``fmap`` in ``target`` at ``step`` (replay: a TrainFault)."""

    step: int
    target: str
    fmap: FaultMap
    persistent: bool = False

    def replay(self) -> TrainFault:
        return TrainFault(self.target, self.fmap, steps=(self.step,), persistent=self.persistent)


@dataclass(frozen=True)
class Detection:
    """A detector fired at ``step`` (``phase`` pre / post update) on ``value``; ``action`` taken
    (``none`` / ``skip`` / ``recompute`` / ``rollback``) and whether the re-run step was clean."""

    step: int
    phase: str
    detector: str
    value: float
    action: str
    recovered: bool


def training(task, faults=(), detectors=DEFAULT_DETECTORS, policy: str = "none",
             checkpoint_every: int = 10, seed: int = 0) -> FaultyTraining:
    """Wrap a model (as a ClassificationTask) or any ``hwlab.train.Task`` so that ``fit`` trains
    it under ``faults`` (:class:`~faultlab.TrainFault`\\ s) with ``detectors`` and a recovery
    ``policy`` (``none``, ``skip``, ``recompute``, ``rollback``; ``checkpoint_every`` steps
    between in-memory checkpoints for ``rollback``). ``seed`` draws the rate-based maps."""
    caller = "faultlab.training"
    task = as_task(task, caller)
    faults = (faults,) if isinstance(faults, TrainFault) else tuple(faults)
    for f in faults:
        check(isinstance(f, TrainFault), "faults", caller, "TrainFault specs", f)
    detectors = tuple(detectors or ())
    for d in detectors:
        check(callable(getattr(d, "check", None)) and hasattr(d, "phases"), "detectors", caller,
              "detector objects (faultlab.NonFinite, LossSpike, GradSpike, MomentBound)", d)
    check_choice(policy, POLICIES, "policy", caller)
    check(policy == "none" or detectors, "policy", caller,
          "'none' when there are no detectors (a policy acts on detections)", policy)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", caller, 1)
    seed = check_int(seed, "seed", caller, 0)
    return FaultyTraining(task, faults, detectors, policy, checkpoint_every, seed)


class FaultyTraining(Task):
    """The inner task under faults, detectors and a recovery policy (see :func:`training`)."""

    def __init__(self, task, faults, detectors, policy, checkpoint_every, seed):
        self.task, self.faults, self.detectors = task, faults, detectors
        self.policy, self.checkpoint_every, self.seed = policy, checkpoint_every, seed
        self.log: list[Injection] = []
        self.detections: list[Detection] = []
        self.steps = 0  # global step counter (the next step's index)
        self._ready = False

    # -- the inner task's interface (delegated: a rule may override any of them, e.g. keep an
    # EMA copy in eval mode or train a subset of its parameters) ------------------------------
    def modules(self):
        return self.task.modules()

    def parameters(self):
        return self.task.parameters()

    def train(self, mode: bool = True):
        self.task.train(mode)
        return self

    def to(self, device):
        self.task.to(device)
        return self

    @property
    def device(self):
        return self.task.device

    def predict(self, x):
        return self.task.predict(x)

    def after_step(self):
        self.task.after_step()

    # -- set-up on the first step -------------------------------------------------------------
    def _setup(self):
        mods = self.task.modules()
        names = [n for n, m in vars(self.task).items() if isinstance(m, nn.Module)]
        self._net = mods[0] if len(mods) == 1 else nn.ModuleDict(dict(zip(names, mods)))
        seen, self._state = set(), []  # every parameter and buffer the task holds
        for m in mods:
            for t in [*m.parameters(), *m.buffers()]:
                if id(t) not in seen:
                    seen.add(id(t))
                    self._state.append(t)
        self._params = [p for p in self._net.parameters() if p.requires_grad]
        self._eligible = {}
        for k, f in enumerate(self.faults):
            if f.target != "activations" and not isinstance(f.fault, FaultMap):
                self._eligible[k] = [n for n, _ in eligible_parameters(
                    self._net, f.layers, f.include_bias, f.include_norm, "faultlab.training")]
        self._dstate = [d.state() for d in self.detectors]
        self._stuck: dict[int, FaultMap] = {}  # persistent spec -> its map
        self._ckpts: list[tuple] = []  # (step, tensors, optimizer state), oldest first
        self._pending_opt = False  # a checkpoint taken in backward awaits the optimizer state
        self._steplog: dict[int, tuple] = {}  # step -> (x, y, rng, lrs)
        self._ready = True

    # -- step ---------------------------------------------------------------------------------
    def backward(self, x, y):
        if not self._ready:
            self._setup()
        step = self.steps
        every = 1 if self.policy in ("skip", "recompute") else self.checkpoint_every
        if self.policy != "none" and step % every == 0:
            self._ckpts = [*self._ckpts[-1:], (step, [t.detach().clone() for t in self._state],
                                               None)]
            self._pending_opt = True  # the optimizer state is read in update (fit's optimizer)
        if self.policy != "none":  # what a replay needs; nothing is replayed without a policy
            self._steplog[step] = (x, y, rng_state(x), None)
        self._inject(step, ("weights",))
        hooks = self._hook_activations(step)
        try:
            return self.task.backward(x, y)
        finally:
            for h in hooks:
                h.remove()

    def update(self, optimizer, losses):
        step = self.steps
        if self._pending_opt:
            c_step, tensors, _ = self._ckpts[-1]
            self._ckpts[-1] = (c_step, tensors, opt_state(optimizer))
            self._pending_opt = False
        if step in self._steplog:
            x, y, rng, _ = self._steplog[step]
            self._steplog[step] = (x, y, rng, [g["lr"] for g in optimizer.param_groups])
        self._opt = optimizer
        self._inject(step, ("gradients", "exp_avg", "exp_avg_sq", "step", "momentum_buffer"))
        losses = self._guarded_step(step, optimizer, losses)
        self.steps = step + 1
        if self._ckpts:  # forget batches older than the oldest checkpoint
            oldest = self._ckpts[0][0]
            for s in [s for s in self._steplog if s < oldest]:
                del self._steplog[s]
        else:
            self._steplog.clear()
        return losses

    def _guarded_step(self, step, optimizer, losses):
        fired = self._check("pre", losses)
        if fired and self.policy != "none":
            return self._recover(step, optimizer, "pre", fired, losses)
        optimizer.step()
        self._reassert(step + 1)
        fired = fired or self._check("post", losses)
        if fired and self.policy != "none":
            return self._recover(step, optimizer, "post", fired, losses)
        if fired:
            self.detections.append(Detection(step, fired[0], fired[1], fired[2], "none", False))
        return losses

    def _check(self, phase, losses, update_history=True):
        """(phase, detector, value) of the first detector that fires, else None."""
        wanted = [(d, s) for d, s in zip(self.detectors, self._dstate) if phase in d.phases]
        if not wanted:
            return None
        stats = step_stats(phase, losses, self._params, self._opt)
        for d, s in wanted:
            v = d.check(phase, stats, s if update_history else Frozen(s))
            if v is not None:
                return phase, d.name, float(v)
        return None

    # -- recovery -----------------------------------------------------------------------------
    def _recover(self, step, optimizer, phase, fired, losses):
        if self.policy == "skip":
            if phase == "post":
                self._restore(self._ckpts[-1], optimizer)
                self._reassert(step)
            self.detections.append(Detection(step, phase, fired[1], fired[2], "skip", True))
            return {}  # no update: the step's losses are not averaged
        for ckpt in reversed(self._ckpts):
            self._restore(ckpt, optimizer)
            for s in range(ckpt[0], step):
                self._run(s, optimizer)
            losses = self._run(step, optimizer, check=False)
            ok = self._check("pre", losses, False) is None and \
                self._check("post", losses, False) is None
            if ok:
                break
        self.detections.append(Detection(step, phase, fired[1], fired[2], self.policy, ok))
        if not ok:
            log.warning("step %d: %s still fires after %s", step, fired[1], self.policy)
        return losses

    def _run(self, step, optimizer, check=True):
        """Replay ``step`` from its logged batch, RNG state and learning rates (no transient
        faults; persistent ones re-applied)."""
        x, y, rng, lrs = self._steplog[step]
        current = [g["lr"] for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, lrs):
            g["lr"] = lr
        set_rng_state(x, rng)
        optimizer.zero_grad(set_to_none=True)
        self._reassert(step)  # stuck cells are there in the re-run too
        losses = self.task.backward(x, y)
        optimizer.step()
        self._reassert(step + 1)
        if step < self.steps:
            self.task.after_step()
        for g, lr in zip(optimizer.param_groups, current):
            g["lr"] = lr
        return losses

    def _restore(self, ckpt, optimizer):
        _, tensors, opt_state = ckpt
        with torch.no_grad():
            for t, saved in zip(self._state, tensors):
                t.copy_(saved)
        for p in self._params:
            saved = opt_state.get(p)
            if saved is None:
                optimizer.state.pop(p, None)
            else:
                live = optimizer.state[p]
                for k, v in saved.items():
                    if isinstance(v, torch.Tensor) and isinstance(live.get(k), torch.Tensor):
                        live[k].copy_(v)
                    else:
                        live[k] = v.clone() if isinstance(v, torch.Tensor) else v

    # -- injection ----------------------------------------------------------------------------
    def _inject(self, step, targets):
        if not self.faults:
            return
        for k, f in enumerate(self.faults):
            if f.target not in targets or not f.applies(step):
                continue
            tensors = target_tensors(self._net, getattr(self, "_opt", None), f.target,
                                     "faultlab.training")
            if not tensors:
                check(f.steps is None, "faults", "faultlab.training",
                      f"steps where {f.target} exist (none are stored at step {step}: "
                      "optimizer state appears after the first update)", f)
                continue
            with stored_as(self._net, tensors) as net:
                fmap = self._draw(k, f, step, net, list(tensors))
                apply_fault_map(net, fmap, "faultlab.training")
            if f.persistent:
                self._stuck[k] = fmap
            if len(fmap):
                self.log.append(Injection(step, f.target, fmap, f.persistent))

    def _draw(self, k, f, step, net, available):
        if isinstance(f.fault, FaultMap):
            return f.fault
        names = [n for n in self._eligible[k] if n in set(available)]
        seed = derive_seed(self.seed, f"{k}|{f.target}|{step}")
        if not names:
            raise fail("faults", "faultlab.training", f"a spec whose layers hold {f.target}", f)
        return _sample_faults(net, f.fault, seed, names, True, True, "faultlab.training")

    def _reassert(self, step):
        """Re-apply the persistent faults present in ``step`` (after a write of their target:
        an update, a restore)."""
        for k, fmap in self._stuck.items():
            f = self.faults[k]
            if not f.present(step):
                continue
            tensors = target_tensors(self._net, self._opt, f.target, "faultlab.training")
            with stored_as(self._net, tensors) as net:
                apply_fault_map(net, fmap, "faultlab.training")

    def _hook_activations(self, step):
        specs = [(k, f) for k, f in enumerate(self.faults)
                 if f.target == "activations" and f.applies(step)]
        if not specs:
            return []
        modules = dict(self._net.named_modules())
        hooks = []
        for k, f in specs:
            layers = f.layers or tuple(n[:-4] for n in f.fault.names)
            for layer in layers:
                check(layer in modules, "layers", "faultlab.training",
                      f"module names of the model (e.g. {', '.join(list(modules)[1:4])})", layer)
                hooks.append(modules[layer].register_forward_hook(
                    self._activation_hook(k, f, step, layer)))
        return hooks

    def _activation_hook(self, k, f, step, layer):
        def hook(module, args, out):
            check(isinstance(out, torch.Tensor) and out.is_floating_point(), "layers",
                  "faultlab.training", "modules whose output is one floating-point tensor",
                  f"{layer} ({type(out).__name__})")
            holder = output_holder(layer, out)
            if isinstance(f.fault, FaultMap):
                fmap = f.fault
            else:
                seed = derive_seed(self.seed, f"{k}|activations|{step}|{layer}")
                fmap = _sample_faults(holder, f.fault, seed, None, True, True,
                                      "faultlab.training")
            apply_fault_map(holder, fmap, "faultlab.training")  # writes out.data in place
            if len(fmap):
                self.log.append(Injection(step, "activations", fmap))
            return out
        return hook
