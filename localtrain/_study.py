"""Study ``localtrain.compare``: every rule on the same model, data, budget and seed.

For each model, each K (8 only where the model has enough units, i.e. the ResNets) and each rule,
one result row: test accuracy after ``epochs`` of ``hwlab.train.fit`` (NULL when ``epochs=0``:
memory and latency only), peak training memory of one step (``hwlab.meters.training_memory``:
saved activations + parameter, gradient and optimizer bytes, auxiliary nets included; in
``extra`` also the independent live-tensor peak, ``hwlab.meters.live_memory``, which sees inside
checkpointed segments), median latency of one training step (the time per step: the price of the
auxiliary nets, of recomputation for ``checkpoint`` and of the double backward for ``sgr``), and
the parameter count including auxiliary nets. E2E is one row per
model (variant ``K=1``). Rows are keyed ``model|rule|K=k`` so an interrupted run resumes.

A local rule exists to save memory: after the run, every row whose peak training memory exceeds
the E2E row of the same model is logged as a warning (``logging``, logger ``localtrain._study``),
with the ratio, so a split that costs memory (e.g. ``balance="layers"`` on a VGG, where
InfoPro's first module holds the large early maps) is never reported in silence.
"""

from __future__ import annotations

import logging
import math
import types
from dataclasses import dataclass

from hwlab import figures
from hwlab.seeds import seeded
from hwlab.studies import Study, StudyConfig, param, run_items
from localtrain._rules import RULES

__all__ = ["COMPARE_STUDY", "CompareConfig", "CompareItem", "CompareStudy", "warn_above_e2e"]

log = logging.getLogger(__name__)


_RULES = RULES


@dataclass(frozen=True)
class CompareConfig(StudyConfig):
    models: tuple[str, ...] = param(  # the three networks
        ("resnet32", "resnet20", "vit-tiny"), "models: zoo names, module:callable or "
        "hwlab.models entry points", kind="model", nonempty=True)
    dataset: str = param(  # 4,000 training images: ResNet-32 trains on a CPU in minutes/epoch
        "mnist5k", "dataset spec (see hwlab.data.load)", kind="dataset")
    rules: tuple[str, ...] = param(  # all of them
        _RULES, "local-learning rules", choices=_RULES, nonempty=True)
    ks: tuple[int, ...] = param(  # the K values; K=8 only where the model has 8 units
        (2, 4, 8), "numbers of local modules K", range=(2, None), nonempty=True)
    epochs: int = param(  # equal budget for every rule; 0 measures memory and latency only
        5, "training epochs (0: memory and latency only)", range=(0, None))
    train_size: int = param(  # 0 = the whole training split; else a seeded stratified subset
        0, "training images (0 = all)", range=(0, None))
    batch_size: int = param(128, "training batch", range=(1, None))
    memory_batch: int = param(  # activations dominate
        128, "batch memory and latency are read at", range=(1, None))
    lr: float = param(  # Adam, cosine schedule: hwlab.train defaults, no per-rule tuning
        1e-3, "Adam learning rate", range=(0, None), inclusive=(False, True))
    balance: str = param(  # InfoPro*: cuts balance saved activations (the memory target)
        "memory", "what the cuts balance", choices=("layers", "memory"))
    latency_repeats: int = param(5, "timed training steps per row (median)", range=(1, None))
    seed: int = param(  # same initial weights, shuffling and subset for every rule
        0, "seed of weights, shuffling and subset", range=(0, None))
    paper_models: tuple[str, ...] = param(  # off by default: ResNet-110 at batch 1024 needs GBs
        (), "models also measured at the papers' setting (3x32x32, synthetic batch; memory and "
        "time only)", choices=("resnet32", "resnet110"))
    paper_batches: tuple[int, ...] = param(  # InfoPro Table 3 trains at 1024; 128 is common
        (128, 1024), "batches of the papers' setting", range=(1, None), nonempty=True)


