"""The ``faultlab.mitigation`` study: every weight-fault remedy on the same model, maps and data.

For a zoo model on its dataset, each variant is built once (in the main process; rows ``clean|v``
hold its clean accuracy, memory and latency overhead and build time), then evaluated on the test
split at every rate on ``trials`` fault maps per rate. The maps are paired and nested: trial ``t``
draws ``BitFlip`` at every rate from one uniform per bit with seed ``derive_seed(seed,
"mitigation|t")`` (``faultlab.memory.Nested``), the same seed for every variant, so at trial t all
variants with the same parameter shapes see the same faulty bits and a lower rate's faults are a
subset of a higher one's (``extra.map`` is the fingerprint of the raw map). Variants:

* ``unprotected``: the zoo model (``dtype="int8"``: ``quantize_int8(scheme=...)``);
* ``rquant``: Stutz's robust quantisation (asymmetric, unsigned, rounding), no retraining;
* ``clipact-zero`` / ``clipact-cap``: FT-ClipAct thresholds searched on training data;
* ``ranger``: profiled maxima, capped;
* ``clipping``: retrained with weight clipping at ``w_max`` (:class:`faultlab.ClippedTask`);
* ``randbet`` / ``randbet-clipping``: retrained with RandBET at ``train_rate`` (and ``w_max``);
* ``secded``: the unprotected words in (72,64) SEC-DED memory (``faultlab.memory.ECC``, Hsiao
  decoder, check bits faulty too; its raw maps come from the same seeds but over 72-bit words);
* ``harden``: :func:`faultlab.harden` at ``harden_rate`` on training data; the plan filters the
  shared maps.

Retrained variants use the zoo recipe with ``train_epochs`` epochs. Latency: median forward time
of a test batch (round-robin passes); ``latency_overhead`` compares the fastest passes (robust to
load from other processes), ``latency_overhead_median`` the medians; the ``secded`` / ``harden``
decoders are hardware, untimed.
Adding a row (e.g. the systolic array's FAP, #18): a builder ``(config, context) -> Built`` in
:data:`BUILDERS` and its name in :data:`VARIANTS`.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from faultlab._mitigation_variants import BUILDERS, Built, deploy, load_split
from hwlab import figures
from hwlab.errors import check
from hwlab.studies import Study, StudyConfig, derive_seed, param, run_items

__all__ = [
    "BUILDERS",
    "MITIGATION_STUDY",
    "VARIANTS",
    "MitigationConfig",
    "MitigationStudy",
    "table",
]

log = logging.getLogger(__name__)

VARIANTS = ("unprotected", "rquant", "clipact-zero", "clipact-cap", "ranger", "clipping",
            "randbet", "randbet-clipping", "secded", "harden")
DEFAULT_RATES = {"int8": (0.01, 0.02, 0.05, 0.1), "float32": (1e-5, 3e-5, 1e-4)}  # where the
# normally trained model breaks (issue #16: int8 5-10 %, float32 1e-5..1e-4)


def _zoo_model(value, name: str, caller: str) -> str:
    from hwlab.zoo import _RECIPES

    check(value in _RECIPES, name, caller, f"a zoo model: one of {', '.join(_RECIPES)}", value)
    return value


@dataclass(frozen=True)
class MitigationConfig(StudyConfig):
    model: str = param("lenet5", "zoo model (its recipe retrains the variants)",
                       validate=_zoo_model)
    dataset: str = param("mnist5k", "dataset spec (see hwlab.data.load)", kind="dataset")
    seed: int = param(0, "seed of weights, training faults and evaluation maps", range=(0, None))
    dtype: str = param("int8", "stored weights: int8 (quantize_int8) or float32",
                       choices=("int8", "float32"))
    scheme: str = param("symmetric", "int8 scheme of every variant but rquant",
                        choices=("symmetric", "asymmetric"))
    variants: tuple[str, ...] = param(VARIANTS, "variants", choices=VARIANTS, nonempty=True)
    rates: tuple[float, ...] = param((), "per-bit error rates; () = the dtype's default",
                                     range=(0, 1), inclusive=(False, True))
    trials: int = param(10, "nested fault maps per rate (paired across variants)",
                        range=(1, None))
    eval_size: int = param(500, "test images per evaluation (all of mnist5k's test)",
                           range=(1, None))
    train_epochs: int = param(16, "epochs of the retrained variants (RandBET needs ~2x the "
                              "zoo's 8 to stay within 1.5 points clean)", range=(1, None))
    train_size: int = param(0, "training images of the retrained variants; 0 = the whole split",
                            range=(0, None))
    train_rate: float = param(0.0, "RandBET training rate; 0 = half the largest rate",
                              range=(0, 1))
    w_max: float = param(0.1, "weight clipping bound (Stutz: 0.1)", range=(0, None),
                         inclusive=(False, True))
    ecc_policy: str = param("zero", "SEC-DED detected-uncorrectable word: zero (ECC default) "
                            "or keep", choices=("zero", "keep"))
    harden_rate: float = param(0.0, "rate the hardening targets; 0 = lower median of rates",
                               range=(0, 1))
    harden_target: float = param(0.01, "accuracy drop the hardening may allow", range=(0, 1))
    harden_trials: int = param(10, "fault maps verifying each hardening plan", range=(2, None))
    select_size: int = param(1000, "training images for searches, profiles and hardening",
                             range=(1, None))
    search_maps: int = param(6, "FT-ClipAct search maps per rate (paper ~20)", range=(1, None))
    search_rounds: int = param(2, "FT-ClipAct narrowing rounds (toolbox 4)", range=(1, None))
    latency_repeats: int = param(10, "timed passes per latency measurement", range=(1, None))

    def resolved_rates(self) -> tuple[float, ...]:
        return self.rates or DEFAULT_RATES[self.dtype]


@dataclass(frozen=True)
class EvalItem:
    """One (variant, rate, trial); model and test data travel in a :class:`Payload`."""

    variant: str
    payload: Any  # Payload(model, x, y, fingerprint)
    fault: str
    plan: Any
    rate: float
    top: float
    trial: int
    seed: int


_LOADED: dict[str, tuple] = {}  # this worker's unpickled payload (one at a time)


class Payload:
    """Model and test data pickled as plain bytes (once per variant) and unpickled once per
    worker process: never as torch's shared-memory tensors, which two workers injecting into the
    same storage at once would corrupt (measured: accuracies changed under process:2)."""

    def __init__(self, model, x, y, fingerprint: str):
        self.model, self.x, self.y, self.fingerprint = model, x, y, fingerprint
        self._blob = None

    def __getstate__(self):
        if self._blob is None:
            self._blob = pickle.dumps((self.model, self.x, self.y), pickle.HIGHEST_PROTOCOL)
        return {"fingerprint": self.fingerprint, "blob": self._blob}

    def __setstate__(self, state):
        fp = state["fingerprint"]
        if fp not in _LOADED:
            _LOADED.clear()
            _LOADED[fp] = pickle.loads(state["blob"])  # bytes made by this study, not a file
        self.model, self.x, self.y = _LOADED[fp]
        self.fingerprint, self._blob = fp, state["blob"]


@torch.no_grad()
def _predict(model, x, batch=500) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])  # N


def _eval_row(item: EvalItem) -> dict:
    """Draw trial t's nested map at ``rate``, protect it, inject, score (top level: executors)."""
    from faultlab._faults import BitFlip
    from faultlab._inject import inject
    from faultlab._sample import sample_faults
    from faultlab.memory import ECC, Nested

    def fm(r):
        if item.fault.startswith("secded"):
            return ECC("secded72_64", BitFlip(rate=r), policy=item.fault.split(":")[1])
        return BitFlip(rate=r)

    model, x, y = item.payload.model, item.payload.x, item.payload.y
    clean_pred = _clean_pred(item.payload)
    seed = derive_seed(item.seed, f"mitigation|{item.trial}")
    raw = sample_faults(model, Nested(fm(item.rate), fm(item.top)), seed=seed)
    fmap = raw if item.plan is None else item.plan.filter(raw, item.rate, seed)
    with inject(model, fmap):
        pred = _predict(model, x)  # N
    extra = {"n_faults": len(fmap), "n_raw": len(raw), "map": raw.fingerprint()}
    extra.update({k: v for k, v in (raw.extra or {}).items() if isinstance(v, (int, float, str))})
    return {"variant": item.variant, "fault_model": fm(item.rate).label,
            "fault_rate": item.rate, "trial": item.trial,
            "accuracy": float((pred == y).float().mean()),
            "extra": {**extra, "sdc": float((pred != clean_pred).float().mean())}}


