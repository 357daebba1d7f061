"""The ``quantum.creep`` study: train levels 0, 1, 2 of the creep model with one budget and seeds.

Per (dataset, level, seed) one row: ``module="quantum"``, ``method="creep"``,
``model="creep-cnn"``, ``variant="level-K"``, test ``accuracy``, ``params``, ``latency_ms`` (median
eval forward of a test batch / batch size, one torch thread), ``memory_bytes`` (parameter bytes),
and in ``extra`` the training seconds, the validation curve, the qubit counts and the budget.
Per (dataset, level) one ``method="creep-mean"`` row: the accuracy averaged over the seeds
(``extra``: std, the per-seed accuracies). Then a bit-flip sweep through faultlab on the
``fault_dataset`` models of the first seed: ``method="creep-faults"``, ``fault_model="bitflip"``,
``fault_rate`` = bit error rate, ``trial``, ``extra.target`` = ``"quantum"`` (the SU gate
coordinates ``theta``) or ``"classical"`` (the Conv2d / Linear weights), biases never hit.
The parameter-matched control arm (``control-K``), the noise-aware arm (``noisy-K``), the paired
``creep-paired-mean`` rows with the verdict and the ``creep-noise`` sweep: quantum._study_arms.

Trained weights are cached next to the store (``<store dir>/quantum-creep/``, loaded with
``weights_only=True``) so the fault sweep, and a resumed run, never train a model twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

from hwlab import figures
from hwlab.errors import check
from hwlab.seeds import derive_seed, seeded, torch_threads
from hwlab.studies import Study, StudyConfig, param, run_items

__all__ = ["CREEP_STUDY", "CreepConfig", "CreepStudy", "TrainItem"]

log = logging.getLogger(__name__)


_ORDERS = ("paper", "layer")  # quantum._swap.ORDERS (not imported here: it loads PennyLane)
_SCHEDULES = ("cosine", "none")  # hwlab.train.SCHEDULES
_CONTROL_LINEAR = ("mlp", "skip")  # quantum._control.CONTROL_LINEAR
_NOISE_KINDS = ("depolarizing", "depolarizing2", "damping", "readout", "shots")  # _study_arms


@dataclass(frozen=True)
class CreepConfig(StudyConfig):
    datasets: tuple[str, ...] = param(  # the two built-in real image sets
        ("digits", "mnist5k"), "datasets (hwlab.data specs)", kind="dataset", nonempty=True)
    levels: tuple[int, ...] = param(  # the paper's levels: classical, quantum convs, + linear
        (0, 1, 2), "swap levels (at most 2 for order=paper, 3 for order=layer)", range=(0, 3),
        nonempty=True)
    order: str = param(  # "paper" groups (convs, then linear); "layer": one layer per level
        "paper", "which layers a level swaps", choices=_ORDERS)
    seeds: tuple[int, ...] = param(  # the paper's 5 runs; same seeds for every level and arm
        (0, 1, 2, 3, 4), "training seeds", range=(0, None), nonempty=True)
    epochs: int = param(  # paper: 50 epochs of 60k images (15k steps); 15 x 80 steps fit a CPU
        15, "training epochs", range=(1, None))
    batch_size: int = param(  # paper: 200; 4k images need smaller batches for enough steps
        50, "training batch", range=(1, None))
    lr: float = param(  # Adam (paper: 5e-4 over 12x more steps); chosen on val, never on test
        1e-2, "Adam learning rate", range=(0, None), inclusive=(False, True))
    schedule: str = param(  # hwlab's default decay (paper: constant) to settle in 15 epochs
        "cosine", "learning-rate schedule", choices=_SCHEDULES)
    channels: tuple[int, ...] = param(  # paper (32, 16) halved
        (16, 8), "channels of the two convolutions", range=(1, None), nonempty=True)
    size: int = param(  # 28x28 -> 14x14: 800 features -> 5 qubits (paper: 32x32, 7 qubits)
        14, "input resize (pixels)", range=(1, None))
    reps: int = param(10, "re-uploading repetitions (paper: 10)", range=(1, None))
    train_limit: int = param(  # the first N of a seeded stratified shuffle; 0 = all
        0, "training images (0 = all)", range=(0, None))
    test_limit: int = param(0, "test images (0 = all)", range=(0, None))
    latency_batch: int = param(64, "test images per timed forward", range=(1, None))
    latency_repeats: int = param(10, "timed forwards after warm-up (median)", range=(1, None))
    fault_dataset: str = param(  # models of this dataset (first seed) get the fault sweep
        "mnist5k", "dataset of the fault sweep", kind="dataset")
    fault_rates: tuple[float, ...] = param(  # bit error rates of the parameters
        (1e-6, 1e-5, 1e-4), "per-bit flip rates", range=(0, 1), inclusive=(False, True))
    fault_trials: int = param(3, "fault maps per (level, target, rate)", range=(0, None))
    controls: bool = param(  # Freinberger & Moser 2026: hybrids must beat a same-size model
        True, "also train the parameter-matched classical control of every level > 0")
    control_linear: str = param(  # "skip": MLP + the linear map, never weaker than level 0's
        "skip", "control of the quantum linear layer", choices=_CONTROL_LINEAR)
    noise_aware: float = param(  # a mid level of the sweep below; 0 turns the arm off
        0.01, "depolarizing p (1 and 2 qubit) of the noise-aware training arm (0 = none)",
        range=(0, 1))
    noise_dataset: str = param(  # the cheaper set: noisy inference is 2-5x the noiseless
        "digits", "dataset of the device-noise sweep", kind="dataset")
    noise_kinds: tuple[str, ...] = param(  # every channel of quantum.Noise, one at a time
        ("depolarizing", "depolarizing2", "damping", "readout", "shots"),
        "noise kinds of the sweep (empty: no sweep)", choices=_NOISE_KINDS)
    noise_levels: tuple[float, ...] = param(  # the noise note's grid, one decade apart
        (1e-3, 1e-2, 1e-1), "channel probabilities of the sweep", range=(0, 1),
        inclusive=(False, True))
    noise_shots: tuple[int, ...] = param(  # from near-exact to a few shots per expectation
        (1000, 100, 10), "shots of the sweep's finite-shot kind", range=(1, None))

    def __post_init__(self):
        super().__post_init__()
        caller, top = f"study {self.study}", 2 if self.order == "paper" else 3
        check(all(v <= top for v in self.levels), "levels", caller,
              f"a non-empty tuple of integers in [0, {top}]", self.levels)
        check(len(self.channels) == 2, "channels", caller, "a pair of positive integers",
              self.channels)


@dataclass(frozen=True)
class TrainItem:
    """One (dataset, level, seed) model to train (or load) and measure."""

    budget: tuple  # sorted (name, value) pairs of _budget(config): hashable
    root: str  # checkpoint folder
    dataset: str
    level: int
    seed: int
    test_limit: int
    latency_batch: int
    latency_repeats: int
    arm: str = "hybrid"  # "hybrid", "control" or "noisy" (quantum._study_arms.ARMS)


def _budget(config: CreepConfig) -> dict:
    """The config fields that decide a trained model (the checkpoint key)."""
    keys = ("epochs", "batch_size", "lr", "schedule", "channels", "size", "reps", "train_limit",
            "order", "noise_aware", "control_linear")
    return {k: getattr(config, k) for k in keys}


def _checkpoint(root: str, budget: dict, dataset: str, level: int, seed: int,
                arm: str = "hybrid") -> Path:
    only = {"noise_aware": "noisy", "control_linear": "control"}  # keys deciding one arm only
    key = {k: v for k, v in budget.items() if only.get(k, arm) == arm}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)
    tag = "level" if arm == "hybrid" else arm
    return Path(root) / f"creep-{safe}-{tag}{level}-s{seed}-{digest}.pt"


def _data(dataset: str, split: str, limit: int, seed: int = 0):
    from hwlab.data import load

    data = load(dataset, split)
    return data.subset(limit, seed=seed) if limit else data


def _build(budget: dict, in_shape, num_classes: int, level: int, seed: int,
           arm: str = "hybrid"):
    from quantum._control import control
    from quantum._models import creep_model
    from quantum._noise import with_noise
    from quantum._study_arms import training_noise
    from quantum._swap import swap

    with seeded(seed):  # local: the global RNG state is restored on exit
        base = creep_model(in_shape, num_classes, channels=tuple(budget["channels"]),
                           size=budget["size"], reps=budget["reps"])
        hybrid = swap(base, level, order=budget["order"], reps=budget["reps"])
        if arm == "control":  # the hybrid's classical layers as drawn, controls fresh
            return control(hybrid, budget["control_linear"])
        noise = training_noise(arm, budget)
        return hybrid if noise is None else with_noise(hybrid, noise)


def _trained(budget: dict, root: str, dataset: str, level: int, seed: int,
             arm: str = "hybrid"):
    """The trained model (from the cache or trained now) and its training record; a noisy
    arm's model is returned noiseless (its weights, trained under noise)."""
    import torch

    from hwlab.train import TrainConfig, evaluate, fit
    from quantum._noise import with_noise

    train = _data(dataset, "train", budget["train_limit"], seed)
    model = _build(budget, train.in_shape, train.num_classes, level, seed, arm)
    path = _checkpoint(root, budget, dataset, level, seed, arm)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return with_noise(model, None).eval(), json.loads(meta.read_text())
    cfg = TrainConfig(epochs=budget["epochs"], batch_size=budget["batch_size"], lr=budget["lr"],
                      schedule=budget["schedule"], seed=seed, device="cpu")
    val = _data(dataset, "val", 0)
    history = fit(model, train, cfg, val=val)
    record = {"train_seconds": history.seconds, "steps": history.steps,
              "val_accuracy": evaluate(model, val), "val_curve": history.val_accuracy,
              "final_loss": history.losses[-1]["loss"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    meta.write_text(json.dumps(record))
    return with_noise(model, None).eval(), record


def _train_row(item: TrainItem) -> dict:
    """Train (or load) one (dataset, level, seed) model and measure it. Top-level: picklable."""
    import torch

    from hwlab import meters
    from hwlab.train import evaluate
    from quantum._study_arms import variant
    from quantum._swap import classical_parameters, quantum_parameters

    budget, dataset, level, seed = dict(item.budget), item.dataset, item.level, item.seed
    lat_batch = item.latency_batch
    with torch_threads(1):  # comparable timings on a shared CPU
        model, record = _trained(budget, item.root, dataset, level, seed, item.arm)
        test = _data(dataset, "test", item.test_limit)
        acc = evaluate(model, test)
        with torch.no_grad():
            timing = meters.latency(model, test.x[:lat_batch], repeats=item.latency_repeats)
    params = dict(model.named_parameters())
    n_q = sum(params[n].numel() for n in quantum_parameters(model))
    n_c = sum(params[n].numel() for n in classical_parameters(model))
    qubits = {n: m.n_qubits for n, m in model.named_modules() if hasattr(m, "n_qubits")}
    n_lat = min(lat_batch, len(test))
    return {
        "module": "quantum", "method": "creep", "model": "creep-cnn", "dataset": dataset,
        "variant": variant(item.arm, level), "seed": seed, "accuracy": acc,
        "latency_ms": timing.median_ms / n_lat, "params": meters.param_count(model),
        "memory_bytes": int(sum(meters.model_bytes(model).values())),
        "extra": {**record, "level": level, "arm": item.arm, "quantum_params": n_q,
                  "classical_weights": n_c, "qubits": qubits, "latency_batch": n_lat, "latency_iqr_ms": timing.iqr_ms,
                  "test_size": len(test), **budget},
    }


def _fault_plans(config: CreepConfig, budget: tuple, root: str):
    """``(level, trained model, test split, plan)`` per level of the bit-flip sweep: maps on
    the level's quantum gates or classical weights, run on faultlab's one trial engine."""
    import faultlab as fl
    from quantum._swap import classical_parameters, quantum_parameters

    c, seed, dataset = config, config.seeds[0], config.fault_dataset
    for lv in c.levels:
        model, _ = _trained(dict(budget), root, dataset, lv, seed)
        plan = {}
        for target in _targets(lv, c.order):
            names = quantum_parameters(model) if target == "quantum" else \
                classical_parameters(model)
            for rate in c.fault_rates:
                for t in range(c.fault_trials):
                    key = f"fault|{dataset}|level-{lv}|{target}|rate={rate:g}|trial={t}"
                    fseed = derive_seed(seed, key) % 2**31
                    plan[key] = fl.Trial(
                        (fl.BitFlip(rate=rate),), t, seed, layers=tuple(names), map_seed=fseed,
                        columns=(("module", "quantum"), ("method", "creep-faults"),
                                 ("model", "creep-cnn"), ("variant", f"level-{lv}"),
                                 ("fault_model", "bitflip"), ("latency_ms", None)),
                        extra=(("target", target), ("fault_seed", fseed),
                               ("parameters", list(names))))
        yield lv, model, _data(dataset, "test", c.test_limit), plan


def _mean_rows(store, run_id: str, config: CreepConfig) -> list[dict]:
    """One row per (dataset, level, arm): accuracy averaged over the seeds (once all are
    stored)."""
    from quantum._study_arms import arms, variant

    df = store.results(run_id=run_id)
    df = df[df["method"] == "creep"]
    rows = []
    names = [variant(a, lv) for lv in config.levels for a in arms(config) if lv or a == "hybrid"]
    for dataset in config.datasets:
        for name in names:
            part = df[(df["dataset"] == dataset) & (df["variant"] == name)]
            if len(part) < len(config.seeds):
                continue
            accs = [float(a) for a in part.sort_values("seed")["accuracy"]]
            rows.append({
                "key": f"mean|{dataset}|{name}", "module": "quantum",
                "method": "creep-mean", "model": "creep-cnn", "dataset": dataset,
                "variant": name, "accuracy": statistics.fmean(accs),
                "latency_ms": float(part["latency_ms"].median()),
                "params": int(part["params"].iloc[0]),
                "extra": {"std": statistics.stdev(accs) if len(accs) > 1 else None,
                          "accuracies": accs, "seeds": list(config.seeds)}})
    return rows


class CreepStudy(Study):
    """Levels 0..2 of the creep model on each dataset, then a bit-flip sweep."""

    name = "quantum.creep"
    module = "quantum"
    description = ("Let the quantum creep in: train the Conv-Conv-Linear model with 0, 1, 2 "
                   "layer groups swapped for PennyLane quantum layers (same budget and seeds); "
                   "accuracy, params, latency; paired against parameter-matched classical controls; "
                   "bit flips; accuracy under device noise and finite shots.")
    Config = CreepConfig
    figure = figures.quantum_levels  # key figure
    figure_title = "accuracy per quantum level"
    latency_kind = "inference_ms"  # per sample
    memory_kind = "model_bytes"  # the parameters as stored
    page = "quantum"
    quick_seconds = 47  # measured once (see Study.quick_seconds)
    # quick: 1 seed, 1,000 images, batch 20 so that level 2 gets the ~200 Adam steps it needs
    # to leave its bias-dominated start (val curves of the full run); a few minutes on 2 cores.
    quick = {"seeds": (0,), "epochs": 4, "batch_size": 20, "train_limit": 1000,  # noqa: RUF012
             "test_limit": 300, "fault_rates": (1e-5, 1e-4), "fault_trials": 2,
             "latency_repeats": 3, "noise_aware": 0.0, "noise_kinds": ("depolarizing", "shots"),
             "noise_levels": (0.1,), "noise_shots": (100,)}

    def run(self, config: CreepConfig, store, progress=None, executor=None) -> str:
        from quantum._study_arms import arms, noise_items, noise_row, paired_rows, variant

        budget = tuple(sorted(_budget(config).items()))
        root = str(Path(store.path).parent / "quantum-creep")
        train_items = {
            f"train|{d}|{variant(a, lv)}|seed={s}":
                TrainItem(budget, root, d, lv, s, config.test_limit, config.latency_batch,
                          config.latency_repeats, a)
            for d in config.datasets for lv in config.levels for a in arms(config)
            for s in config.seeds if (lv > 0 or a == "hybrid")
            and (a != "noisy" or d == config.noise_dataset)}  # noise-aware: for the sweep
        sweep = bool(config.fault_dataset in config.datasets and config.fault_trials
                     and config.fault_rates)
        with self.open_run(store, config) as run_id:
            log.info("quantum.creep: %d training items", len(train_items))
            run_items(store, run_id, train_items, _train_row, executor, progress)
            store.add_results(run_id, _mean_rows(store, run_id, config)
                              + paired_rows(store, run_id, config))
            if sweep:
                _fault_sweep(config, budget, root, store, run_id, progress, executor)
            run_items(store, run_id, noise_items(config, budget, root), noise_row, executor,
                      progress)
        return run_id


def _fault_sweep(config, budget, root, store, run_id, progress, executor) -> None:
    """The bit-flip sweep of the trained models (one evaluation per level) on the engine."""
    import faultlab as fl

    done = set(store.done_keys(run_id))
    with torch_threads(1):  # as the training rows: comparable on a shared CPU
        for _, model, test, plan in _fault_plans(config, budget, root):
            if not set(plan) - done:
                continue
            ev = fl.evaluation(model, test, ("accuracy",), batch_size=512, model_name="creep-cnn",
                               caller="study quantum.creep")
            with fl.runner(ev, executor) as run:
                run.run(store, run_id, plan, progress, {"dataset": config.fault_dataset})


def _targets(level: int, order: str) -> tuple[str, ...]:
    """Which parameter kinds a level's model has: quantum gates, classical weights, or both."""
    top = 2 if order == "paper" else 3
    return (("classical",) if level == 0 else ("quantum",) if level == top
            else ("quantum", "classical"))


CREEP_STUDY = CreepStudy()
