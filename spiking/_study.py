"""Study ``spiking.dynamic-confidence``: Dynamic Confidence vs fixed T, peers and oracles.

For each SNN path (converted QCFS ANN, directly trained SNN) it records val and test once to
``max_steps``, writes one row per fixed T, per stopping rule (threshold chosen on val, applied to
test, timed with the live early-exit runner) and per oracle, then a short bit-flip sweep on the
SNN's weights (faultlab) comparing fixed T* with Dynamic Confidence under the same faults.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType

import torch

import faultlab as fl
from hwlab import figures
from hwlab.data import load
from hwlab.meters import param_count
from hwlab.seeds import derive_seed, seeded, torch_threads
from hwlab.studies import Study, StudyConfig, param, run_items
from hwlab.train import OPTIMIZERS

from ._live import run_live
from ._pipeline import METHODS, PathResult, build_snn, evaluate_path, live_ms, rule_for, test_curve
from ._qcfs import ARCHITECTURES
from ._rules import apply_rule, fixed_steps, oracle_any, oracle_stay
from ._snn import ENCODINGS

__all__ = ["DYNAMIC_CONFIDENCE_STUDY", "DynamicConfidenceConfig", "DynamicConfidenceStudy",
           "MethodItem"]

log = logging.getLogger(__name__)
RULE_VARIANTS = ("dynamic-confidence", "entropy", "margin")


def _model_spec(value, name: str, caller: str):
    """The converted path's model: a spiking architecture, else any hwlab model spec."""
    if value not in ARCHITECTURES:
        from hwlab.models import check_spec

        check_spec(value, name, caller)
    return value