_CLEAN: dict[str, torch.Tensor] = {}  # this process's fault-free predictions, one payload


def _clean_pred(payload) -> torch.Tensor:
    if payload.fingerprint not in _CLEAN:
        _CLEAN.clear()
        _CLEAN[payload.fingerprint] = _predict(payload.model, payload.x)  # N
    return _CLEAN[payload.fingerprint]


class MitigationStudy(Study):
    """Every remedy on the same maps: ClipAct, Ranger, clipping, RandBET, SEC-DED, hardening."""

    name = "faultlab.mitigation"
    module = "faultlab"
    description = ("Mitigations side by side on paired nested fault maps: FT-ClipAct, Ranger, "
                   "weight clipping, RandBET, robust quantisation, SEC-DED, selective "
                   "hardening; accuracy, memory / latency overhead, training time.")
    Config = MitigationConfig
    figure = figures.mitigation_pareto  # key figure
    figure_title = "accuracy at BER vs memory overhead (Pareto)"
    latency_kind = "inference_ms"  # per sample, fault-free
    memory_kind = "model_bytes"  # the deployed weights as stored
    page = "mitigation"
    quick_seconds = None  # not measured (failed while faultlab was being changed)
    quick = {  # noqa: RUF012 - read-only by convention; well under a minute on 2 cores
        "rates": (0.02, 0.1), "trials": 3, "eval_size": 300, "train_epochs": 3,
        "select_size": 300, "search_maps": 2, "search_rounds": 1, "harden_trials": 3,
        "latency_repeats": 3,
    }

    def run(self, config: MitigationConfig, store, progress=None, executor=None) -> str:
        from faultlab._campaign import weights_fingerprint

        rates = config.resolved_rates()
        keys = [f"{v}|{r!r}|trial={t}" for v in config.variants for r in rates
                for t in range(config.trials)]
        with self.open_run(store, config) as run_id:
            done = store.done_keys(run_id)
            if set(keys) | {f"clean|{v}" for v in config.variants} <= set(done):
                return run_id  # finished before: nothing to build or evaluate
            built, _ = _build_all(config, store, run_id, progress)
            test = load_split(config.dataset, "test", config.seed, config.eval_size)
            items = {}
            for v in config.variants:
                b = built[v]
                fp = f"mitigation|{v}|{weights_fingerprint(b.model)}|{len(test.y)}"
                payload = Payload(b.model, test.x, test.y, fp)
                for r in rates:
                    for t in range(config.trials):
                        items[f"{v}|{r!r}|trial={t}"] = EvalItem(
                            v, payload, b.fault, b.plan, r, max(rates), t, config.seed)
            defaults = {"module": "faultlab", "method": "mitigation", "model": config.model,
                        "dataset": config.dataset, "seed": config.seed}
            run_items(store, run_id, items, _eval_row, executor, progress, defaults=defaults)
        return run_id


