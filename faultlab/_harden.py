"""Selective hardening: protect the most vulnerable layers / bit fields with ECC or TMR, cheaply.

From the layer x bit vulnerability table (:func:`faultlab.vulnerability` at the target bit error
rate ``p``), :func:`plan_hardening` builds a greedy chain of protection plans, each adding the
upgrade (a layer's field -> ``"sign+exponent"`` / ``"sign+msb"`` or whole ``"word"``; scheme
``"secded"`` or ``"tmr"``) with the largest predicted accuracy gain per extra memory bit, from no
protection to every word under TMR. :func:`harden` then verifies every plan of the chain on fresh
fault maps (seeds never used by the table) and returns the cheapest plan that keeps accuracy
within ``target`` of clean, with the Pareto set of (memory overhead, accuracy at ``p``).

Protection is modelled as :class:`~faultlab.FaultMap` filtering (:meth:`Plan.filter`), so it
pairs with the unprotected maps of the same seed:

* ``"tmr"`` (triple modular redundancy, majority vote per bit): a faulty bit is outvoted unless one
  of its two other copies is also faulty, so it survives with probability ``1 - (1 - p)^2``;
  faults present only in the two extra copies (probability ``p^2 (1 - p)`` per bit) are not
  simulated. Cost: 2 extra bits per protected bit.
* ``"secded"`` (a (72, 64) single-error-correcting, double-error-detecting code over the protected
  bits, packed word-major into 64-bit codewords): each codeword's 8 check bits fail at rate ``p``;
  a codeword with exactly one error (data or check) is corrected, one with more keeps its data
  errors (detected or miscorrected words are left as they are: no zeroing, no extra flip). This
  is a counting model; the exact Hsiao decoder is ``faultlab.memory.ECC`` (the study's ``secded``
  row). Cost: 8 / 64 = 0.125 extra bits per protected bit.

The predicted drop of a plan is the sum over (layer, bit) of the expected drop at ``p`` (drop per
fault in the table times the expected faults there) times the fraction of faults that survive
the protection (first order: faults taken as additive); the verification, not the prediction,
decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import nn

from faultlab._faults import BitFlip, FaultMap, FaultModel
from faultlab._inject import inject
from faultlab._sample import _sample_faults, sample_faults
from faultlab._stats import mean_ci
from faultlab._vulnerability import vulnerability
from faultlab._words import _DTYPE_NAMES, WORDS, eligible_parameters, layer_of
from hwlab.errors import check, check_number, check_positive_int

__all__ = ["COSTS", "FIELDS", "HardeningResult", "Plan", "Protected", "harden", "plan_hardening"]

COSTS = {"secded": 8 / 64, "tmr": 2.0}  # extra stored bits per protected bit: (72,64) code, TMR
FIELDS = {  # protectable bit fields per storage dtype (bit 0 = LSB)
    "float32": {"sign+exponent": tuple(range(23, 32)), "word": tuple(range(32))},
    "float16": {"sign+exponent": tuple(range(10, 16)), "word": tuple(range(16))},
    "bfloat16": {"sign+exponent": tuple(range(7, 16)), "word": tuple(range(16))},
    "int8": {"sign": (7,), "sign+msb": (6, 7), "word": tuple(range(8))},
}
CODEWORD = 64  # data bits per SEC-DED codeword
CHECK_BITS = 8  # check bits per codeword of the (72, 64) code


def survival(scheme: str, rate: float) -> float:
    """Fraction of faulty protected bits that stay faulty at bit error rate ``rate``."""
    if scheme == "tmr":
        return 1.0 - (1.0 - rate) ** 2
    return 1.0 - (1.0 - rate) ** (CODEWORD - 1 + CHECK_BITS)  # another error in the codeword


@dataclass(frozen=True)
class Plan:
    """Protection per parameter: ``{param name: (bits, scheme)}``, its cost and prediction."""

    protect: tuple[tuple[str, tuple[int, ...], str, str], ...]  # (param, bits, scheme, field)
    overhead: float  # extra memory bits / all eligible weight bits
    predicted_drop: float  # sum of table drops x surviving fraction (see module docstring)

    def label(self) -> str:
        return "; ".join(f"{p}:{f}/{s}" for p, _, s, f in self.protect) or "none"

    def filter(self, fmap: FaultMap, rate: float, seed: int = 0) -> FaultMap:
        """The faults of ``fmap`` that survive this plan's protection at bit error rate ``rate``.

        Deterministic for ``seed`` (the TMR votes and the SEC-DED check-bit faults are drawn from
        it); unprotected faults are kept unchanged, so the result is a subset of ``fmap``.
        """
        return _filter(self, fmap, float(rate), int(seed))

    def fault_model(self, rate: float) -> Protected:
        """``BitFlip(rate)`` on memory protected by this plan (for ``faultlab.campaign``)."""
        return Protected(self, BitFlip(rate=rate))


@dataclass(frozen=True)
class Protected(FaultModel):
    """``inner`` (a ``BitFlip`` at a rate) on memory protected by ``plan``: a fault model, so a
    plan runs in ``faultlab.campaign`` / ``inject`` / ``sample_faults`` like any other. Each draw
    samples ``inner`` and filters it with :meth:`Plan.filter` (seeded by the draw's seed)."""

    plan: Plan
    inner: FaultModel

    def __post_init__(self):
        check(isinstance(self.plan, Plan), "plan", "Protected", "a faultlab Plan", self.plan)
        ok = isinstance(self.inner, FaultModel) and self.inner.rate is not None
        check(ok, "inner", "Protected", "a fault model with a rate (e.g. BitFlip(rate=p))",
              self.inner)

    rate = property(lambda self: self.inner.rate)
    count = None
    bits = None
    label = property(lambda self: f"{self.inner.label}@harden")

    def to_dict(self) -> dict:
        return {**self.inner.to_dict(), "fault": self.label, "plan": self.plan.label()}

    def _sample_map(self, model, seed, layers, include_bias, include_norm, caller):
        raw = _sample_faults(model, self.inner, seed, layers, include_bias, include_norm, caller)
        return self.plan.filter(raw, self.inner.rate, seed)


def _filter(plan: Plan, fmap: FaultMap, rate: float, seed: int) -> FaultMap:
    keep = np.ones(len(fmap), dtype=bool)
    rng = np.random.default_rng([seed, 0x68617264])  # "hard": separate from any map stream
    by_name = {p: (bits, s) for p, bits, s, _ in plan.protect}
    for i, name in enumerate(fmap.names):
        if name not in by_name or len(fmap) == 0:
            continue
        bits, scheme = by_name[name]
        rank = np.full(64, -1, dtype=np.int64)
        rank[list(bits)] = np.arange(len(bits))
        sel = np.flatnonzero((fmap.param == i) & (rank[fmap.bit.astype(np.int64)] >= 0))
        if sel.size == 0:
            continue
        if scheme == "tmr":
            keep[sel] = rng.random(sel.size) < survival("tmr", rate)
            continue
        pos = fmap.index[sel] * len(bits) + rank[fmap.bit[sel].astype(np.int64)]
        words, inverse, data_errors = np.unique(pos // CODEWORD, return_inverse=True,
                                                return_counts=True)
        check_errors = rng.binomial(CHECK_BITS, rate, size=words.size)
        corrected = (data_errors + check_errors) == 1
        keep[sel[corrected[inverse]]] = False
    return FaultMap(fmap.names, fmap.dtypes, fmap.param[keep], fmap.index[keep],
                    fmap.bit[keep], fmap.kind[keep], fmap.eligible_bits, fmap.seed)


def _layer_params(model: nn.Module) -> dict[str, tuple[str, int, str, dict]]:
    """{table entry: (parameter name, words, dtype name, protectable fields)} of the eligible
    weights: an entry is a layer (module name), or one stored-code parameter of a
    :func:`faultlab.quantize` model (element codes and scale codes apart, as in
    :func:`faultlab.vulnerability`), so a plan can protect a layer's scale words alone."""
    from faultlab._format_fields import code_fields
    from faultlab._formats import storage

    stored = storage(model)
    out = {}
    for pname, t in eligible_parameters(model, caller="plan_hardening"):
        dtype = _DTYPE_NAMES[t.dtype]
        if pname in stored:
            out[pname] = (pname, t.numel(), dtype, code_fields(stored[pname]))
        else:
            check(dtype in FIELDS, "model", "plan_hardening", "weights stored as "
                  f"{', '.join(FIELDS)} or as faultlab.quantize codes", f"{pname} ({dtype})")
            out[layer_of(pname)] = (pname, t.numel(), dtype, FIELDS[dtype])
    return out


def plan_hardening(model: nn.Module, table: pd.DataFrame, rate: float, costs=None,
                   schemes=("secded", "tmr")) -> list[Plan]:
    """Candidate plans: the greedy chain plus every (field, scheme) applied to all layers.

    ``table``: :func:`faultlab.vulnerability` rows (layer, bit, accuracy_drop, n_faults) of this
    model, at any fault count or rate: each (layer, bit) is scored by its drop per fault times
    the expected number of faults there at ``rate`` (capped at the clean accuracy). One fault per
    trial (the default table) measures rare but critical bits of small layers that a table at a
    low rate misses (no fault lands there in a few trials). ``costs``: extra bits per protected bit per scheme (default
    :data:`COSTS`). Each greedy step takes, over all layers, the change of one layer's protection
    with the largest predicted drop reduction per extra bit (a change that lowers both wins at
    once); the uniform plans (e.g. every word under SEC-DED, the usual whole-memory ECC) are
    added so that no selective choice is ever compared only with itself. Sorted by overhead.
    """
    c = "plan_hardening"
    check(isinstance(model, nn.Module), "model", c, "a torch.nn.Module", type(model).__name__)
    check(isinstance(table, pd.DataFrame) and {"layer", "bit", "accuracy_drop"} <= set(table),
          "table", c, "a faultlab.vulnerability DataFrame", type(table).__name__)
    rate = check_number(rate, "rate", c, 0, 1, inclusive=(False, False),
                        constraint="a bit error rate in (0, 1)")
    costs = dict(COSTS if costs is None else costs)
    check(len(schemes) > 0 and all(s in COSTS for s in schemes), "schemes", c,
          f"a non-empty tuple from {', '.join(COSTS)}", schemes)
    for s in schemes:
        check_number(costs.get(s), f"costs[{s!r}]", c, 0, inclusive=(False, True))
    layers = _layer_params(model)
    known = set(table["layer"])
    check(known <= set(layers), "table", c, f"layers of this model ({', '.join(layers)})",
          sorted(known - set(layers)))
    drop = {}  # (layer, bit) -> expected drop at `rate`: per-fault drop x expected faults
    for r in table.itertuples():
        n = float(getattr(r, "n_faults", 1.0))
        per_fault = max(float(r.accuracy_drop), 0.0) / n if n > 0 else 0.0
        expected = layers[r.layer][1] * rate  # faults at this bit of this layer at `rate`
        cap = float(getattr(r, "clean_accuracy", 1.0))
        drop[(r.layer, int(r.bit))] = min(per_fault * expected, cap)
    total_bits = sum(n * WORDS_BITS[d] for _, n, d, _ in layers.values())
    options = []  # per layer: (field name, bits, scheme) ordered weakest -> strongest
    order = sorted(schemes, key=lambda s: costs[s])
    for layer, (_, _, _, layer_fields) in layers.items():
        fields = sorted(layer_fields.items(), key=lambda kv: len(kv[1]))
        options.append([(f, bits, s) for f, bits in fields for s in order])
    state = {layer: None for layer in layers}

    def layer_drop(layer, opt):
        bits = set(opt[1]) if opt else set()
        width = WORDS_BITS[layers[layer][2]]
        return sum(drop.get((layer, b), 0.0) * (survival(opt[2], rate) if b in bits else 1.0)
                   for b in range(width))

    def layer_cost(layer, opt):
        return 0.0 if opt is None else layers[layer][1] * len(opt[1]) * costs[opt[2]]

    def make_plan():
        prot = tuple((layers[l][0], opt[1], opt[2], opt[0]) for l, opt in state.items() if opt)
        over = sum(layer_cost(l, o) for l, o in state.items()) / total_bits
        return Plan(prot, over, sum(layer_drop(l, o) for l, o in state.items()))

    chain = [make_plan()]
    while True:  # each step strictly lowers the predicted drop, so it ends
        best = None
        for (layer, cur), opts in zip(state.items(), options):
            for opt in opts:
                gain = layer_drop(layer, cur) - layer_drop(layer, opt)
                if opt == cur or gain <= 1e-12:
                    continue
                extra = layer_cost(layer, opt) - layer_cost(layer, cur)
                score = gain / extra if extra > 0 else math.inf
                if best is None or score > best[0]:
                    best = (score, layer, opt)
        if best is None:
            break
        state[best[1]] = best[2]
        chain.append(make_plan())
    for f, s in {(f, s) for opts in options for f, _, s in opts}:  # one field + scheme everywhere
        for layer, opts in zip(state, options):
            same = [o for o in opts if o[0] == f and o[2] == s]
            state[layer] = same[0] if same else None
        chain.append(make_plan())
    unique = {p.protect: p for p in chain}
    return sorted(unique.values(), key=lambda p: (p.overhead, -p.predicted_drop))


WORDS_BITS = {_DTYPE_NAMES[t]: v[0] for t, v in WORDS.items()}


@dataclass
class HardeningResult:
    """What :func:`harden` returns: the chosen plan, every verified plan and its Pareto set."""

    plan: Plan | None  # cheapest verified plan within target (None: none was)
    clean_accuracy: float
    rate: float
    target: float
    verified: pd.DataFrame  # plan, overhead, predicted_drop, accuracy, std, trials, meets
    table: pd.DataFrame = field(repr=False)  # the vulnerability table the chain came from
    chain: list = field(default_factory=list, repr=False)

    @property
    def pareto(self) -> pd.DataFrame:
        """Verified plans that no other plan beats on both overhead and accuracy."""
        v = self.verified.sort_values(["overhead", "accuracy"], ascending=[True, False])
        best = -np.inf
        keep = []
        for i, acc in zip(v.index, v.accuracy):
            if acc > best:
                keep.append(i)
                best = acc
        return v.loc[keep].reset_index(drop=True)


def harden(model: nn.Module, data, rate: float, target: float = 0.01, trials: int = 10,
           seed: int = 0, eval_size: int | None = None, table_trials: int = 5, costs=None,
           schemes=("secded", "tmr"), table: pd.DataFrame | None = None,
           confidence: float = 0.9, progress=None, leaf_modules=()) -> HardeningResult:
    """Cheapest protection keeping accuracy within ``target`` of clean at bit error rate ``rate``.

    Measures the vulnerability table with one bit flip per trial (``table_trials`` trials per
    layer and bit; or takes ``table``), builds the greedy chain (:func:`plan_hardening`) and evaluates every plan on
    ``trials`` fresh maps (``BitFlip(rate)`` drawn from ``derive_seed(seed, "harden-verify|t")``,
    each filtered by the plan); the same maps for every plan (paired). The chosen plan is the
    cheapest whose accuracy is >= clean - ``target`` with margin: the lower bound of the
    two-sided Student-t interval over the trials at ``confidence`` (0.9: a one-sided 95 % bound;
    the mean alone picks plans that fail on fresh maps half the time). The model is restored
    bit-exactly. ``leaf_modules``: submodules the vulnerability table's trace keeps opaque
    (see :func:`faultlab.vulnerability`).
    """
    from hwlab.data import as_xy

    c = "harden"
    check(isinstance(model, nn.Module), "model", c, "a torch.nn.Module", type(model).__name__)
    target = check_number(target, "target", c, 0, 1, inclusive=(True, False),
                          constraint="an accuracy drop in [0, 1)")
    trials = check_positive_int(trials, "trials", c)
    table_trials = check_positive_int(table_trials, "table_trials", c)
    x, y = as_xy(data, c, limit=eval_size)
    if table is None:
        table = vulnerability(model, (x, y), fault=1, trials=table_trials, seed=seed,
                              progress=progress, leaf_modules=leaf_modules)
    chain = plan_hardening(model, table, rate, costs, schemes)
    verified, clean = verify_plans(model, (x, y), chain, rate, trials, seed)
    confidence = check_number(confidence, "confidence", c, 0, 1, inclusive=(False, False))
    low = [mean_ci(a, confidence)[1] if trials > 1 else a[0] for a in verified.pop("_accs")]
    verified["ci_low"] = low
    verified["meets"] = verified.ci_low >= clean - target
    ok_rows = verified[verified.meets]
    chosen = chain[int(ok_rows.overhead.idxmin())] if len(ok_rows) else None
    return HardeningResult(chosen, clean, float(rate), float(target), verified, table, chain)


def verify_plans(model, data, plans, rate, trials, seed):
    """Mean accuracy of each plan on ``trials`` fresh, shared maps; returns (DataFrame, clean).

    Columns: plan, overhead, predicted_drop, accuracy (mean), std, trials, _accs (per trial)."""
    from hwlab.studies import derive_seed
    from hwlab.train import evaluate

    was = model.training
    model.eval()
    try:
        clean = evaluate(model, data)
        maps = [sample_faults(model, BitFlip(rate=rate), seed=derive_seed(seed,
                                                                           f"harden-verify|{t}"))
                for t in range(trials)]
        rows = []
        for plan in plans:
            accs = []
            for t, fmap in enumerate(maps):
                with inject(model, plan.filter(fmap, rate, seed=derive_seed(seed, f"vote|{t}"))):
                    accs.append(evaluate(model, data))
            rows.append({"plan": plan.label(), "overhead": plan.overhead,
                         "predicted_drop": plan.predicted_drop, "accuracy": float(np.mean(accs)),
                         "std": float(np.std(accs, ddof=1)) if trials > 1 else float("nan"),
                         "trials": trials, "_accs": accs})
    finally:
        model.train(was)
    return pd.DataFrame(rows), clean
