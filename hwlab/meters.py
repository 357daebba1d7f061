"""Meters: ``latency`` (wall clock), ``training_memory`` (saved-for-backward peak), model sizes.

``training_memory`` counts what a training step keeps alive for its backward pass, the memory
that local learning saves: every tensor autograd saves passes through
``torch.autograd.graph.saved_tensors_hooks``; the pack hook wraps it in a small handle whose
lifetime is that of the saved slot (autograd drops it when the graph node is freed after its
backward), so the live total rises during a forward and falls during a backward. Tensors are
counted once per underlying storage, at the storage's full size, while any saved tensor refers to
it; storages of parameters are excluded. tracemalloc cannot see torch allocations and process RSS
is noise, so this is the deterministic figure: the same step gives the same bytes every time.

``live_memory`` is the independent figure: a ``TorchDispatchMode`` sees every op output and counts
each new storage until it is freed, so its peak covers what ``saved_tensors_hooks`` cannot see:
transient outputs, gradients, optimizer temporaries and activations recomputed inside
``torch.utils.checkpoint`` regions (whose own saved-tensor hooks hide them from the first meter).
It is the CPU stand-in for ``torch.cuda.max_memory_allocated`` (no allocator rounding or
workspace), the figure the local-learning papers report.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hwlab.errors import check, check_positive_int

__all__ = ["Latency", "LiveReport", "MemoryReport", "latency", "live_memory", "model_bytes",
           "param_count", "training_memory"]


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one call, in milliseconds, over ``repeats`` timed calls."""

    median_ms: float
    iqr_ms: float  # interquartile range (75th - 25th percentile): the spread
    min_ms: float
    mean_ms: float
    repeats: int


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # time the kernels, not their launch


def latency(fn, *args, warmup: int = 3, repeats: int = 20, **kwargs) -> Latency:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Uses ``time.perf_counter`` per call, with a CUDA synchronize before and after each call when
    CUDA is in use. Run it under ``torch.no_grad()`` to time inference.
    """
    check(callable(fn), "fn", "latency", "a callable", type(fn).__name__)
    warmup = check_positive_int(warmup, "warmup", "latency", minimum=0)
    repeats = check_positive_int(repeats, "repeats", "latency")
    return _latency(fn, args, kwargs, warmup, repeats)


def _latency(fn, args, kwargs, warmup, repeats) -> Latency:
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = np.empty(repeats)
    for i in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        _sync()
        times[i] = (time.perf_counter() - t0) * 1e3
    q1, q3 = np.percentile(times, [25, 75])
    return Latency(float(np.median(times)), float(q3 - q1), float(times.min()),
                   float(times.mean()), repeats)


@dataclass(frozen=True)
class MemoryReport:
    """Bytes of one training step; ``total_bytes`` is the sum of the four parts."""

    saved_peak_bytes: int  # peak of tensors saved for backward (per storage, params excluded)
    param_bytes: int  # parameters (those given, plus the optimizer's)
    grad_bytes: int  # one gradient per parameter that requires grad
    optimizer_bytes: int  # tensors in optimizer.state after the step (e.g. Adam's two moments)
    total_bytes: int
    saved_tensors: int  # how many tensors were packed (saved) during the step


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    st = t.untyped_storage()
    return str(t.device), st.data_ptr()


class _Saved:
    """Handle for one saved tensor: holds it, and un-counts its storage when autograd drops it."""

    __slots__ = ("key", "meter", "tensor")

    def __init__(self, tensor, key, meter):
        self.tensor, self.key, self.meter = tensor, key, meter

    def __del__(self):
        self.meter._release(self.key)


class _SavedMeter:
    """Live bytes of saved storages (refcounted by handles) and their running peak."""

    def __init__(self, exclude: set):
        self.exclude = exclude
        self.refs: dict = {}  # storage key -> [handles alive, storage bytes]
        self.current = self.peak = self.packed = 0

    def pack(self, t: torch.Tensor):
        self.packed += 1
        key = _storage_key(t)
        if key in self.exclude or t.untyped_storage().nbytes() == 0:
            return t
        ref = self.refs.get(key)
        if ref is None:
            nbytes = t.untyped_storage().nbytes()
            self.refs[key] = [1, nbytes]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        else:
            ref[0] += 1
        return _Saved(t, key, self)

    @staticmethod
    def unpack(h):
        return h.tensor if isinstance(h, _Saved) else h

    def _release(self, key) -> None:
        ref = self.refs[key]
        ref[0] -= 1
        if ref[0] == 0:
            self.current -= ref[1]
            del self.refs[key]


def _params_of(params, optimizer) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for p in params:
        if isinstance(p, nn.Module):
            out.extend(p.parameters())
        else:
            out.append(p)
    if optimizer is not None:
        out.extend(p for g in optimizer.param_groups for p in g["params"])
    seen, unique = set(), []
    for p in out:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    return unique


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (full storage size, counted once)."""
    sizes = {}
    for t in tensors:
        sizes[_storage_key(t)] = t.untyped_storage().nbytes()
    return sum(sizes.values())