def _build_all(c: MitigationConfig, store, run_id, progress):
    """Build every variant; write its clean row (once: a resumed run rebuilds, rows are kept)."""
    from hwlab import meters
    from hwlab.train import evaluate
    from hwlab.zoo import entry

    zoo = entry(c.model, c.dataset, seed=c.seed)
    ctx = {"float": zoo.model.eval(), "zoo_seconds": zoo.seconds,
           "select": load_split(c.dataset, "train", c.seed, c.select_size)}
    ctx["base"] = deploy(c, ctx["float"])
    built = {}
    for i, v in enumerate(c.variants):
        built[v] = BUILDERS[v](c, ctx)
        if progress is not None:
            progress(i + 1, len(c.variants), f"built {v}")
    test = load_split(c.dataset, "test", c.seed, c.eval_size)
    x = test.x[:64]  # 64 x C x H x W
    timed = list(dict.fromkeys(["unprotected", *c.variants]))
    models = {v: (built[v] if v in built else Built(ctx["base"])).model for v in timed}
    runs: dict[str, list] = {v: [] for v in timed}
    with torch.no_grad():
        for _ in range(3):  # round-robin passes: load from other processes hits every variant
            for v in timed:
                runs[v].append(meters.latency(models[v], x, warmup=1,
                                              repeats=c.latency_repeats))
    lat = {v: float(np.median([t.median_ms for t in r])) for v, r in runs.items()}
    fastest = {v: float(min(t.min_ms for t in r)) for v, r in runs.items()}  # load-robust
    rows = []
    for v in c.variants:
        b = built[v]
        rows.append({"key": f"clean|{v}", "module": "faultlab", "method": "mitigation",
                     "model": c.model, "dataset": c.dataset, "variant": v, "seed": c.seed,
                     "fault_rate": 0.0, "accuracy": evaluate(b.model, test),  # fault-free
                     "latency_ms": lat[v] / len(x), "params": int(meters.param_count(b.model)),
                     "memory_bytes": int(sum(t.numel() * t.element_size()
                                             for t in b.model.state_dict().values())),
                     "extra": {**b.info, "dtype": c.dtype, "memory_overhead": b.memory_overhead,
                               "latency_overhead": fastest[v] / fastest["unprotected"],
                               "latency_overhead_median": lat[v] / lat["unprotected"],
                               "train_seconds": b.seconds,
                               "hardware_decoder_untimed": v in ("secded", "harden")}})
    done = store.done_keys(run_id)
    store.add_results(run_id, [r for r in rows if r["key"] not in done])
    return built, rows


