"""Fault campaigns: many seeded trials per fault model, resumable through the results store."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from concurrent.futures import Executor
from contextlib import ExitStack

import numpy as np
import torch
from torch import nn

from faultlab._faults import FAULT_MODELS
from faultlab._neuron import NeuronFault
from faultlab._sample import _bit_table, eligible_parameters
from faultlab._stats import mean_ci
from faultlab._trial import Payload, Trial, input_dtype, run_trial
from hwlab.errors import check, fail

__all__ = ["campaign", "point_key", "weights_fingerprint"]

METRICS = ("accuracy",)


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 (16 hex) over every parameter and buffer: name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _tensor_hash(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def point_key(spec: tuple) -> str:
    """Stable text of one campaign point, e.g. ``bitflip|rate=1e-06`` (``none`` when clean)."""
    if not spec:
        return "none"
    parts = []
    for f in spec:
        d = f.to_dict()
        parts.append("|".join([d.pop("fault")] + [f"{k}={_fmt(v)}" for k, v in sorted(d.items())
                                                   if v is not None]))
    return "+".join(parts)


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return repr(v) if isinstance(v, float) else str(v)


def _as_spec(fm) -> tuple:
    items = tuple(fm) if isinstance(fm, (tuple, list)) else (fm,)
    for f in items:
        check(isinstance(f, (*FAULT_MODELS, NeuronFault)), "fault_models", "campaign",
              "BitFlip, StuckAt or NeuronFault objects (or tuples of them)", fm)
    check(len(items) > 0, "fault_models", "campaign", "non-empty entries", fm)
    check(sum(isinstance(f, NeuronFault) for f in items) <= 1, "fault_models", "campaign",
          "points with at most one NeuronFault", fm)
    return items


def _xy(data):
    from hwlab.data import Split

    if isinstance(data, Split):
        x, y, name = data.x, data.y, data.name or None
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        (x, y), name = data, None
        x, y = torch.as_tensor(x), torch.as_tensor(y)
    else:
        raise fail("data", "campaign", "a hwlab.data.Split or an (x, y) pair", type(data).__name__)
    check(x.ndim >= 2 and y.ndim == 1 and x.shape[0] == y.shape[0], "data", "campaign",
          "an (x, y) pair with x N x ... and y of length N", (tuple(x.shape), tuple(y.shape)))
    check(x.shape[0] > 0, "data", "campaign", "a non-empty dataset", name or "(x, y) with 0 rows")
    return x, y.long(), name


def _check_args(model, fault_models, trials, seed, metric, batch_size, margin, confidence,
                min_trials, layers, include_bias, include_norm):
    c = "campaign"
    check(isinstance(model, nn.Module), "model", c, "a torch.nn.Module", type(model).__name__)
    check(isinstance(fault_models, (list, tuple)) and len(fault_models) > 0, "fault_models", c,
          "a non-empty list of fault models", fault_models)
    for name, v, lo in (("trials", trials, 1), ("seed", seed, 0), ("batch_size", batch_size, 1),
                        ("min_trials", min_trials, 2)):
        ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo
        check(ok, name, c, f"an integer >= {lo}", v)
    check(metric in METRICS, "metric", c, f"one of {', '.join(METRICS)}", metric)
    if margin is not None:
        ok = isinstance(margin, (int, float)) and not isinstance(margin, bool)
        check(ok and 0 < margin < 1, "margin", c, "None or a number in (0, 1)", margin)
    check(isinstance(confidence, float) and 0 < confidence < 1, "confidence", c,
          "a number in (0, 1)", confidence)
    specs = [_as_spec(fm) for fm in fault_models]
    keys = [point_key(s) for s in specs]
    check(len(set(keys)) == len(keys), "fault_models", c, "distinct fault models", keys)
    if any(isinstance(f, FAULT_MODELS) for s in specs for f in s):
        chosen = eligible_parameters(model, layers, include_bias, include_norm, c)
        total = sum(t.numel() for _, t in chosen)
        for s in specs:
            for f in s:
                if isinstance(f, FAULT_MODELS):
                    _, per_word = _bit_table(f, chosen, c)
                    check(f.count is None or f.count <= total * int(per_word.min()), "count", c,
                          "at most the number of eligible bits", f.count)
    return specs, keys


def campaign(model, data, fault_models, trials: int = 10, seed: int = 0,
             metric: str = "accuracy", store=None, executor=None, batch_size: int = 512, *,
             layers=None, include_bias: bool = False, include_norm: bool = False,
             margin: float | None = None, confidence: float = 0.95, min_trials: int = 5,
             clean: bool = True, variant: str = "baseline", model_name: str | None = None,
             dataset_name: str | None = None, study: str = "faultlab.campaign", progress=None,
             run_config: dict | None = None):
    """Run ``trials`` seeded fault-injection trials per fault model; return the result rows.

    ``fault_models``: BitFlip / StuckAt (weight faults, injected in place with :func:`inject`) and
    NeuronFault (activation faults through pytorchfi); a tuple is one point that combines them.
    With ``clean`` one fault-free row (``fault_model="none"``, rate 0) is added. ``data``: a
    ``hwlab.data.Split`` or an ``(x, y)`` pair. Each trial's seed is ``derive_seed(seed, key)`` of
    its key (``<point>|trial=<t>``), so the table does not depend on the ``executor`` (None, an
    Executor, or a spec such as ``"process:2"`` / ``"dask-local:2"``) or on completion order; only
    ``latency_ms`` and ``extra.inject_ms`` (wall times) differ.

    With a ``store`` (a ``hwlab.store.Store`` or a path) the run is resumable: started again with
    the same arguments after a kill, only the missing trials run. The run row's config records
    fingerprints of the weights, the data and the fault models; resuming a run with different ones
    is an error. With ``margin``, a point stops after the first block of ``min_trials`` trials
    (and each further block) whose Student-t interval at ``confidence`` has a half-width
    <= ``margin`` (decided on whole blocks in key order, so still executor-independent).

    Returns a DataFrame with the store's result columns (``extra`` as JSON text: n_faults,
    n_changed = bits that actually changed, eligible_bits, inject_ms, ...), ordered by point and
    trial. See :func:`faultlab.summarize` for intervals. ``study`` names the run in the store and
    ``run_config`` adds fields to its stored config (a study passes its Config); ``progress`` is
    called as ``progress(done, total, key)``.
    """
    specs, keys = _check_args(model, fault_models, trials, seed, metric, batch_size, margin,
                              confidence, min_trials, layers, include_bias, include_norm)
    x, y, data_name = _xy(data)
    if isinstance(layers, str):
        layers = [layers]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = x.to(device=device, dtype=input_dtype(model))
    y = y.to(device)
    prints = {"weights": weights_fingerprint(model), "data": _tensor_hash(x, y),
              "fault_models": hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]}
    identity = {
        **(run_config or {}),  # a study's Config fields first; the campaign's own win
        "variant": variant, "model": model_name, "dataset": dataset_name or data_name,
        "fault_models": keys, "trials": int(trials), "seed": int(seed), "metric": metric,
        "layers": list(layers) if layers is not None else None, "include_bias": include_bias,
        "include_norm": include_norm, "margin": margin, "confidence": confidence,
        "min_trials": int(min_trials), "clean": clean, "batch_size": int(batch_size),
    }
    payload = Payload(model, x, y, "|".join(prints.values()))
    common = {"variant": variant, "model": model_name, "dataset": dataset_name or data_name,
              "params": sum(p.numel() for p in model.parameters())}
    with ExitStack() as stack:
        store = _open_store(store, stack)
        run_id = _open_run(store, study, identity, prints)
        ex = executor
        if isinstance(executor, str):
            from hwlab.executors import get_executor

            ex = stack.enter_context(get_executor(executor))
        check(ex is None or isinstance(ex, Executor), "executor", "campaign",
              "None, an executor spec string or a concurrent.futures.Executor", executor)
        if _local_workers(ex):
            payload.spill(stack.enter_context(tempfile.TemporaryDirectory(prefix="faultlab-")))

        def trial(spec, t, key):
            from hwlab.studies import derive_seed

            return Trial(payload, spec, t, derive_seed(seed, key),
                         tuple(layers) if layers is not None else None, include_bias,
                         include_norm, int(batch_size))

        order = {}
        try:
            _run(store, run_id, specs, keys, trials, clean, margin, confidence, min_trials,
                 trial, ex, progress, common, order)
        except BaseException:
            store.finish_run(run_id, "failed")
            raise
        store.finish_run(run_id, "done")
        df = store.results(run_id=run_id)
    df = df.assign(_order=df["key"].map(order)).sort_values("_order", kind="stable")
    return df.drop(columns="_order").reset_index(drop=True)


def _local_workers(ex) -> bool:
    """True for executors whose workers share this machine's files (process pool, local Dask)."""
    from concurrent.futures import ProcessPoolExecutor

    return isinstance(ex, ProcessPoolExecutor) or getattr(ex, "cluster", None) is not None