def training_memory(step_fn, params=(), optimizer=None) -> MemoryReport:
    """Run ``step_fn()`` once (one training step) and report its memory, deterministically.

    ``params``: tensors and/or ``nn.Module``s whose parameters are excluded from the saved count
    and reported as ``param_bytes``; the optimizer's parameters are added to them. ``optimizer``:
    its state after the step gives ``optimizer_bytes``. Differs from a device allocator's peak:
    this counts tensors saved for backward only (no transient outputs, gradients or workspace).
    """
    check(callable(step_fn), "step_fn", "training_memory", "a callable", type(step_fn).__name__)
    check(isinstance(params, (tuple, list, nn.Module)) or hasattr(params, "__iter__"), "params",
          "training_memory", "an iterable of tensors or nn.Modules", type(params).__name__)
    if isinstance(params, nn.Module):
        params = [params]
    params = list(params)
    check(all(isinstance(p, (torch.Tensor, nn.Module)) for p in params), "params",
          "training_memory", "an iterable of tensors or nn.Modules",
          [type(p).__name__ for p in params])
    check(optimizer is None or isinstance(optimizer, torch.optim.Optimizer), "optimizer",
          "training_memory", "a torch.optim.Optimizer or None", type(optimizer).__name__)
    return _training_memory(step_fn, _params_of(params, optimizer), optimizer)


def _training_memory(step_fn, params, optimizer) -> MemoryReport:
    meter = _SavedMeter({_storage_key(p) for p in params})
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        step_fn()
    param_bytes = _storage_bytes(params)
    grad_bytes = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    opt_bytes = 0
    if optimizer is not None:
        opt_bytes = _storage_bytes(v for s in optimizer.state.values() for v in s.values()
                                   if isinstance(v, torch.Tensor))
    total = meter.peak + param_bytes + grad_bytes + opt_bytes
    return MemoryReport(meter.peak, param_bytes, grad_bytes, opt_bytes, total, meter.packed)


@dataclass(frozen=True)
class LiveReport:
    """Bytes of storages created by ops during one call and alive at the same time."""

    peak_bytes: int  # the largest live total during the call
    end_bytes: int  # still alive when the call returned (e.g. new gradients, optimizer state)
    ops: int  # how many ops ran


class _LiveTensors:
    """Live bytes of the storages that ops create (not views or in-place results), until freed."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        meter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                meter._seen(tree_flatten((args, kwargs))[0], tree_flatten(out)[0])
                return out

        self.mode = Mode()
        self.live: dict = {}  # storage key -> bytes
        self.current = self.peak = self.ops = 0

    def _seen(self, inputs, outputs) -> None:
        self.ops += 1
        given = {_storage_key(t) for t in inputs if isinstance(t, torch.Tensor)}
        for t in outputs:
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            key = _storage_key(t)
            if key in given or key in self.live or st.nbytes() == 0:
                continue
            self.live[key] = st.nbytes()
            self.current += st.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(st, self._free, key)  # the storage's Python object lives as long

    def _free(self, key) -> None:
        self.current -= self.live.pop(key, 0)


def live_memory(step_fn) -> LiveReport:
    """Run ``step_fn()`` once and report the peak bytes of op outputs alive at the same time.

    Every op dispatched during the call (forward, backward, checkpoint recomputation, optimizer)
    is seen; each output storage that is new (not an input's storage: views and in-place results
    are not new) counts at its full size until it is freed. Tensors that existed before the call
    (parameters, the input batch, optimizer state updated in place) are not counted: add
    ``param_bytes`` and ``optimizer_bytes`` for a device-allocator-like total. Deterministic.
    """
    check(callable(step_fn), "step_fn", "live_memory", "a callable", type(step_fn).__name__)
    return _live_memory(step_fn)


def _live_memory(step_fn) -> LiveReport:
    meter = _LiveTensors()
    with meter.mode:
        step_fn()
    return LiveReport(meter.peak, meter.current, meter.ops)


def model_bytes(model: nn.Module, buffers: bool = True) -> dict[str, int]:
    """Bytes of a model's parameters (and buffers, unless ``buffers=False``) per dtype name."""
    check(isinstance(model, nn.Module), "model", "model_bytes", "an nn.Module",
          type(model).__name__)
    tensors = list(model.parameters()) + (list(model.buffers()) if buffers else [])
    out: dict[str, int] = {}
    for t in tensors:
        name = str(t.dtype).removeprefix("torch.")
        out[name] = out.get(name, 0) + t.numel() * t.element_size()
    return out


def param_count(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters once); ``trainable_only``: requires_grad."""
    check(isinstance(model, nn.Module), "model", "param_count", "an nn.Module",
          type(model).__name__)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