def table(results) -> pd.DataFrame:  # noqa: F821 - pandas imported lazily
    """One row per variant: clean accuracy, overheads, build time, mean accuracy per rate and the
    mean SDC (share of test predictions that differ from the variant's fault-free ones) at the
    largest rate."""
    import json

    import pandas as pd

    clean = results[results.key.str.startswith("clean|")].set_index("variant")
    faulty = results[~results.key.str.startswith("clean|")].copy()
    faulty["sdc"] = [json.loads(e).get("sdc") if isinstance(e, str) else e.get("sdc")
                     for e in faulty.extra]
    acc = faulty.pivot_table(index="variant", columns="fault_rate", values="accuracy",
                             aggfunc="mean")
    acc.columns = [f"acc@{r:g}" for r in acc.columns]
    extra = clean.extra.map(lambda e: json.loads(e) if isinstance(e, str) else e)
    out = pd.DataFrame({"clean": clean.accuracy,
                        "memory_overhead": extra.map(lambda e: e["memory_overhead"]),
                        "latency_overhead": extra.map(lambda e: e["latency_overhead"]),
                        "train_seconds": extra.map(lambda e: e["train_seconds"])})
    top = faulty.fault_rate.max()
    sdc = faulty[faulty.fault_rate == top].groupby("variant").sdc.mean().rename(f"sdc@{top:g}")
    order = [v for v in VARIANTS if v in out.index]
    return out.join(acc).join(sdc).loc[order].reset_index()


MITIGATION_STUDY = MitigationStudy()
