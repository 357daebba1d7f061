"""Study ``localtrain.compare``: every rule on the same model, data, budget and seed.

For each model, each K (8 only where the model has enough units, i.e. the ResNets) and each rule,
one result row: test accuracy after ``epochs`` of ``hwlab.train.fit`` (NULL when ``epochs=0``:
memory and latency only), peak training memory of one step (``hwlab.meters.training_memory``:
saved activations + parameter, gradient and optimizer bytes, auxiliary nets included), median
latency of one training step, and the parameter count including auxiliary nets. E2E is one row per
model (variant ``K=1``). Rows are keyed ``model|rule|K=k`` so an interrupted run resumes.
"""

from __future__ import annotations

import types
from dataclasses import asdict, dataclass

import torch

from hwlab.errors import check
from hwlab.studies import Study, run_items

__all__ = ["COMPARE_STUDY", "CompareConfig", "CompareStudy"]


@dataclass(frozen=True)
class CompareConfig:
    models: tuple[str, ...] = ("resnet32", "resnet20", "vit-tiny")  # the three networks
    dataset: str = "mnist5k"  # 4,000 training images: ResNet-32 trains on a CPU in minutes/epoch
    rules: tuple[str, ...] = ("e2e", "dgl", "infopro", "man", "auglocal", "featrecon")  # all
    ks: tuple[int, ...] = (2, 4, 8)  # the K values; K=8 only where the model has 8 units
    epochs: int = 5  # equal budget for every rule; 0 measures memory and latency only
    train_size: int = 0  # 0 = the whole training split; else a seeded stratified subset
    batch_size: int = 128  # the training batch
    memory_batch: int = 128  # the batch memory and latency are read at (activations dominate)
    lr: float = 1e-3  # Adam, cosine schedule: hwlab.train defaults, no per-rule tuning
    balance: str = "memory"  # InfoPro*: cuts balance saved activations (the memory target)
    latency_repeats: int = 5  # timed training steps per row (median reported)
    seed: int = 0  # same initial weights, shuffling and subset for every rule


def _item(args: dict) -> dict:
    """Train and measure one (model, rule, K); top-level so that executors can pickle it."""
    from hwlab.data import load
    from hwlab.models import create_model
    from hwlab.train import TrainConfig, evaluate, fit
    from localtrain._measure import measure_step
    from localtrain._rules import make_rule

    cfg = CompareConfig(**args["config"])
    train = load(cfg.dataset, "train", seed=cfg.seed)
    test = load(cfg.dataset, "test", seed=cfg.seed)
    if cfg.train_size:
        train = train.subset(cfg.train_size, seed=cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # identical initial weights for every rule
        model = create_model(args["model"], train.in_shape, train.num_classes)
        rule = make_rule(args["rule"], model, K=args["K"], in_shape=train.in_shape,
                         balance=cfg.balance, lr=cfg.lr)
    accuracy, seconds = None, None
    if cfg.epochs > 0:
        tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
        hist = fit(rule, train, tc)
        accuracy, seconds = evaluate(rule, test), hist.seconds
    n = min(cfg.memory_batch or cfg.batch_size, len(train))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        dev = rule.device  # fit moved the rule to CUDA when available
        m = measure_step(rule, train.x[:n].to(dev), train.y[:n].to(dev),
                         repeats=cfg.latency_repeats)
    extra = {k: m[k] for k in ("saved_peak_bytes", "param_bytes", "grad_bytes", "optimizer_bytes")}
    extra.update(epochs=cfg.epochs, train_size=len(train), batch_size=n, balance=cfg.balance,
                 train_seconds=seconds, cuts=[list(b) for b in rule.partition.unit_bounds])
    return {"module": "localtrain", "method": args["rule"], "model": args["model"],
            "dataset": cfg.dataset, "variant": f"K={args['K']}", "seed": cfg.seed,
            "accuracy": accuracy, "memory_bytes": m["memory_bytes"],
            "latency_ms": m["latency_ms"], "params": m["params"], "extra": extra}


def _n_units(model_name: str, in_shape) -> int:
    from hwlab.models import create_model
    from localtrain._split import partition

    with torch.random.fork_rng(devices=[]):
        return len(partition(create_model(model_name, in_shape, 10), 1).units)


class CompareStudy(Study):
    name = "localtrain.compare"
    module = "localtrain"
    description = ("Local learning (DGL, InfoPro, MAN, AugLocal, feature reconstruction) vs E2E: "
                   "accuracy, peak training memory, step latency for K local modules.")
    Config = CompareConfig
    quick = types.MappingProxyType({"models": ("resnet20", "vit-tiny"), "ks": (4,), "epochs": 1,
                                    "train_size": 256, "batch_size": 64, "memory_batch": 64,
                                    "latency_repeats": 3})

    def items(self, config: CompareConfig) -> dict[str, dict]:
        """Result key -> item argument, in a stable order."""
        from hwlab.data import load
        from hwlab.models import list_models
        from localtrain._rules import RULES

        caller = f"study {self.name}"
        for m in config.models:
            check(m in list_models(), "models", caller, f"names from {list_models()}", m)
        for r in config.rules:
            check(r in RULES, "rules", caller, f"names from {list(RULES)}", r)
        check(all(isinstance(k, int) and k >= 2 for k in config.ks), "ks", caller,
              "integers >= 2", config.ks)
        check(config.epochs >= 0 and config.train_size >= 0, "epochs", caller,
              "an integer >= 0 (train_size too)", (config.epochs, config.train_size))
        check(config.balance in ("layers", "memory"), "balance", caller, "layers or memory",
              config.balance)
        in_shape = load(config.dataset, "test", seed=config.seed).in_shape
        cfg = asdict(config)
        out: dict[str, dict] = {}
        for model in config.models:
            units = _n_units(model, in_shape)
            for rule in config.rules:
                ks = (1,) if rule == "e2e" else tuple(k for k in config.ks if k <= units)
                for k in ks:
                    out[f"{model}|{rule}|K={k}"] = {"config": cfg, "model": model, "rule": rule,
                                                    "K": k}
        return out

    def run(self, config, store, progress=None, executor=None) -> str:
        items = self.items(config)
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, items, _item, executor, progress)
        return run_id


COMPARE_STUDY = CompareStudy()
