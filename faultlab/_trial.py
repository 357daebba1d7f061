"""One campaign trial: draw the faults from the trial's seed, inject, evaluate, restore.

Runs in the caller's process or in an executor's worker. The model and data travel as one
:class:`Payload` that is pickled once per campaign (its bytes are cached) and unpickled once per
worker process (kept in ``_LOADED`` by fingerprint), so a trial costs its faults and one
evaluation, never a model copy (except for activation faults: pytorchfi copies the model).
"""

from __future__ import annotations

import io
import pickle
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from faultlab._faults import FAULT_MODELS
from faultlab._inject import apply_fault_map, restore
from faultlab._neuron import NeuronFault, neuron_faults
from faultlab._sample import _sample_faults, seed32

__all__ = ["Payload", "Trial", "accuracy", "input_dtype", "run_trial"]

# The campaign payload this worker process holds: {fingerprint: (model, x, y)}, at most one entry.
_LOADED: dict[str, tuple] = {}


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs are cast to: the model's half / bfloat16 dtype, else float32."""
    for p in model.parameters():
        if p.dtype in (torch.float16, torch.bfloat16):
            return p.dtype
    return torch.float32


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in batches (no grad)."""
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start:start + batch_size])  # b x classes
            correct += int((logits.argmax(dim=1) == y[start:start + batch_size]).sum())
    return correct / x.shape[0]


class Payload:
    """Model and data of a campaign; pickles once, unpickles once per worker process.

    By default it pickles to cached bytes (``blob``) that travel with every item. After
    :meth:`spill` (the campaign does this for local process / Dask workers) it pickles to a path of
    a file written once by this process in a private temporary folder, so a 40 MB model is not sent
    through a pipe once per trial.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, fingerprint: str):
        self.fingerprint = fingerprint
        self.model, self.x, self.y = model, x, y
        self._blob: bytes | None = None
        self._path: str | None = None

    def _bytes(self) -> bytes:
        if self._blob is None:
            buf = io.BytesIO()
            pickle.dump((self.model, self.x, self.y), buf, protocol=pickle.HIGHEST_PROTOCOL)
            self._blob = buf.getvalue()
        return self._blob

    def spill(self, folder: str) -> None:
        """Write the bytes once to ``folder`` and pickle as that path from now on."""
        path = f"{folder}/payload-{self.fingerprint.replace('|', '-')}.pkl"
        with open(path, "wb") as f:
            f.write(self._bytes())
        self._path = path

    def __getstate__(self):
        if self._path is not None:
            return {"fingerprint": self.fingerprint, "path": self._path}
        return {"fingerprint": self.fingerprint, "blob": self._bytes()}

    def __setstate__(self, state):
        fp = state["fingerprint"]
        if fp not in _LOADED:
            _LOADED.clear()  # one campaign at a time per worker
            if "path" in state:  # written by the campaign's own process, never a user file
                with open(state["path"], "rb") as f:
                    _LOADED[fp] = pickle.load(f)
            else:
                _LOADED[fp] = pickle.loads(state["blob"])
        self.fingerprint = fp
        self.model, self.x, self.y = _LOADED[fp]
        self._blob, self._path = state.get("blob"), state.get("path")


@dataclass(frozen=True)
class Trial:
    """Everything one trial needs (picklable); ``spec`` is a tuple of fault models (empty=clean)."""

    payload: Payload = field(repr=False)
    spec: tuple
    trial: int
    seed: int  # derived from the campaign seed and the key
    layers: tuple[str, ...] | None
    include_bias: bool
    include_norm: bool
    batch_size: int


def _fault_rate(spec) -> float | None:
    rates = [f.rate for f in spec if isinstance(f, FAULT_MODELS) and f.rate is not None]
    if not spec:
        return 0.0  # the fault-free reference point
    return rates[0] if rates else None


def run_trial(item: Trial) -> dict:
    """Run one trial and return its result row (without key / common columns)."""
    from hwlab.studies import derive_seed

    model, x, y = item.payload.model, item.payload.x, item.payload.y
    weight = [f for f in item.spec if isinstance(f, FAULT_MODELS)]
    neuron = [f for f in item.spec if isinstance(f, NeuronFault)]
    t0 = time.perf_counter()
    target, inner = model, model
    if neuron:
        target = neuron_faults(model, neuron[0], tuple(x.shape[1:]), item.batch_size,
                               seed=seed32(derive_seed(item.seed, "neuron"), "campaign"))
        inner = target.corrupted  # same parameter names as the model
    touched, n_faults, n_changed, eligible = [], 0, 0, 0
    try:
        for j, fm in enumerate(weight):
            fmap = _sample_faults(inner, fm, derive_seed(item.seed, f"weights{j}"), item.layers,
                                  item.include_bias, item.include_norm, "campaign")
            recs = apply_fault_map(inner, fmap, "campaign")
            touched.extend(recs)
            n_faults += len(fmap)
            n_changed += sum(r.changed for r in recs)
            eligible = max(eligible, fmap.eligible_bits)
        t1 = time.perf_counter()
        acc = accuracy(target, x, y, item.batch_size)
        t2 = time.perf_counter()
    finally:
        with torch.no_grad():
            restore(touched)
    extra = {"n_faults": n_faults, "n_changed": n_changed, "inject_ms": 1e3 * (t1 - t0)}
    if weight:
        extra["eligible_bits"] = eligible
        counts = [f.count for f in weight if f.count is not None]
        if counts:
            extra["count"] = int(np.sum(counts))
        bits = weight[0].bits
        extra["bits"] = list(bits) if bits is not None else None
    if neuron:
        extra["neurons"] = neuron[0].count
    return {"module": "faultlab", "method": "fault-injection",
            "fault_model": "+".join(f.label for f in item.spec) or "none",
            "fault_rate": _fault_rate(item.spec), "trial": item.trial, "seed": item.seed,
            "accuracy": acc, "latency_ms": 1e3 * (t2 - t1), "extra": extra}
