"""The one training loop of hwlab: ``TrainConfig``, ``Task``, ``fit``, ``evaluate``, ``predict``.

Methods plug in as tasks, never as copied loops. ``fit`` only does, per mini-batch::

    optimizer.zero_grad(); losses = task.backward(x, y); optimizer.step(); task.after_step()

so a local-learning rule is a ``Task`` whose ``backward`` runs module by module (a local loss and
``.backward()`` per module, ``detach`` between modules).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.data import Split, batches, iter_batches
from hwlab.errors import check, check_choice, check_int, check_number, check_positive_int

__all__ = ["ClassificationTask", "History", "Task", "TrainConfig", "TrainState", "evaluate", "fit",
           "predict", "resolve_device"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # enough for the small models here to converge on 4k-50k images
    batch_size: int = 128  # fits every model in CPU cache-friendly chunks; a common default
    lr: float = 1e-3  # Adam's default step size (Kingma & Ba 2015)
    optimizer: str = "adam"  # "adam", "adamw" or "sgd"; Adam needs no per-model tuning
    momentum: float = 0.9  # SGD momentum (He et al. 2016); ignored by Adam
    weight_decay: float = 0.0  # off: the short schedules here do not overfit much
    schedule: str = "cosine"  # cosine decay to 0 per step (Loshchilov & Hutter 2017) or "none"
    seed: int = 0  # seeds shuffling and any randomness inside the step (dropout)
    device: str = "auto"  # "auto" = cuda if available else cpu


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "none")


def _check_config(cfg: TrainConfig, caller: str) -> TrainConfig:
    check(isinstance(cfg, TrainConfig), "config", caller, "a TrainConfig", type(cfg).__name__)
    check_positive_int(cfg.epochs, "epochs", caller)
    check_positive_int(cfg.batch_size, "batch_size", caller)
    for name in ("lr", "momentum", "weight_decay"):
        check_number(getattr(cfg, name), name, caller, 0, inclusive=(name != "lr", True))
    check_choice(cfg.optimizer, OPTIMIZERS, "optimizer", caller)
    check_choice(cfg.schedule, SCHEDULES, "schedule", caller)
    check_int(cfg.seed, "seed", caller, 0)
    check(isinstance(cfg.device, str) and (cfg.device == "auto" or _valid_device(cfg.device)),
          "device", caller, "'auto', 'cpu', 'cuda' or 'cuda:N' (available)", cfg.device)
    return cfg


def _valid_device(spec: str) -> bool:
    try:
        dev = torch.device(spec)
    except RuntimeError:
        return False
    return dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available())


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; anything else as ``torch.device``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


class Task:
    """What ``fit`` trains. Subclass and override ``backward`` and ``predict``.

    The defaults of ``parameters``, ``train`` and ``to`` act on every ``nn.Module`` attribute of
    the task (the model, auxiliary heads, decoders, ...).
    """

    def modules(self) -> list[nn.Module]:
        return [v for v in vars(self).values() if isinstance(v, nn.Module)]

    def parameters(self) -> Iterable[nn.Parameter]:
        seen: set[int] = set()
        for m in self.modules():
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def train(self, mode: bool = True) -> Task:
        for m in self.modules():
            m.train(mode)
        return self

    def to(self, device) -> Task:
        for m in self.modules():
            m.to(device)
        return self

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Forward, loss(es) and ``.backward()``; return the losses as floats."""
        raise NotImplementedError(f"{type(self).__name__} must implement backward(x, y)")

    def update(self, optimizer: torch.optim.Optimizer, losses: dict[str, float]) -> dict:
        """Apply the step's update after ``backward``; return the losses to record ({}: none).

        The default is ``optimizer.step()`` (``fit`` has refused non-finite losses before). A
        task that overrides it (``faultlab.training``: faults, detectors, recovery) sees the
        non-finite losses itself; ``fit`` raises when the losses it returns are non-finite.
        """
        optimizer.step()
        return losses

    def after_step(self) -> None:
        """Hook after ``optimizer.step()`` (e.g. an EMA update); no-op by default."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation; called under ``torch.no_grad()`` in eval mode."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict(x)")


LOSSES: dict[str, Callable] = {"ce": F.cross_entropy}


class ClassificationTask(Task):
    """End-to-end classification: ``loss(model(x), y).backward()``; ``loss="ce"`` or a callable."""

    def __init__(self, model: nn.Module, loss="ce"):
        check(isinstance(model, nn.Module), "model", "ClassificationTask", "an nn.Module",
              type(model).__name__)
        check(callable(loss) or loss in LOSSES, "loss", "ClassificationTask",
              f"a callable or one of {', '.join(LOSSES)}", loss)
        self.model = model
        self.loss_fn = loss if callable(loss) else LOSSES[loss]

    def backward(self, x, y):
        loss = self.loss_fn(self.model(x), y)  # scalar
        loss.backward()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.model(x)  # B x num_classes


def as_task(model_or_task, caller: str) -> Task:
    if isinstance(model_or_task, Task):
        return model_or_task
    check(isinstance(model_or_task, nn.Module), "model_or_task", caller, "an nn.Module or a Task",
          type(model_or_task).__name__)
    return ClassificationTask(model_or_task)


@dataclass
class History:
    """What ``fit`` returns: per-epoch mean losses, validation accuracy (if ``val``), seconds."""

    losses: list[dict[str, float]] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


@dataclass
class TrainState:
    """Handed to callbacks. Set ``stop = True`` to end training after the current step."""

    epoch: int
    step: int
    losses: dict[str, float]
    task: Task
    optimizer: torch.optim.Optimizer
    history: History
    stop: bool = False


def _make_optimizer(params: list, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


_DATA_KINDS = ("a non-empty Split, an (x, y) pair, a DataLoader or a re-iterable of (x, y) "
               "batches (not a one-shot iterator)")


def _fit_data(data, caller: str):
    """(x, y) tensors for in-memory data, else the re-iterable batch source itself."""
    if isinstance(data, Split):
        check(len(data) > 0, "data", caller, _DATA_KINDS, f"{data.name} (empty)")
        return (data.x, data.y), data.name
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        x, y = next(iter_batches(data, max(len(data[1]), 1), caller))  # validated, non-empty
        return (x, y), "(x, y)"
    ok = isinstance(data, Iterable) and iter(data) is not data and not isinstance(
        data, (str, bytes, dict))
    check(ok, "data", caller, _DATA_KINDS, type(data).__name__)
    return data, type(data).__name__


def fit(model_or_task, data, config: TrainConfig = TrainConfig(), val=None,
        callbacks=(), progress: bool = False) -> History:
    """Train a model (as a ``ClassificationTask``) or a ``Task`` on ``data``, in place.

    ``data``: a Split or an ``(x, y)`` pair (shuffled each epoch by a seeded permutation), or a
    ``DataLoader`` / any re-iterable of ``(x, y)`` batches, read again every epoch and streamed
    batch by batch (its own order and batch size; ``config.batch_size`` is not used; the
    cosine schedule needs ``len(data)`` batches per epoch). ``val``: any data ``evaluate`` takes.

    Deterministic for ``config.seed`` on a given device: shuffling uses a seeded
    ``torch.Generator`` and the step runs inside ``torch.random.fork_rng`` seeded with
    ``config.seed``, so the global RNG state is untouched. The task is moved to the device and
    left in train mode. Callbacks are objects with optional ``on_step(state)`` and
    ``on_epoch_end(state)`` methods (see ``TrainState``).
    """
    task = as_task(model_or_task, "fit")
    data, name = _fit_data(data, "fit")
    ok = val is None or isinstance(val, Split) or (
        isinstance(val, Iterable) and not isinstance(val, (str, bytes, dict)))
    check(ok, "val", "fit", "None or data as for evaluate", type(val).__name__)
    cfg = _check_config(config, "fit")
    if not isinstance(data, tuple):
        check(cfg.schedule != "cosine" or hasattr(data, "__len__"), "data", "fit",
              "a batch source with len() when schedule='cosine' (or use schedule='none')",
              type(data).__name__)
    check(isinstance(callbacks, (tuple, list)), "callbacks", "fit", "a tuple or list",
          type(callbacks).__name__)
    params = [p for p in task.parameters() if p.requires_grad]
    check(len(params) > 0, "model_or_task", "fit", "a task with trainable parameters",
          type(task).__name__)
    return _fit(task, params, data, name, cfg, val, tuple(callbacks), progress)


def _fit(task, params, data, name, cfg, val, callbacks, progress) -> History:
    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    start = time.perf_counter()
    history = History()
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(cfg.seed)
            task.to(device)
            opt = _make_optimizer(params, cfg)
            if isinstance(data, tuple):
                x, y = data[0].to(device), data[1].to(device)
                # BatchNorm cannot train on a batch of one: drop a trailing batch of size 1.
                drop_last = len(y) % cfg.batch_size == 1 and len(y) > 1
                steps_per_epoch = (len(y) // cfg.batch_size
                                   + (len(y) % cfg.batch_size > int(drop_last)))
            else:  # a DataLoader or another re-iterable batch source, streamed
                x, y, drop_last = data, device, True
                steps_per_epoch = len(data) if hasattr(data, "__len__") else 1
            sched = None
            if cfg.schedule == "cosine":
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                    opt, T_max=cfg.epochs * steps_per_epoch)
            state = TrainState(0, 0, {}, task, opt, history)
            epochs = range(cfg.epochs)
            if progress:
                from tqdm.auto import tqdm

                epochs = tqdm(epochs, desc=f"fit {name}", unit="epoch")
            for epoch in epochs:
                state.epoch = epoch
                _run_epoch(task, opt, sched, x, y, cfg, epoch, drop_last, callbacks, state)
                if val is not None:
                    history.val_accuracy.append(evaluate(task, val))
                    task.train(True)
                for cb in callbacks:
                    if hasattr(cb, "on_epoch_end"):
                        cb.on_epoch_end(state)
                if progress:
                    epochs.set_postfix(history.losses[-1])
                if state.stop:
                    break
    finally:
        torch.set_num_threads(threads)
        history.seconds = time.perf_counter() - start
    return history


def _run_epoch(task, opt, sched, x, y, cfg, epoch, drop_last, callbacks, state) -> None:
    task.train(True)
    sums: dict[str, float] = {}
    seen = 0
    if isinstance(x, torch.Tensor):
        # Distinct, reproducible shuffle per epoch (seed, epoch) without touching the global RNG.
        seed = cfg.seed * 100_003 + epoch
        source = batches((x, y), cfg.batch_size, shuffle=True, seed=seed, drop_last=drop_last)
    else:  # streamed: x is the batch source, y the device; batches of one are skipped (BN)
        device = y
        source = ((xb.to(device), yb.to(device)) for xb, yb in iter_batches(x, 1, "fit")
                  if len(yb) > 1)
    for xb, yb in source:
        opt.zero_grad(set_to_none=True)
        losses = task.backward(xb, yb)
        own = type(task).update is not Task.update  # the task handles non-finite steps
        if not own:
            _check_finite(losses, epoch, state.step, cfg, "the weights were not updated by "
                          "this step")
        losses = task.update(opt, losses)
        if own:
            _check_finite(losses, epoch, state.step, cfg, f"{type(task).__name__}.update "
                          "returned them")
        if sched is not None:
            sched.step()
        task.after_step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v * len(yb)
        seen += len(yb) if losses else 0  # a step without losses (skipped) is not averaged
        state.step += 1
        state.losses = losses
        state.history.steps = state.step
        for cb in callbacks:
            if hasattr(cb, "on_step"):
                cb.on_step(state)
        if state.stop:
            break
    state.history.losses.append({k: v / max(seen, 1) for k, v in sums.items()})


def _check_finite(losses, epoch, step, cfg, what) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"training diverged at epoch {epoch} step {step}: losses {bad} "
                                 f"(lr={cfg.lr}); {what}")


def _correct(task: Task, data, batch_size: int, caller: str) -> tuple[int, int]:
    """(correct top-1 predictions, samples) over any data, streamed batch by batch."""
    modes = [m.training for m in task.modules()]
    task.train(False)
    device = task.device
    correct = total = 0
    try:
        with torch.no_grad():
            for xb, yb in iter_batches(data, batch_size, caller):
                pred = task.predict(xb.to(device)).argmax(dim=-1).cpu()  # B (or B x T tokens)
                correct += int((pred == yb.cpu()).sum())
                total += yb.numel()
    finally:
        for m, mode in zip(task.modules(), modes):
            m.train(mode)
    return correct, total


def _predict(task: Task, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    modes = [m.training for m in task.modules()]
    task.train(False)
    device = task.device
    try:
        with torch.no_grad():
            outs = [task.predict(xb.to(device)).float().cpu()
                    for xb, _ in _batches_x(x, batch_size)]
    finally:
        for m, mode in zip(task.modules(), modes):
            m.train(mode)
    return torch.cat(outs) if outs else torch.empty(0)


def _batches_x(x, batch_size):
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], None


def predict(model_or_task, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (on the CPU, float32) for ``x`` in eval mode without gradients; modes restored."""
    task = as_task(model_or_task, "predict")
    check(isinstance(x, torch.Tensor) and x.dim() >= 1, "x", "predict", "a tensor with a batch "
          "dimension", type(x).__name__)
    batch_size = check_positive_int(batch_size, "batch_size", "predict")
    return _predict(task, x, batch_size)


def evaluate(model_or_task, data, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] of a model or task on a Split, an ``(x, y)`` pair, a DataLoader
    or any iterable of ``(x, y)`` batches (streamed: memory is one batch plus the model)."""
    task = as_task(model_or_task, "evaluate")
    batch_size = check_positive_int(batch_size, "batch_size", "evaluate")
    correct, total = _correct(task, data, batch_size, "evaluate")
    return correct / total


def config_dict(cfg: TrainConfig) -> dict:
    """The config as a plain dict (for stores and hashes)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}