@dataclass(frozen=True)
class DynamicConfidenceConfig(StudyConfig):
    dataset: str = param(  # the target set (4000/500/500 train/val/test)
        "mnist5k", "dataset spec (see hwlab.data.load)", kind="dataset")
    model: str = param(  # a deep net as in the paper: LeNet/MLP SNNs settle within ~4 steps
        "vgg-s", f"converted path: a spiking architecture ({', '.join(ARCHITECTURES)}) or a "
        "model spec (zoo name, module:callable, entry point)", validate=_model_spec)
    weights: str = param(  # warm start; the QCFS ANN is still trained for ann_epochs
        "", "initial state dict of the converted path's ANN (a model spec's keys); '' = none",
        kind="path")
    direct_model: str = param(  # BPTT on a CPU stays affordable
        "mlp", "direct path architecture", choices=tuple(ARCHITECTURES))
    methods: tuple[str, ...] = param(  # the two ways to get an SNN
        ("converted", "direct"), "SNN paths", choices=METHODS, nonempty=True)
    levels: int = param(4, "QCFS quantisation levels L (QCFS's CIFAR-10 setting)",
                        range=(1, None))
    max_steps: int = param(32, "T_max of each recording (the official demo runs 27)",
                           range=(2, None))
    ann_epochs: int = param(8, "ANN training epochs (QCFS VGG-s: ~98% on mnist5k in 8)",
                            range=(1, None))
    lr: float = param(  # QCFS trains from scratch with SGD at 0.1, cosine decay
        0.1, "learning rate of the QCFS ANN", range=(0, None), inclusive=(False, True))
    ann_optimizer: str = param(  # QCFS and the Dynamic Confidence code: SGD, momentum 0.9
        "sgd", "optimizer of the QCFS ANN", choices=OPTIMIZERS)
    ann_weight_decay: float = param(  # QCFS and the Dynamic Confidence code: 5e-4; without it
        # the ANN leans on its exact 4-level grid and its SNN drifts away from it as T grows
        5e-4, "weight decay of the QCFS ANN", range=(0, None))
    direct_epochs: int = param(8, "BPTT epochs (8 plateau on mnist5k)", range=(1, None))
    direct_steps: int = param(8, "steps unrolled while training directly", range=(1, None))
    direct_encoding: str = param("rate", "input code of the direct SNN", choices=ENCODINGS)
    direct_threshold: float = param(  # 1.0 starts too silent
        0.5, "firing threshold of the direct SNN", range=(0, None), inclusive=(False, True))
    direct_lr: float = param(  # surrogate-gradient nets like a larger step than the ANN
        2e-3, "Adam learning rate of the direct SNN", range=(0, None), inclusive=(False, True))
    batch_size: int = param(64, "training mini-batch", range=(1, None))
    eval_batch: int = param(500, "recording / live batch (all of mnist5k's test set)",
                            range=(1, None))
    constant: float = param(30.0, "Dynamic Confidence softmax divisor (official code: /30)",
                            range=(0, None), inclusive=(False, True))
    tolerance: float = param(  # val acc >= best fixed-T val acc - 0.2 points
        0.002, "calibration tolerance (accuracy)", range=(0, 1))
    calibration: str = param(  # 'tolerance' (the cheapest threshold within tolerance of the best
        # fixed T on val) chases the last val image: the cheapest point that reaches the bar is
        # the one val happens to favour, and 500 val images saturate at another step than 500
        # test images (issue 22: 0.6 points short on test at 0.43 T*). 'budget' fixes what a user
        # deploys against, a latency, and takes the most accurate val point within it (mean
        # steps per threshold vary little between splits, accuracy at the bar does not), so the
        # rules are compared at equal latency. Neither meets the target reliably over
        # training seeds (docs/spiking.md: 1 / 6 vs 2 / 6 on test, 23 % vs 19 % on val halves)
        "budget", "calibration mode: 'budget' = the most accurate threshold whose val mean steps "
        "are <= budget x T_ref (the fewest fixed T within tolerance of val's best); 'tolerance' "
        "= the cheapest threshold within tolerance of val's best fixed T",
        choices=("budget", "tolerance"))
    budget: float = param(  # half the fixed-T steps: the paper's demo runs 0.43 of its fixed T,
        # its average speed-up is 40 %; 0.5 keeps a margin below the 0.6 T* for T*
        # itself moving between val and test
        0.5, "latency budget of calibration='budget', a fraction of T_ref",
        range=(0, 1), inclusive=(False, True))
    fault_rates: tuple[float, ...] = param(
        (1e-6, 1e-5), "per-bit flip rates of the fault sweep", range=(0, 1))
    trials: int = param(2, "fault maps per rate (each re-records the test set)",
                        range=(0, None))
    latency_repeats: int = param(3, "timed live runs per row (median)", range=(1, None))
    latency_steps: tuple[int, ...] = param(  # plus T*, T_max
        (1, 2, 4, 8, 16, 32), "fixed T timed", range=(1, None))
    seed: int = param(0, "data split, training, rate code, fault maps", range=(0, None))
    threads: int = param(  # float sums depend on the thread count: 1 = the same figures on
        # every machine and on serial, process and Dask executors (whose workers use 1)
        1, "torch threads for training, recording and timing (0 = leave as is)",
        range=(0, None))


@dataclass(frozen=True)
class MethodItem:
    """One SNN path to train and measure (all its rows are written together)."""

    config: DynamicConfidenceConfig
    method: str


class DynamicConfidenceStudy(Study):
    name = "spiking.dynamic-confidence"
    module = "spiking"
    description = ("SNN early exit: Dynamic Confidence vs fixed T, entropy, margin and oracles, "
                   "converted and directly trained, with a bit-flip sweep.")
    Config = DynamicConfidenceConfig
    figure = figures.time_steps  # key figure
    figure_title = "accuracy vs mean time steps with the rules"
    latency_kind = "inference_ms"  # per sample
    page = "spiking"
    quick_seconds = 15  # measured once (see Study.quick_seconds)
    quick = MappingProxyType({"dataset": "digits", "model": "mlp",
                              "direct_model": "mlp", "max_steps": 16,
                              "ann_epochs": 6, "direct_epochs": 3, "direct_steps": 4,
                              "fault_rates": (1e-5,), "trials": 2, "latency_repeats": 1,
                              "eval_batch": 200})

    def run(self, config, store, progress=None, executor=None) -> str:
        """Run every method (on ``executor`` if given) and write its rows; resumable by key."""
        items = {m: MethodItem(config, m) for m in config.methods}
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, items, _method_item, executor, progress, many=True)
        return run_id