@dataclass(frozen=True)
class CompareItem:
    """One (model, rule, K) to train and measure."""

    config: CompareConfig
    model: str
    rule: str
    k: int
    batch: int = 0  # > 0: memory at the papers' setting (3x32x32 synthetic batch of this size)


def _paper_item(item: CompareItem) -> dict:
    """One row at the papers' setting: memory (both meters) and time of one step, no accuracy."""
    from localtrain._paper import paper_memory_row

    cfg = item.config
    r = paper_memory_row(item.model, item.rule, item.k, item.batch, balance=cfg.balance,
                         repeats=cfg.latency_repeats, seed=cfg.seed)
    extra = {k: r[k] for k in ("saved_peak_bytes", "param_bytes", "grad_bytes", "optimizer_bytes",
                               "live_peak_bytes", "live_memory_bytes", "cuts", "paper_ratio",
                               "paper_source")}
    extra.update(epochs=0, batch_size=item.batch, balance=cfg.balance)
    return {"module": "localtrain", "method": item.rule, "model": item.model,
            "dataset": "synthetic-3x32x32", "variant": f"K={r['K']} b={item.batch}",
            "dtype": "float32", "seed": cfg.seed, "accuracy": None,
            "memory_bytes": r["memory_bytes"], "latency_ms": r["latency_ms"],
            "params": r["params"], "extra": extra}


def _item(item: CompareItem) -> dict:
    """Train and measure one (model, rule, K); top-level so that executors can pickle it."""
    from hwlab.data import load
    from hwlab.models import resolve
    from hwlab.train import TrainConfig, evaluate, fit
    from localtrain._measure import measure_step
    from localtrain._rules import make_rule

    cfg = item.config
    if item.batch:
        return _paper_item(item)
    train = load(cfg.dataset, "train", seed=cfg.seed)
    test = load(cfg.dataset, "test", seed=cfg.seed)
    if cfg.train_size:
        train = train.subset(cfg.train_size, seed=cfg.seed)
    with seeded(cfg.seed):  # identical initial weights for every rule
        model = resolve(item.model, train.in_shape, train.num_classes)
        rule = make_rule(item.rule, model, K=item.k, in_shape=train.in_shape,
                         balance=cfg.balance, lr=cfg.lr)
    accuracy, seconds = None, None
    if cfg.epochs > 0:
        tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
        hist = fit(rule, train, tc)
        accuracy, seconds = evaluate(rule, test), hist.seconds
    n = min(cfg.memory_batch or cfg.batch_size, len(train))
    with seeded(cfg.seed):
        dev = rule.device  # fit moved the rule to CUDA when available
        m = measure_step(rule, train.x[:n].to(dev), train.y[:n].to(dev),
                         repeats=cfg.latency_repeats)
    extra = {k: m[k] for k in ("saved_peak_bytes", "param_bytes", "grad_bytes", "optimizer_bytes",
                               "live_peak_bytes", "live_memory_bytes")}
    extra.update(epochs=cfg.epochs, train_size=len(train), batch_size=n, balance=cfg.balance,
                 train_seconds=seconds, cuts=[list(b) for b in rule.partition.unit_bounds])
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    return {"module": "localtrain", "method": item.rule, "model": item.model,
            "dataset": cfg.dataset, "variant": f"K={item.k}", "dtype": ",".join(dtypes),
            "seed": cfg.seed, "accuracy": accuracy, "memory_bytes": m["memory_bytes"],
            "latency_ms": m["latency_ms"], "params": m["params"], "extra": extra}


def _n_units(model_name: str, in_shape, num_classes: int) -> int:
    from hwlab.models import resolve
    from localtrain._split import partition

    with seeded(0):
        return len(partition(resolve(model_name, in_shape, num_classes), 1).units)


