"""Fault campaigns: many seeded trials per fault model, resumable through the results store."""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import Executor

import numpy as np
import torch
from torch import nn

from faultlab._campaign_data import CACHE_BYTES
from faultlab._engine import Runner, evaluation, runner
from faultlab._faults import FAULT_MODELS, BitFlip, StuckAt
from faultlab._neuron import NeuronFault, check_neuron_count
from faultlab._plain import _bit_table
from faultlab._stats import interval
from faultlab._trial import Trial
from faultlab._words import eligible_parameters
from faultlab.systolic._faults import PEFault
from hwlab.errors import check, check_bool, check_int, check_number, fail, is_int
from hwlab.executors import SPEC_FORMS
from hwlab.graph import check_leaf_modules
from hwlab.metrics import resolve_metrics
from hwlab.seeds import _derive_seed
from hwlab.studies import run_context

__all__ = ["campaign", "point_key", "weights_fingerprint"]


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 (16 hex) over every parameter and buffer: name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
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
        check(isinstance(f, (*FAULT_MODELS, NeuronFault, PEFault)), "fault_models", "campaign",
              "BitFlip, StuckAt, NeuronFault or PEFault objects (or tuples of them)", fm)
    check(len(items) > 0, "fault_models", "campaign", "non-empty entries", fm)
    check(sum(isinstance(f, PEFault) for f in items) <= 1, "fault_models", "campaign",
          "points with at most one PEFault", fm)
    check(sum(isinstance(f, NeuronFault) for f in items) <= 1, "fault_models", "campaign",
          "points with at most one NeuronFault", fm)
    return items


def _check_args(model, fault_models, trials, seed, metrics, batch_size, margin, confidence,
                min_trials, layers, include_bias, include_norm, executor, delayed_start,
                cache_bytes):
    c = "campaign"
    check(isinstance(model, nn.Module), "model", c, "a torch.nn.Module", type(model).__name__)
    check(isinstance(fault_models, (list, tuple)) and len(fault_models) > 0, "fault_models", c,
          "a non-empty list of fault models", fault_models)
    for name, v, lo in (("trials", trials, 1), ("seed", seed, 0), ("batch_size", batch_size, 1),
                        ("min_trials", min_trials, 2), ("cache_bytes", cache_bytes, 0)):
        check_int(v, name, c, lo)
    resolved = resolve_metrics(metrics, c)
    if margin is not None:
        check_number(margin, "margin", c, 0, 1 if resolved[0].proportion else None,
                     inclusive=(False, False), finite=False,
                     constraint="None or a number in (0, 1)")
    check_number(confidence, "confidence", c, 0, 1, inclusive=(False, False))
    check_bool(delayed_start, "delayed_start", c)
    if isinstance(executor, str):
        from hwlab.executors import parse_spec

        try:
            parse_spec(executor)
        except ValueError:
            raise fail("executor", c, f"None, an Executor or one of {SPEC_FORMS}",
                       executor) from None
    else:
        check(executor is None or isinstance(executor, Executor), "executor", c,
              "None, an executor spec string or a concurrent.futures.Executor", executor)
    specs = [_as_spec(fm) for fm in fault_models]
    keys = [point_key(s) for s in specs]
    check(len(set(keys)) == len(keys), "fault_models", c, "distinct fault models", keys)
    if any(isinstance(f, FAULT_MODELS) for s in specs for f in s):
        chosen = eligible_parameters(model, layers, include_bias, include_norm, c)
        total = sum(t.numel() for _, t in chosen)
        for s in specs:
            for f in s:
                if isinstance(f, (BitFlip, StuckAt)):
                    _, per_word = _bit_table(f, chosen, c)
                    check(f.count is None or f.count <= total * int(per_word.min()), "count", c,
                          "at most the number of eligible bits", f.count)
    return specs, keys, resolved


def _dtype(model: nn.Module) -> str:
    """The number format of the weights faults hit, e.g. ``float32`` or ``int8`` (+-joined)."""
    try:
        chosen = eligible_parameters(model, caller="campaign")
    except ValueError:
        chosen = list(model.named_parameters())
    names = dict.fromkeys(str(t.dtype).replace("torch.", "") for _, t in chosen)
    return "+".join(names) or None