def _method_item(item: MethodItem) -> list[dict]:
    """All rows of one method (top-level: runs on any executor), with ``config.threads`` torch
    threads (the caller's count is restored after)."""
    with torch_threads(item.config.threads or None):
        return _method_rows(item.config, item.method)


def _method_rows(cfg, method: str) -> list[dict]:
    """Train one path and measure everything about it (top-level: runs on any executor)."""
    train, val, test = (load(cfg.dataset, s, seed=cfg.seed) for s in ("train", "val", "test"))
    with seeded(cfg.seed):  # seeded weight init without touching global state
        net = build_snn(method, cfg, train, val)
    res = evaluate_path(net, val, test, cfg)
    model = cfg.model if method == "converted" else cfg.direct_model
    base = {"module": "spiking", "method": method, "model": model, "dataset": cfg.dataset,
            "seed": cfg.seed, "params": param_count(net)}
    rows = _clean_rows(net, test, res, cfg, base)
    rows += _fault_rows(net, test, res, cfg, base)
    log.info("%s: A*=%.4f T*=%d, %d rows", method, res.a_star, res.t_star, len(rows))
    for r in rows:
        r["key"] = f"{method}|{r.pop('_key')}"
    return rows


def _clean_rows(net, test, res: PathResult, cfg, base) -> list[dict]:
    rows, val_curve = [], res.val.accuracy_curve()
    timed = {t for t in cfg.latency_steps if t <= cfg.max_steps} | {res.t_star, cfg.max_steps}
    fixed_ms = {t: live_ms(net, test.x, None, None, t, cfg) for t in sorted(timed)}
    for t in range(1, cfg.max_steps + 1):  # untimed T: latency NULL (fixed-T cost ~ T)
        e = fixed_steps(res.test, t)
        rows.append({**base, "_key": f"fixed-T{t}", "variant": f"fixed-T{t}",
                     "accuracy": e.accuracy, "timesteps": float(t), "latency_ms": fixed_ms.get(t),
                     "extra": {"val_accuracy": float(val_curve[t - 1]),
                               "is_t_star": t == res.t_star}})
    for name in RULE_VARIANTS:
        cal, rule = res.calibrations[name], rule_for(name, cfg)
        e = apply_rule(res.test, rule, cal.threshold)
        live = _live_check(net, test, rule, cal.threshold, e, cfg)
        ms = live_ms(net, test.x, rule, cal.threshold, cfg.max_steps, cfg)
        extra = {"threshold": cal.threshold, "tolerance": cfg.tolerance,
                 "calibration": cfg.calibration, "budget": cal.budget,
                 "val_reference_steps": cal.reference_steps,
                 "val_accuracy": cal.accuracy, "val_mean_steps": cal.mean_steps,
                 "val_reference_accuracy": cal.reference_accuracy, "calibration_met": cal.met,
                 "a_star": res.a_star, "t_star": res.t_star,
                 "within_half_point_of_a_star": e.accuracy >= res.a_star - 0.005 - 1e-12,
                 "steps_over_t_star": e.mean_steps / res.t_star,
                 "wallclock_speedup_vs_t_star": fixed_ms[res.t_star] / ms,
                 "live_matches_offline": live, "max_steps": cfg.max_steps,
                 "test_pareto": test_curve(res.test, rule, cal)}
        if name == "dynamic-confidence":  # also the official demo's fixed threshold, for context
            paper = apply_rule(res.test, rule, rule.default_threshold)
            extra.update(constant=cfg.constant, paper_threshold=rule.default_threshold,
                         paper_threshold_accuracy=paper.accuracy,
                         paper_threshold_mean_steps=paper.mean_steps)
        rows.append({**base, "_key": name, "variant": name, "accuracy": e.accuracy,
                     "timesteps": e.mean_steps, "latency_ms": ms, "extra": extra})
    for name, oracle in (("oracle-any", oracle_any), ("oracle-stay", oracle_stay)):
        e = oracle(res.test)  # needs the label: no live latency (NULL)
        rows.append({**base, "_key": name, "variant": name, "accuracy": e.accuracy,
                     "timesteps": e.mean_steps, "extra": {"a_star": res.a_star,
                                                          "t_star": res.t_star}})
    return rows


