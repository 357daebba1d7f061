"""One SNN path end to end: train, record val and test, evaluate every rule, time the runner.

Used by the ``spiking.dynamic-confidence`` study and the benchmark; everything here goes through
the public pieces (fit, convert, record, calibrate, apply_rule, run_live).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from hwlab.data import Split
from hwlab.meters import latency
from hwlab.models import resolve
from hwlab.train import TrainConfig, fit

from ._calibrate import Calibration, calibrate, pareto_front, sweep
from ._direct import DirectTask, direct_net
from ._live import run_live
from ._qcfs import ARCHITECTURES, qcfs_net, with_qcfs
from ._record import Recording, record
from ._rules import dynamic_confidence_rule, get_rule
from ._snn import SpikingNet, convert

__all__ = ["METHODS", "PathResult", "ann_train_config", "best_fixed", "build_snn",
           "calibration_budget", "evaluate_path", "live_ms"]

log = logging.getLogger(__name__)
METHODS = ("converted", "direct")


def build_snn(method: str, cfg, train: Split, val: Split | None = None) -> SpikingNet:
    """Train the SNN of ``method`` ("converted" or "direct") with ``hwlab.train.fit``."""
    if method == "converted":
        ann = qcfs_ann(cfg.model, train.in_shape, train.num_classes, cfg.levels,
                       weights=getattr(cfg, "weights", "") or None)
        fit(ann, train, ann_train_config(cfg), val=val)
        return convert(ann.eval())
    net = direct_net(cfg.direct_model, train.in_shape, train.num_classes, encoding=cfg.direct_encoding,
                     threshold=cfg.direct_threshold)
    tc = TrainConfig(epochs=cfg.direct_epochs, batch_size=cfg.batch_size, lr=cfg.direct_lr,
                     seed=cfg.seed)
    fit(DirectTask(net, steps=cfg.direct_steps, seed=cfg.seed), train, tc, val=val)
    return net.eval()


def ann_train_config(cfg) -> TrainConfig:
    """The QCFS ANN's recipe: ``cfg.ann_optimizer`` (SGD with momentum 0.9 in QCFS and in the
    Dynamic Confidence code) with ``cfg.ann_weight_decay`` (5e-4 in both), cosine decay; a config
    without those fields (``spiking.faults``) keeps Adam without weight decay."""
    return TrainConfig(epochs=cfg.ann_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                       optimizer=getattr(cfg, "ann_optimizer", "adam"),
                       weight_decay=getattr(cfg, "ann_weight_decay", 0.0), seed=cfg.seed)


def qcfs_ann(model: str, in_shape, num_classes: int, levels: int, weights=None):
    """A QCFS ANN: one of :data:`spiking.ARCHITECTURES`, else any model spec of
    :func:`hwlab.models.resolve` (zoo name, ``module:callable``, entry point; optional initial
    ``weights``) with its ReLUs swapped for QCFS and max pools for average pools
    (:func:`spiking.with_qcfs`)."""
    if model in ARCHITECTURES:
        return qcfs_net(model, in_shape, num_classes, levels=levels)
    return with_qcfs(resolve(model, in_shape, num_classes, weights=weights), levels=levels)


def best_fixed(rec: Recording, points: float = 0.005) -> tuple[float, int]:
    """(A*, T*): the best fixed-T accuracy and the smallest T within ``points`` of it."""
    curve = rec.accuracy_curve()
    a_star = float(curve.max())
    t_star = int((curve >= a_star - points - 1e-12).nonzero()[0, 0]) + 1
    return a_star, t_star


def live_ms(net, x, rule, threshold, steps, cfg) -> float:
    """Median wall-clock ms per sample of the live runner over the whole set."""
    with torch.no_grad():
        lat = latency(run_live, net, x, rule, threshold, steps=steps, batch_size=cfg.eval_batch,
                      seed=cfg.seed, warmup=1, repeats=cfg.latency_repeats)
    return lat.median_ms / len(x)


@dataclass(frozen=True)
class PathResult:
    val: Recording
    test: Recording
    a_star: float
    t_star: int
    calibrations: dict[str, Calibration]


def evaluate_path(net: SpikingNet, val: Split, test: Split, cfg) -> PathResult:
    """Record val and test to ``max_steps`` once and calibrate every rule on val."""
    rv = record(net, val, cfg.max_steps, batch_size=cfg.eval_batch, seed=cfg.seed)
    rt = record(net, test, cfg.max_steps, batch_size=cfg.eval_batch, seed=cfg.seed)
    a_star, t_star = best_fixed(rt)
    cals = {name: calibrate(rv, rule_for(name, cfg), tolerance=cfg.tolerance,
                            budget=calibration_budget(cfg))
            for name in ("dynamic-confidence", "entropy", "margin")}
    return PathResult(rv, rt, a_star, t_star, cals)


def calibration_budget(cfg) -> float | None:
    """``calibrate``'s ``budget`` from a config: ``cfg.budget`` when ``cfg.calibration`` is
    'budget'; ``None`` (tolerance mode) otherwise and for configs without the field
    (``spiking.faults`` keeps its documented figures)."""
    return cfg.budget if getattr(cfg, "calibration", "tolerance") == "budget" else None


def rule_for(name: str, cfg):
    return dynamic_confidence_rule(cfg.constant) if name == "dynamic-confidence" else get_rule(name)


def test_curve(rec: Recording, rule, cal: Calibration) -> list[list[float]]:
    """The test accuracy-vs-steps Pareto front over the val candidate thresholds."""
    curve = sweep(rec, rule, cal.curve["threshold"].to_numpy())
    front = curve[pareto_front(curve)].sort_values("mean_steps")
    return [[round(float(r.threshold), 6), round(float(r.accuracy), 4),
             round(float(r.mean_steps), 3)] for r in front.itertuples()]