def campaign(model, data, fault_models, *, trials: int = 10, seed: int = 0,
             metrics=("accuracy",), store=None, executor=None, batch_size: int = 512,
             layers=None, include_bias: bool = False, include_norm: bool = False,
             margin: float | None = None, confidence: float = 0.95, min_trials: int = 5,
             clean: bool = True, variant: str = "baseline", model_name: str | None = None,
             dataset_name: str | None = None, study: str = "faultlab.campaign", progress=None,
             run_config: dict | None = None, delayed_start: bool = True,
             cache_bytes: int = CACHE_BYTES, nested: bool = False, maps_per_pass="auto",
             leaf_modules=()):
    """Run ``trials`` seeded fault-injection trials per fault model; return the result rows.

    ``fault_models``: weight fault models (BitFlip, StuckAt, faultlab.memory's models; injected in
    place with :func:`inject`) and NeuronFault (activation faults through pytorchfi); a tuple is
    one point that combines them. With ``clean`` one fault-free row (``fault_model="none"``,
    rate 0) is added. ``data``: a ``hwlab.data.Split``, an ``(x, y)`` pair, a ``DataLoader`` or
    any re-iterable of ``(x, y)`` batches (streamed: memory is one batch plus the model plus
    the bounded caches; a stream must yield the same batches on every pass).

    ``metrics``: names among ``accuracy``, ``sdc``, ``critical_sdc``, ``top5``, ``loss`` (see
    :mod:`hwlab.metrics` for their definitions and denominators) and/or user callables
    ``metric(logits, y, clean_logits) -> float``; each is a result column (a user metric's
    column is added to the store with ``Store.ensure_columns``). The fault-free logits are
    computed once per campaign, before the run opens, and kept per batch (only their top-1 when
    no user metric needs them) while they fit in ``cache_bytes``; beyond that each trial
    recomputes them batch by batch (lifting its weight faults for that batch).

    Before any run is opened the arguments, the executor spec and the data are checked, and the
    model is run on the data: a model that rejects the data's shape, or labels outside its
    outputs, is an error naming both, and no run row is created.

    ``delayed_start`` (default on): a trial whose faults change no stored bit reuses the
    fault-free result without inference (fault dropping), and a trial whose faulty parameters
    are all read after a cut point of the traced graph starts from the cached fault-free
    activation there (SCI-FI's delayed start); the rows are identical to the full path
    (``delayed_start=False``), only ``latency_ms`` differs. ``leaf_modules``: submodules the
    trace keeps opaque (names or classes, see :func:`hwlab.graph.trace`): the fix for a
    submodule fx cannot trace, which otherwise turns delayed start off with a logged warning.

    Each trial's seed is ``derive_seed(seed, key)`` of its key (``<point>|trial=<t>``), so the
    table does not depend on the ``executor`` (None, an Executor, or a spec such as
    ``"process:2"`` / ``"dask-local:2"``) or on completion order; only ``latency_ms`` and
    ``extra.inject_ms`` (wall times) differ.

    ``store``: None keeps the rows in memory (nothing is written to disk); a
    ``hwlab.store.Store`` or a path makes the run resumable through ``run_items``: started
    again with the same arguments after a kill, only the missing trials run. The run's config
    records fingerprints of the weights, the data and the fault models; resuming with different
    ones is an error that leaves the earlier run as it was. With ``margin``, a point stops after
    the first block of ``min_trials`` trials (and each further block) whose interval of the
    first metric at ``confidence`` (:func:`faultlab.proportion_ci` for a proportion) has a
    half-width <= ``margin`` (decided on whole blocks in key order: executor-independent).

    Returns a DataFrame with the store's result columns (the number format in ``dtype``;
    ``extra`` as JSON text: n_faults, n_changed = bits that actually changed, n_samples,
    eligible_bits, inject_ms, ...), ordered by point and trial. See :func:`faultlab.summarize`.
    ``study`` names the run in the store and ``run_config`` adds fields to its stored config (a
    study passes its Config); ``progress`` is called as ``progress(done, total, key)``.

    ``nested=True`` (Stutz et al.): points that differ only in their rates form a family whose
    trial t draws one set of candidates with one uniform per unit (seeded by the family, not the
    rate) and keeps those below each rate, so a trial's map at a lower rate is a subset of its
    map at a higher rate (``faultlab.memory.Nested``) and curves are monotone per trial.

    ``maps_per_pass`` (``"auto"`` or an integer >= 1): trials evaluated per forward pass
    (:mod:`faultlab._batched`: the parameters faulty in some of the B maps are stacked and run
    under ``torch.func.vmap``; trials with activation or PE faults run one at a time). ``"auto"``
    is 1 on a CPU (rows bit-identical to one map at a time) and a short measurement on other
    devices (:func:`faultlab._batched.choose_maps_per_pass`); with B > 1 metrics agree up to
    floating-point reassociation in the batched kernels.
    """
    specs, keys, resolved = _check_args(
        model, fault_models, trials, seed, metrics, batch_size, margin, confidence, min_trials,
        layers, include_bias, include_norm, executor, delayed_start, cache_bytes)
    if isinstance(layers, str):
        layers = [layers]
    nested = check_bool(nested, "nested", "campaign")
    leaf_modules = check_leaf_modules(model, leaf_modules, "campaign")
    check(maps_per_pass == "auto" or is_int(maps_per_pass, 1), "maps_per_pass", "campaign",
          "'auto' or an integer >= 1", maps_per_pass)
    seed_of = dict(zip(keys, keys))  # point -> the key its trial seeds derive from
    if nested:
        from faultlab.memory._nested import nest_specs

        specs, seed_keys = nest_specs(specs, keys)
        seed_of = dict(zip(keys, seed_keys))
    full = clean or delayed_start or margin is not None or any(
        m.needs_clean_logits or m.needs_clean_top1 for m in resolved)
    ev = evaluation(model, data, metrics, batch_size=int(batch_size), delayed_start=delayed_start,
                    cache_bytes=int(cache_bytes), leaf_modules=leaf_modules, full=full,
                    model_name=model_name, caller="campaign")
    cdata, fault_free = ev.data, ev.clean
    if maps_per_pass == "auto":
        from faultlab._batched import choose_maps_per_pass

        maps_per_pass = choose_maps_per_pass(model, next(iter(cdata.batches()))[0])
    neurons = [f for s in specs for f in s if isinstance(f, NeuronFault)]
    if neurons:
        sample = next(iter(cdata.batches()))[0]
        for f in neurons:
            check_neuron_count(model, f, sample, "campaign")
    prints = {"weights": weights_fingerprint(model), "data": fault_free.fingerprint,
              "fault_models": hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]}
    names = [m.name if m.fn is None else f"{m.name}:{getattr(m.fn, '__qualname__', '?')}"
             for m in resolved]
    identity = {
        **(run_config or {}),  # a study's Config fields first; the campaign's own win
        "variant": variant, "model": model_name, "dataset": dataset_name or cdata.name,
        "fault_models": keys, "trials": int(trials), "seed": int(seed), "metrics": names,
        "layers": list(layers) if layers is not None else None, "include_bias": include_bias,
        "include_norm": include_norm, "margin": margin, "confidence": confidence,
        "min_trials": int(min_trials), "clean": clean, "batch_size": int(batch_size),
        **({"nested": True} if nested else {}),
    }
    ident = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    common = {"variant": variant, "model": model_name, "dataset": dataset_name or cdata.name,
              "params": sum(p.numel() for p in model.parameters()), "dtype": _dtype(model)}
    store = _open_store(store)
    store.ensure_columns([m.name for m in resolved if m.fn is not None])
    # the model, data and fault-free pass reach each worker once (not with every chunk)
    with runner(ev, executor) as run:
        chosen, base = tuple(layers) if layers is not None else None, int(seed)  # checked

        def trial(spec, t, point):
            return Trial(spec, t, _derive_seed(base, f"{seed_of.get(point, point)}|trial={t}"),
                         chosen, include_bias, include_norm, int(batch_size))

        order = {}
        with run_context(store, study, {**identity, "fingerprints": prints}, ident) as run_id:
            _check_resume(store, run_id, prints)
            _run(store, run_id, specs, keys, trials, clean, margin, confidence, min_trials,
                 trial, run, progress, common, order, resolved[0], fault_free, maps_per_pass)
        df = store.results(run_id=run_id)
    rank = np.array([order.get(k, len(order)) for k in df["key"].tolist()])
    if (np.diff(rank) >= 0).all():  # stored in order already (serial): no copy
        return df
    return df.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)