def warn_above_e2e(rows) -> list[str]:
    """Log a warning for every row whose ``memory_bytes`` exceeds the E2E row of its model.

    ``rows``: result rows of one run (a DataFrame with ``method``, ``model``, ``variant``,
    ``memory_bytes``; rows of the papers' setting, variant ``K=k b=B``, are read against the E2E
    row of the same model and batch). Returns the warnings (also logged).
    """
    out = []
    setting = rows["variant"].astype(str).str.extract(r"(b=\d+)", expand=False).fillna("")
    keys = [rows["model"], setting] + ([rows["dataset"]] if "dataset" in rows else [])
    for (model, *_), group in rows.groupby(keys, sort=False):
        base = group.loc[group["method"] == "e2e", "memory_bytes"]
        if base.empty or not (base.iloc[0] > 0):
            continue
        e2e = float(base.iloc[0])
        for row in group.itertuples():
            mem = row.memory_bytes
            if row.method == "e2e" or mem is None or math.isnan(mem) or mem <= e2e:
                continue
            msg = (f"localtrain.compare: {row.method} {row.variant} on {model} needs "
                   f"{mem / e2e:.2f}x the training memory of E2E ({int(mem)} > {int(e2e)} "
                   f"bytes): its local modules save no memory; try balance='memory' or a "
                   f"larger K")
            log.warning(msg)
            out.append(msg)
    return out


class CompareStudy(Study):
    name = "localtrain.compare"
    module = "localtrain"
    description = ("Local learning (DGL, InfoPro, MAN, AugLocal, feature reconstruction, SGR) vs "
                   "E2E and gradient checkpointing: accuracy, peak training memory, time per "
                   "training step for K local modules.")
    Config = CompareConfig
    figure = figures.training_memory  # key figure
    figure_title = "accuracy vs peak training memory per rule and K"
    latency_kind = "train_step_ms"  # one training step
    memory_kind = "train_memory_bytes"  # peak training memory
    page = "localtrain"
    quick_seconds = 149  # measured once (see Study.quick_seconds) at load 4-5; ~15 s on idle cores
    # quick: ResNet-20 on digits (1,438 8x8 training images), 2 epochs = 46 Adam steps: E2E ~0.97
    # test accuracy and every rule far above chance in ~15 s of training on 2 idle cores (the
    # old resnet20 + vit-tiny, 256 mnist5k images, 1 epoch left every rule at chance; vit-tiny
    # needs ~8 epochs on digits to leave chance, so it is not in the quick run)
    quick = types.MappingProxyType({"models": ("resnet20",), "dataset": "digits", "ks": (4,),
                                    "epochs": 2, "train_size": 0, "batch_size": 64,
                                    "memory_batch": 64, "latency_repeats": 3})

    def items(self, config: CompareConfig) -> dict[str, CompareItem]:
        """Result key -> work item, in a stable order."""
        from hwlab.data import load

        test = load(config.dataset, "test", seed=config.seed)
        out: dict[str, CompareItem] = {}
        for model in config.models:
            units = _n_units(model, test.in_shape, test.num_classes)
            for rule in config.rules:
                ks = (1,) if rule == "e2e" else tuple(k for k in config.ks if k <= units)
                for k in ks:
                    out[f"{model}|{rule}|K={k}"] = CompareItem(config, model, rule, k)
        for model in config.paper_models:  # resnet32: 16 units, resnet110: 55
            units = 16 if model == "resnet32" else 55
            for batch in config.paper_batches:
                for rule in config.rules:
                    ks = (1,) if rule == "e2e" else tuple(k for k in config.ks if k <= units)
                    for k in ks:
                        out[f"{model}|{rule}|K={k}|3x32x32|b={batch}"] = CompareItem(
                            config, model, rule, k, batch)
        return out

    def run(self, config, store, progress=None, executor=None) -> str:
        items = self.items(config)
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, items, _item, executor, progress)
        warn_above_e2e(store.results(run_id=run_id))
        return run_id


COMPARE_STUDY = CompareStudy()