def _open_store(store, stack):
    from hwlab.store import Store

    if isinstance(store, Store):
        return store
    if store is None:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="faultlab-"))
        return Store(f"{tmp}/campaign.sqlite")
    return Store(store)


def _open_run(store, study, identity, prints) -> str:
    ident = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    run_id = store.open_run(study, {**identity, "fingerprints": prints}, fingerprint=ident)
    stored = store.config(run_id).get("fingerprints", {})
    for what in ("weights", "data", "fault_models"):
        if stored.get(what) not in (None, prints[what]):
            store.finish_run(run_id, "failed")
            raise fail({"weights": "model", "data": "data"}.get(what, what), "campaign",
                       f"the same {what} as when run {run_id} was started (fingerprint "
                       f"{stored[what]}); to start a new run use another store or variant",
                       f"{what} fingerprint {prints[what]}")
    return run_id


def _run(store, run_id, specs, keys, trials, clean, margin, confidence, min_trials, trial,
         ex, progress, common, order):
    from hwlab.studies import run_items

    if clean:
        order["none|trial=0"] = 0
        run_items(store, run_id, {"none|trial=0": trial((), 0, "none|trial=0")}, run_trial,
                  ex, None, common)
    for i, k in enumerate(keys):
        for t in range(trials):
            order[f"{k}|trial={t}"] = 1 + i * trials + t
    block = trials if margin is None else min(trials, min_trials)
    active = list(range(len(specs)))
    done_total = 0
    for start in range(0, trials, block):
        stop = min(trials, start + block)
        items = {f"{keys[i]}|trial={t}": trial(specs[i], t, f"{keys[i]}|trial={t}")
                 for i in active for t in range(start, stop)}

        def report(done, total, msg="", base=done_total):
            if progress is not None:
                progress(base + done, len(keys) * trials, msg)

        run_items(store, run_id, items, run_trial, ex, report, common)
        done_total += len(items)
        if margin is not None:
            acc = store.results(run_id=run_id).set_index("key")["accuracy"]
            keep = []
            for i in active:
                vals = [acc.get(f"{keys[i]}|trial={t}", math.nan) for t in range(stop)]
                _, low, high = mean_ci(vals, confidence)
                if not (high - low) / 2 <= margin:
                    keep.append(i)
            active = keep
        if not active:
            break
