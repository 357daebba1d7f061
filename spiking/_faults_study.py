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
from dataclasses import dataclass
from types import MappingProxyType

import torch

from hwlab import figures
from hwlab.data import load
from hwlab.errors import check
from hwlab.meters import param_count
from hwlab.studies import Study, StudyConfig, derive_seed, param, run_items

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
class NeuronFaultsConfig(StudyConfig):
    dataset: str = param(  # the spiking study's set (4000/500/500)
        "mnist5k", "dataset spec (see hwlab.data.load)", kind="dataset")
    model: str = param(  # converted path: our QCFS LeNet (96.4 % A*, docs/spiking.md)
        "lenet", "QCFS ANN of the converted path", choices=tuple(ARCHITECTURES))
    direct_model: str = param(  # direct path, as in spiking.dynamic-confidence
        "mlp", "directly trained SNN", choices=tuple(ARCHITECTURES))
    methods: tuple[str, ...] = param(  # both ways to get an SNN
        METHODS, "SNN paths", choices=METHODS, nonempty=True)
    faults: tuple[str, ...] = param(  # every neuron fault model
        FAULT_NAMES, "neuron fault models", choices=FAULT_NAMES, nonempty=True)
    rates: tuple[float, ...] = param(  # per-neuron fault probabilities
        (0.001, 0.01, 0.05, 0.1), "per-neuron fault probabilities", range=(0, 1),
        inclusive=(False, True), nonempty=True)
    trials: int = param(  # neuron maps per rate (each one re-records the test set)
        3, "neuron maps per rate", range=(1, None))
    threshold_up: float = param(  # theta x 1.5: neurons fire less
        1.5, "threshold drift up (factor)", range=(0, None), inclusive=(False, True))
    threshold_down: float = param(  # theta x 0.5: neurons fire more
        0.5, "threshold drift down (factor)", range=(0, None), inclusive=(False, True))
    leak_scale: float = param(  # beta x 0.8: IF neurons (beta 1) leak 20 % a step
        0.8, "leak drift: membrane decay factor", range=(0, 1))
    levels: int = param(4, "QCFS quantisation levels L (as spiking.dynamic-confidence)",
                        range=(1, None))
    max_steps: int = param(32, "T_max of each recording", range=(2, None))
    ann_epochs: int = param(15, "epochs of the converted path's QCFS ANN (docs/spiking.md)",
                            range=(1, None))
    lr: float = param(1e-3, "Adam step of the QCFS ANN", range=(0, None), inclusive=(False, True))
    direct_epochs: int = param(8, "epochs of the direct path (as spiking.dynamic-confidence)",
                               range=(1, None))
    direct_steps: int = param(8, "time steps while training the direct path", range=(1, None))
    direct_encoding: str = param("rate", "input coding of the direct path", choices=ENCODINGS)
    direct_threshold: float = param(0.5, "firing threshold of the direct path",
                                    range=(0, None), inclusive=(False, True))
    direct_lr: float = param(2e-3, "Adam step of the direct path", range=(0, None),
                             inclusive=(False, True))
    batch_size: int = param(64, "training batch size", range=(1, None))
    eval_batch: int = param(500, "recording batch size", range=(1, None))
    constant: float = param(  # Dynamic Confidence divisor (official code)
        30.0, "Dynamic Confidence softmax divisor", range=(0, None), inclusive=(False, True))
    tolerance: float = param(  # calibration tolerance on val
        0.002, "accuracy tolerance of the threshold calibration on val", range=(0, 1))
    seed: int = param(0, "training, calibration and neuron maps", range=(0, None))


@dataclass(frozen=True)
class FaultsItem:
    """One SNN path: train, calibrate on clean val, record the test set under every fault."""

    config: NeuronFaultsConfig
    method: str


class NeuronFaultsStudy(Study):
    name = "spiking.faults"
    module = "spiking"
    description = ("Spiking-neuron faults (dead, saturated, threshold and leak drift): accuracy "
                   "and mean steps of fixed T and every stopping rule, paired neuron maps.")
    Config = NeuronFaultsConfig
    figure = figures.neuron_sweep  # key figure
    figure_title = "accuracy vs neuron fault rate per exit rule"
    page = "spiking"
    quick_seconds = 68  # measured once (see Study.quick_seconds)
    quick = MappingProxyType({"dataset": "digits", "model": "mlp", "direct_model": "mlp",
                              "max_steps": 16, "ann_epochs": 6, "direct_epochs": 3,
                              "direct_steps": 4, "rates": (0.01, 0.1), "trials": 1,
                              "eval_batch": 200})

    def run(self, config, store, progress=None, executor=None) -> str:
        """Every path through ``run_items`` (all rows of a path are written together)."""
        check(isinstance(config, NeuronFaultsConfig), "config", "spiking.faults",
              "a NeuronFaultsConfig", type(config).__name__)
        items = {m: FaultsItem(config, m) for m in config.methods}
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, items, _faults_item, executor, progress, many=True)
        return run_id


def _faults_item(item: FaultsItem) -> list[dict]:
    """All rows of one path (top-level: runs on any executor)."""
    return _method_rows(item.config, item.method)


def _variants(cfg) -> tuple[str, ...]:
    return ("fixed-T*", f"fixed-T{cfg.max_steps}", *RULES, "oracle-any")


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