def _open_store(store):
    from hwlab.store import MemoryStore, Store

    if store is None:
        return Store.memory()  # rows stay in memory: no SQLite file at all (#13.13, #14.1)
    if isinstance(store, (Store, MemoryStore)):
        return store
    return Store(store)


def _check_resume(store, run_id, prints) -> None:
    """Refuse to resume a run whose weights, data or fault models differ (nothing is written)."""
    stored = store.config(run_id).get("fingerprints", {})
    for what in ("weights", "data", "fault_models"):
        if stored.get(what) not in (None, prints[what]):
            raise fail({"weights": "model", "data": "data"}.get(what, what), "campaign",
                       f"the same {what} as when run {run_id} was started (fingerprint "
                       f"{stored[what]}); to start a new run use another store or variant",
                       f"{what} fingerprint {prints[what]}")


def _run(store, run_id, specs, keys, trials, clean, margin, confidence, min_trials, trial,
         run, progress, common, order, first, fault_free, maps_per_pass=1):
    if clean:
        order["none|trial=0"] = 0
        inline = Runner(None, run.shared)  # measured in prepare: run here
        inline.run(store, run_id, {"none|trial=0": trial((), 0, "none")}, None, common)
    for i, k in enumerate(keys):
        for t in range(trials):
            order[f"{k}|trial={t}"] = 1 + i * trials + t
    block = trials if margin is None else min(trials, min_trials)
    active = list(range(len(specs)))
    done_total = 0
    for start in range(0, trials, block):
        stop = min(trials, start + block)
        items = {f"{keys[i]}|trial={t}": trial(specs[i], t, keys[i])
                 for i in active for t in range(start, stop)}

        def report(done, total, msg="", base=done_total):
            if progress is not None:
                progress(base + done, len(keys) * trials, msg)

        run.run(store, run_id, items, report, common, maps_per_pass)
        done_total += len(items)
        if margin is not None:
            values = store.results(run_id=run_id).set_index("key")[first.name]
            keep = []
            for i in active:
                vals = [values.get(f"{keys[i]}|trial={t}", math.nan) for t in range(stop)]
                denom = fault_free.counts.get(first.name)
                counts = None if denom is None else [denom] * len(vals)
                _, low, high = interval(vals, first.name, counts, confidence)
                if not (high - low) / 2 <= margin:
                    keep.append(i)
            active = keep
        if not active:
            break
