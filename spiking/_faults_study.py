"""Study ``spiking.faults``: fixed T and every stopping rule under spiking-neuron faults.

For each SNN path (converted QCFS ANN, directly trained SNN) the clean net is recorded on val and
test once and every rule's threshold is calibrated on the clean val recording (a chip calibrated
while healthy). Then, per neuron fault (dead, saturated, threshold up / down, leak), rate and
trial, the faulty net records the test set once to ``max_steps`` and every rule is evaluated from
that one recording: fixed T* (the clean T*), fixed T_max, Dynamic Confidence, entropy, margin and
the oracle. Paired maps: the neurons of trial ``t`` come from one seed per (path, trial), the same
for every fault kind, every rule and (nested) every rate, so rules and rates are compared on the
same faulty neurons; per sample, the exit step and correctness are compared with the clean run.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from types import MappingProxyType

import torch

from hwlab.data import load
from hwlab.errors import check, check_choice
from hwlab.meters import param_count
from hwlab.studies import Study, derive_seed

from ._faults import (
    LeakDrift,
    NeuronStuck,
    ThresholdDrift,
    inject_neuron_faults,
    sample_neuron_faults,
)
from ._pipeline import METHODS, build_snn, evaluate_path, rule_for
from ._qcfs import ARCHITECTURES
from ._record import record
from ._rules import Exit, apply_rule, fixed_steps, oracle_any
from ._snn import ENCODINGS

__all__ = ["FAULT_NAMES", "NEURON_FAULTS_STUDY", "NeuronFaultsConfig", "NeuronFaultsStudy"]

log = logging.getLogger(__name__)
FAULT_NAMES = ("dead", "saturated", "threshold-up", "threshold-down", "leak")
RULES = ("dynamic-confidence", "entropy", "margin")


@dataclass(frozen=True)
class NeuronFaultsConfig:
    dataset: str = "mnist5k"  # the spiking study's set (4000/500/500)
    model: str = "lenet"  # converted path: our QCFS LeNet (96.4 % A*, docs/spiking.md)
    direct_model: str = "mlp"  # direct path, as in spiking.dynamic-confidence
    methods: tuple[str, ...] = ("converted", "direct")  # both ways to get an SNN
    faults: tuple[str, ...] = FAULT_NAMES  # every neuron fault model
    rates: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1)  # per-neuron fault probabilities
    trials: int = 3  # neuron maps per rate (each one re-records the test set)
    threshold_up: float = 1.5  # threshold drift up: theta x 1.5 (neurons fire less)
    threshold_down: float = 0.5  # threshold drift down: theta x 0.5 (neurons fire more)
    leak_scale: float = 0.8  # beta x 0.8: IF neurons (beta 1) leak 20 % a step
    levels: int = 4  # QCFS quantisation levels L (as spiking.dynamic-confidence)
    max_steps: int = 32  # T_max of each recording
    ann_epochs: int = 15  # the converted LeNet of docs/spiking.md
    lr: float = 1e-3
    direct_epochs: int = 8  # direct path as in spiking.dynamic-confidence
    direct_steps: int = 8
    direct_encoding: str = "rate"
    direct_threshold: float = 0.5
    direct_lr: float = 2e-3
    batch_size: int = 64
    eval_batch: int = 500
    constant: float = 30.0  # Dynamic Confidence divisor (official code)
    tolerance: float = 0.002  # calibration tolerance on val
    seed: int = 0


class NeuronFaultsStudy(Study):
    name = "spiking.faults"
    module = "spiking"
    description = ("Spiking-neuron faults (dead, saturated, threshold and leak drift): accuracy "
                   "and mean steps of fixed T and every stopping rule, paired neuron maps.")
    Config = NeuronFaultsConfig
    quick = MappingProxyType({"dataset": "digits", "model": "mlp", "direct_model": "mlp",
                              "max_steps": 16, "ann_epochs": 6, "direct_epochs": 3,
                              "direct_steps": 4, "rates": (0.01, 0.1), "trials": 1,
                              "eval_batch": 200})

    def run(self, config, store, progress=None, executor=None) -> str:
        _check(config)
        with self.open_run(store, asdict(config)) as run_id:
            done = store.done_keys(run_id)
            todo = [m for m in config.methods if not _keys(config, m) <= done]
            total = len(config.methods)
            if progress:
                progress(total - len(todo), total, "methods stored")
            jobs = ([executor.submit(_method_rows, config, m) for m in todo] if executor
                    else None)
            for i, m in enumerate(todo):
                rows = jobs[i].result() if jobs else _method_rows(config, m)
                store.add_results(run_id, rows)
                if progress:
                    progress(total - len(todo) + i + 1, total, m)
        return run_id


def _check(cfg) -> None:
    c = "spiking.faults"
    check(isinstance(cfg, NeuronFaultsConfig), "config", c, "a NeuronFaultsConfig",
          type(cfg).__name__)
    check(cfg.model in ARCHITECTURES, "model", c, f"one of {', '.join(ARCHITECTURES)}",
          cfg.model)
    check_choice(cfg.direct_model, tuple(ARCHITECTURES), "direct_model", c)
    check(len(cfg.methods) > 0 and set(cfg.methods) <= set(METHODS), "methods", c,
          f"a non-empty subset of {', '.join(METHODS)}", cfg.methods)
    check(len(cfg.faults) > 0 and set(cfg.faults) <= set(FAULT_NAMES), "faults", c,
          f"a non-empty subset of {', '.join(FAULT_NAMES)}", cfg.faults)
    check(len(cfg.rates) > 0 and all(0 < r <= 1 for r in cfg.rates), "rates", c,
          "a non-empty list of rates in (0, 1]", cfg.rates)
    check_choice(cfg.direct_encoding, ENCODINGS, "direct_encoding", c)
    check(cfg.max_steps >= 2, "max_steps", c, "an integer >= 2", cfg.max_steps)
    check(cfg.trials >= 1, "trials", c, "an integer >= 1", cfg.trials)


def _variants(cfg) -> tuple[str, ...]:
    return ("fixed-T*", f"fixed-T{cfg.max_steps}", *RULES, "oracle-any")


def _keys(cfg, method: str) -> set[str]:
    keys = {f"{method}|clean|{v}" for v in _variants(cfg)}
    for f in cfg.faults:
        for rate in cfg.rates:
            for t in range(cfg.trials):
                keys |= {f"{method}|{f}|{rate:g}|trial={t}|{v}" for v in _variants(cfg)}
    return keys


def _fault(name: str, rate: float, cfg):
    if name in ("dead", "saturated"):
        return NeuronStuck(name, rate=rate)
    if name == "leak":
        return LeakDrift(cfg.leak_scale, rate=rate)
    return ThresholdDrift(cfg.threshold_up if name == "threshold-up" else cfg.threshold_down,
                          rate=rate)


def _exits(rec, res, cfg) -> dict[str, tuple[Exit, float | None]]:
    out = {"fixed-T*": (fixed_steps(rec, res.t_star), None),
           f"fixed-T{cfg.max_steps}": (fixed_steps(rec, cfg.max_steps), None)}
    for name in RULES:
        th = res.calibrations[name].threshold
        out[name] = (apply_rule(rec, rule_for(name, cfg), th), th)
    out["oracle-any"] = (oracle_any(rec), None)
    return out


def _method_rows(cfg, method: str) -> list[dict]:
    """Train one path, calibrate on clean val, then record the test set under every fault."""
    train, val, test = (load(cfg.dataset, s, seed=cfg.seed) for s in ("train", "val", "test"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build_snn(method, cfg, train, val)
    res = evaluate_path(net, val, test, cfg)  # clean recordings, thresholds chosen on val
    clean = _exits(res.test, res, cfg)
    model = cfg.model if method == "converted" else cfg.direct_model
    base = {"module": "spiking", "method": method, "model": model, "dataset": cfg.dataset,
            "seed": cfg.seed, "params": param_count(net)}
    rows = [_row(base, "clean", v, e, th, clean[v][0], res, cfg)
            for v, (e, th) in clean.items()]
    for t in range(cfg.trials):
        seed = derive_seed(cfg.seed, f"{method}|trial={t}")  # one seed per trial: paired maps
        for f in cfg.faults:
            for rate in cfg.rates:
                fmap = sample_neuron_faults(net, _fault(f, rate, cfg), test.in_shape, seed)
                with inject_neuron_faults(net, fmap):
                    rec = record(net, test, cfg.max_steps, batch_size=cfg.eval_batch,
                                 seed=cfg.seed)
                key = f"{f}|{rate:g}|trial={t}"
                info = {"fault_model": f, "fault_rate": rate, "trial": t,
                        "n_faulty": len(fmap), "neurons": fmap.neurons,
                        "map": fmap.fingerprint()}
                rows += [_row({**base, **info}, key, v, e, th, clean[v][0], res, cfg)
                         for v, (e, th) in _exits(rec, res, cfg).items()]
    log.info("%s: %d rows", method, len(rows))
    return rows


def _row(base, key, variant, e: Exit, threshold, clean: Exit, res, cfg) -> dict:
    info = {k: base.pop(k) for k in ("n_faulty", "neurons", "map") if k in base}
    early = e.steps < cfg.max_steps
    extra = {**info, "threshold": threshold, "t_star": res.t_star,
             "clean_accuracy": clean.accuracy, "clean_mean_steps": clean.mean_steps,
             # paired per sample against the clean run of the same rule
             "steps_shift": float((e.steps - clean.steps).double().mean()),
             "correct_to_wrong": float((clean.correct & ~e.correct).double().mean()),
             "wrong_to_correct": float((~clean.correct & e.correct).double().mean()),
             "early_wrong": float((early & ~e.correct).double().mean()),
             "mean_steps_wrong": float(e.steps[~e.correct].double().mean())
             if bool((~e.correct).any()) else None}
    return {**base, "key": f"{base['method']}|{key}|{variant}", "variant": variant,
            "fault_model": base.get("fault_model", "none"),
            "fault_rate": base.get("fault_rate", 0.0), "accuracy": e.accuracy,
            "timesteps": e.mean_steps, "extra": extra}


NEURON_FAULTS_STUDY = NeuronFaultsStudy()