def _live_check(net, test, rule, threshold, offline, cfg) -> bool:
    live = run_live(net, test.x, rule, threshold, steps=cfg.max_steps, batch_size=cfg.eval_batch,
                    seed=cfg.seed)
    same = torch.equal(live.predictions, offline.predictions) and torch.equal(live.steps,
                                                                              offline.steps)
    if not same:
        log.warning("live and offline predictions differ for %s", rule.name)
    return same


def _fault_rows(net, test, res: PathResult, cfg, base) -> list[dict]:
    """Bit flips in the SNN weights: fixed T* vs Dynamic Confidence on the same faulty net.

    One trial per (rate, map) on faultlab's one trial engine: the net runs as a
    :class:`~spiking._readout.StepReadout` (a forward pass is a recording) and the metrics
    apply T* and the calibrated rule; each trial gives the study's two rows."""
    import json

    from hwlab.store import Store

    from ._readout import StepReadout, indexed, readout_metrics

    cal = res.calibrations["dynamic-confidence"]
    rule = rule_for("dynamic-confidence", cfg)
    readout = StepReadout(net, test.x.shape[1:], cfg.max_steps, cfg.seed, cfg.eval_batch).eval()
    metrics = readout_metrics(cfg.max_steps, res.t_star, rule, cal.threshold)
    ev = fl.evaluation(readout, (indexed(test.x), test.y), metrics, batch_size=cfg.eval_batch,
                       delayed_start=False, full=False, caller="study spiking.dynamic-confidence")
    plan = {}
    for rate in cfg.fault_rates:
        for k in range(cfg.trials):
            key = f"bitflip|{rate:g}|trial={k}"
            plan[key] = fl.Trial((fl.BitFlip(rate=rate),), k, cfg.seed,
                                 map_seed=derive_seed(cfg.seed, key))
    trials = Store.memory()
    trials.ensure_columns([m.__name__ for m in metrics])
    run_id = trials.open_run("spiking.faults-sweep", {})
    was_training = net.training
    try:
        with fl.runner(ev) as run:
            run.run(trials, run_id, plan)
    finally:
        net.train(was_training)
    done = trials.results(run_id=run_id).set_index("key")
    rows = []
    for key, r in ((k, done.loc[k]) for k in plan):
        common = {**base, "fault_model": "bitflip", "fault_rate": float(r.fault_rate),
                  "trial": int(r.trial)}
        info = {"faults": json.loads(r.extra)["n_faults"], "t_star": res.t_star}
        rows.append({**common, "_key": f"{key}|fixed", "variant": f"fixed-T{res.t_star}",
                     "accuracy": float(r.fixed_accuracy), "timesteps": float(res.t_star),
                     "extra": info})
        rows.append({**common, "_key": f"{key}|dc", "variant": "dynamic-confidence",
                     "accuracy": float(r.rule_accuracy), "timesteps": float(r.rule_steps),
                     "extra": {**info, "threshold": cal.threshold}})
    return rows


DYNAMIC_CONFIDENCE_STUDY = DynamicConfidenceStudy()
