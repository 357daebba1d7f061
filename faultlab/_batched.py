"""Batched fault maps: B fault maps of one model evaluated in one forward pass.

Every fault-injection tool runs one faulty model per inference. Here the parameters that are
faulty in at least one of the B maps are copied B times and stacked (``B x *shape``), map ``b``'s
faults are written into slice ``b`` (the same word operations as :func:`faultlab.inject`), and the
model runs once under ``torch.func.vmap`` over ``torch.func.functional_call`` with the stacked
parameters batched and the input unbatched (PyTorch's model-ensembling recipe, applied to only
the faulty parameters). Operations whose inputs are all unbatched run once, unbatched: the
fault-free prefix before the first faulty layer is computed once for all B maps. The model itself
is never modified.

Equality with one map at a time. The prefix is bit-identical (the same operations on the same
tensors). From the first faulty layer on, the batched kernels (batched matmul for a linear layer,
grouped convolution for a convolution) may sum in another order than the unbatched kernel, so the
logits can differ from one-map-at-a-time logits by floating-point reassociation (a few units in
the last place; the tests bound it by ``1e-5`` relative to the logits' scale) and an argmax can
change only on a near tie. The tests check equal accuracies on the zoo's lenet5 and on a
residual model with ``F.relu``.

Where batching pays: on a GPU, one small model leaves the device idle and B maps per pass fill
it. On a CPU it depends on the model: ``benchmarks/faultlab_batched_maps.py`` measured B = 8 at
2.1x one-map-at-a-time for a LeNet-5-size CNN (200 inputs, one core of a loaded machine; the
prefix before the first faulty layer is shared) and 0.58x for a 9.84M-weight MLP (the stacked
copies of large layers cost more than they save); an earlier prototype was 1.1-2.3x slower for a
small CNN. :func:`choose_maps_per_pass` returns 1 on a CPU, so that by default a campaign's rows
are bit-identical to the inject path (no reassociation); pass a B explicitly to use batching
there. On other devices it picks B by a short measurement. A model that vmap cannot run (data-dependent Python control flow,
in-place writes into an unbatched tensor from a batched one) is retried with the input expanded
to the batch (no shared prefix); if that fails too, the error names the model and the fix
(``maps_per_pass=1``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from faultlab import _kernels
from faultlab._faults import FaultMap
from faultlab._inject import _OPS, _bad_entry
from faultlab._words import model_views
from hwlab.errors import check, fail

__all__ = ["BatchedMaps", "choose_maps_per_pass", "map_accuracies"]

log = logging.getLogger(__name__)

_TORCH_WORD = {32: torch.int32, 16: torch.int16, 8: torch.int8}
CANDIDATES = (1, 2, 4, 8, 16, 32)  # maps per pass tried by choose_maps_per_pass
GAIN = 1.10  # a batched pass must be at least 10 % faster per map to replace B = 1


class BatchedMaps:
    """The B maps ``fmaps`` of ``model`` as stacked faulty parameters; :meth:`logits` runs them.

    ``changed[b]``: bits map ``b`` changed (as ``n_changed`` of a campaign row); ``names``: the
    parameters stacked (faulty in some map). The maps are validated like ``inject`` does.
    """

    def __init__(self, model: nn.Module, fmaps, caller: str = "BatchedMaps"):
        check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
              type(model).__name__)
        fmaps = list(fmaps)
        check(len(fmaps) > 0 and all(isinstance(f, FaultMap) for f in fmaps), "fmaps", caller,
              "a non-empty list of FaultMaps", fmaps)
        self.model, self.caller, self.size = model, caller, len(fmaps)
        views = model_views(model)
        entries = [_entries(views, f, caller) for f in fmaps]  # validated: slot, index, bit, op
        slots = sorted({int(s) for e in entries for s in np.unique(e[0])})
        self.names = [views.names[s] for s in slots]
        self.stacked: dict[str, torch.Tensor] = {}
        changed = np.zeros(self.size, dtype=np.int64)
        with torch.no_grad():
            for s, name in zip(slots, self.names):
                p = views.params[s].detach()
                stack = p.unsqueeze(0).expand(self.size, *p.shape).clone()  # B x *shape
                changed += _apply_stacked(stack, int(views.width[s]), int(views.numel[s]),
                                          [(e[1][e[0] == s], e[2][e[0] == s], e[3][e[0] == s])
                                           for e in entries])
                self.stacked[name] = stack
        self.changed = changed.tolist()
        self._expand = False  # True once the shared-prefix form failed for this model

    def _forward(self, x: torch.Tensor, expand: bool) -> torch.Tensor:
        from torch.func import functional_call, vmap

        def one(params, inp):
            return functional_call(self.model, params, (inp,), strict=False)

        if expand:
            return vmap(one, in_dims=(0, 0))(self.stacked, x.expand(self.size, *x.shape))
        return vmap(one, in_dims=(0, None))(self.stacked, x)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every map on the batch ``x``: ``B x n x classes`` (no grad)."""
        if not self.stacked:  # no map has a fault: every map is the fault-free model
            out = self.model(x)  # n x classes
            return out.unsqueeze(0).expand(self.size, *out.shape)
        if not self._expand:
            try:
                return self._forward(x, False)
            except RuntimeError as exc:
                log.info("batched maps: shared prefix failed (%s); input expanded", exc)
                self._expand = True
        try:
            return self._forward(x, True)
        except Exception as exc:
            raise fail("model", self.caller, "a model that torch.func.vmap can run (no "
                       "data-dependent control flow); use maps_per_pass=1 for this model",
                       f"{type(self.model).__name__} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160]})") from exc


def _entries(views, fmap: FaultMap, caller: str):
    """Validated entries of one map as (slot, index, bit, op) arrays (any order)."""
    slots = views.slots(fmap, caller)
    n = len(fmap)
    if n == 0:
        z = np.zeros(0, np.int64)
        return z, z, z.astype(np.uint8), z.astype(np.int8)
    out = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.uint64))
    fast = np.zeros(len(views.names), np.uint8)  # check only: status 5 means "all valid"
    status, k, _, _ = _kernels.inject_map(views.addr, views.width, views.numel, fast, slots,
                                          _OPS, fmap.param, fmap.index, fmap.bit, fmap.kind, *out)
    if status not in (4, 5):
        raise _bad_entry(views, fmap, slots, status, k, caller)
    return slots[fmap.param], fmap.index, fmap.bit, _OPS[fmap.kind]


def _apply_stacked(stack: torch.Tensor, width: int, numel: int, per_map) -> np.ndarray:
    """Write each map's faults into its slice of ``stack``; the bits each map changed."""
    index = np.concatenate([b * numel + idx for b, (idx, _, _) in enumerate(per_map)])
    bit = np.concatenate([bt for _, bt, _ in per_map])
    op = np.concatenate([o for _, _, o in per_map])
    order = np.argsort(index, kind="stable")
    index, bit, op = index[order], bit[order], op[order]
    n = index.shape[0]
    wslot, windex = np.empty(n, np.int64), np.empty(n, np.int64)
    masks = [np.empty(n, np.uint64) for _ in range(3)]
    m = _kernels.group_words(np.zeros(n, np.int64), index, bit, op, wslot, windex, *masks)
    windex = windex[:m]
    ints = stack.view(_TORCH_WORD[width]).view(-1)  # the stacked words, flat
    where = torch.from_numpy(windex).to(ints.device)
    sdtype = np.dtype(f"int{width}")
    x, o, c = (torch.from_numpy(a[:m].astype(f"uint{width}").view(sdtype)).to(ints.device)
               for a in masks)
    old = ints[where]
    new = ((old ^ x) | o) & ~c
    ints[where] = new
    diff = (old ^ new).cpu().numpy().view(f"uint{width}")
    bits = np.unpackbits(diff.view(np.uint8).reshape(m, width // 8), axis=1).sum(axis=1)
    return np.bincount(windex // numel, weights=bits, minlength=len(per_map)).astype(np.int64)


def map_accuracies(model: nn.Module, fmaps, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 512, maps_per_pass: int = 8) -> list[float]:
    """Top-1 accuracy of each map on ``(x, y)``, ``maps_per_pass`` maps per forward pass."""
    fmaps = list(fmaps)
    correct = np.zeros(len(fmaps), dtype=np.int64)
    for lo in range(0, len(fmaps), maps_per_pass):
        group = BatchedMaps(model, fmaps[lo:lo + maps_per_pass], "map_accuracies")
        for start in range(0, x.shape[0], batch_size):
            logits = group.logits(x[start:start + batch_size])  # B x b x classes
            hit = logits.argmax(dim=2) == y[start:start + batch_size]  # B x b
            correct[lo:lo + group.size] += hit.sum(dim=1).cpu().numpy()
    return (correct / x.shape[0]).tolist()


def choose_maps_per_pass(model: nn.Module, x: torch.Tensor, candidates=CANDIDATES,
                         repeats: int = 3, budget_seconds: float = 2.0,
                         measure_on_cpu: bool = False) -> int:
    """Maps per pass for ``model`` on batches like ``x``: 1 on a CPU, else by a short measurement.

    Times one pass per map at B = 1 (plain forward) and a batched pass at each candidate B with
    every eligible weight stacked (the worst case: all layers faulty), ``repeats`` times after a
    warm-up, stopping once ``budget_seconds`` are spent; returns the B with the lowest time per
    map if it beats B = 1 by :data:`GAIN`, else 1. ``measure_on_cpu=True`` measures on a CPU too
    (rows may then differ from the inject path by reassociation, see the module docstring).
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "cpu" and not measure_on_cpu:
        return 1
    from faultlab._words import eligible_parameters

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn) -> float:
        fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync()
        return (time.perf_counter() - t0) / repeats

    names = [n for n, _ in eligible_parameters(model, caller="choose_maps_per_pass")]
    empty = FaultMap(tuple(names), tuple(_dtype(model, n) for n in names),
                     *(np.zeros(0, t) for t in (np.int32, np.int64, np.uint8, np.int8)))
    with torch.no_grad():
        single = timed(lambda: model(x))
        best, best_per_map = 1, single
        start = time.perf_counter()
        for b in candidates:
            if b <= 1 or time.perf_counter() - start > budget_seconds:
                continue
            group = BatchedMaps(model, [empty] * b, "choose_maps_per_pass")
            group.stacked = {n: p.detach().unsqueeze(0).expand(b, *p.shape).clone()
                             for n, p in model.named_parameters() if n in names}
            try:
                per_map = timed(lambda g=group: g.logits(x)) / b
            except (RuntimeError, ValueError) as exc:  # incl. CUDA out of memory
                log.info("maps_per_pass=%d not usable: %s", b, exc)
                break
            if per_map < best_per_map:
                best, best_per_map = b, per_map
    best = best if best_per_map * GAIN <= single else 1
    log.info("maps_per_pass=%d chosen for %s on %s", best, type(model).__name__, device)
    return best


def _dtype(model, name) -> str:
    from faultlab._words import _DTYPE_NAMES

    return _DTYPE_NAMES[dict(model.named_parameters())[name].dtype]


def run_trials(ev, items) -> list[dict]:
    """The campaign's function for ``run_items(..., batch=B)``: B trials in one forward pass.

    ``ev``: the worker's shared campaign evaluator; each item is a ``faultlab._trial.Trial``. A
    trial with one weight fault model (BitFlip, StuckAt or another FaultModel) draws exactly the map :func:`faultlab._trial.run_trial` draws
    (the same sampler and seed); maps that change no bit give the fault-free result (fault
    dropping, as ``Evaluator.run`` does with ``delayed_start``); the others are evaluated
    together with :class:`BatchedMaps` and every metric of the campaign. Any other trial
    (activation or PE faults, several weight fault models, the clean row) runs through
    ``run_trial``. Rows are those of ``run_trial`` (``latency_ms`` and ``inject_ms`` are the
    group's time per map) up to the reassociation described in the module docstring.
    """
    from faultlab._faults import FAULT_MODELS
    from faultlab._sample import _sample_faults
    from faultlab._trial import _point, _row, map_extra, map_seed, run_trial
    from hwlab.metrics import MetricAccumulator

    items = list(items)
    rows: list[dict | None] = [None] * len(items)
    todo = []
    for i, item in enumerate(items):
        if len(item.spec) == 1 and isinstance(item.spec[0], FAULT_MODELS):
            todo.append(i)
        else:
            rows[i] = run_trial(ev, item)
    if not todo:
        return rows
    t0 = time.perf_counter()
    fmaps = {i: _sample_faults(ev.model, items[i].spec[0], map_seed(items[i], 0),
                               items[i].layers, items[i].include_bias, items[i].include_norm,
                               "campaign") for i in todo}
    group = BatchedMaps(ev.model, [fmaps[i] for i in todo], "campaign")
    changed = dict(zip(todo, group.changed))
    run = [i for i in todo if changed[i] or not ev.delayed_start]  # the others are dropped
    t1 = time.perf_counter()
    results = {i: (ev.clean.values, ev.clean.counts, 0.0) for i in todo if i not in run}
    if run:
        if len(run) < len(todo):
            group = BatchedMaps(ev.model, [fmaps[i] for i in run], "campaign")
        accs = [MetricAccumulator(ev.metrics) for _ in run]
        with torch.no_grad():
            for b, (x, y) in enumerate(ev.data.batches()):
                logits = group.logits(x)  # maps x batch x classes
                for acc, lg in zip(accs, logits):
                    ev._update(acc, b, x, lg, y, None)  # the model itself stays fault-free
        per_map = 1e3 * (time.perf_counter() - t1) / len(run)
        results.update({i: (a.result(), a.denominators(), per_map) for i, a in zip(run, accs)})
    inject_ms = 1e3 * (t1 - t0) / len(todo)
    for i in todo:
        point, fmap = _point(ev, items[i]), fmaps[i]
        extra = {"n_faults": len(fmap), "n_changed": int(changed[i]), "inject_ms": inject_ms,
                 "eligible_bits": fmap.eligible_bits, **point.extra, **map_extra(items[i], [fmap])}
        rows[i] = _row(ev, items[i], point.label, point.rate, *results[i], extra)
    return rows
