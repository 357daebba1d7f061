"""The one trial engine: every study that evaluates a model under faults is a plan of frozen
:class:`~faultlab._trial.Trial` items run by ONE runner.

An :class:`Evaluation` freezes what every trial of a plan shares: the model, the data (streamed
in batches), the metrics, the fault-free pass and the engine's options (delayed start with its
prefix cache, the leaf modules the trace keeps opaque). :func:`runner` sends it to the
executor's workers once (``hwlab.executors.share``: a file read once per process-pool worker,
one broadcast on Dask, nothing for the serial executor) and yields a :class:`Runner` whose
:meth:`Runner.run` executes a plan (``{key: Trial}``) through ``hwlab.studies.run_items``: resume,
progress, batched writes and executors behave the same in every study. Each trial draws (or
replays) its maps, injects them, evaluates the metrics, restores the weights and returns its row
(:func:`faultlab._trial.run_trial`).

Studies differ in their plan and their metrics, never in a copied loop::

    ev = evaluation(model, test, ("accuracy", "sdc"), batch_size=500)
    plan = {f"{v}|trial={t}": Trial((BitFlip(rate=r),), t, seed, map_seed=...) ...}
    with runner(ev, executor) as run:
        run.run(store, run_id, plan, progress, defaults={"model": name, ...})

A study comparing several models (clipped variants, retrained ones) makes one Evaluation per
model and runs each model's trials on its own runner, into the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

from faultlab._campaign_data import CACHE_BYTES, CampaignData, Clean, prepare
from faultlab._trial import Trial, build_evaluator, run_trial
from hwlab.errors import check, check_bool, check_positive_int
from hwlab.graph import check_leaf_modules
from hwlab.metrics import resolve_metrics
from hwlab.studies import run_items

__all__ = ["Evaluation", "Runner", "Trial", "evaluation", "runner"]


@dataclass(frozen=True)
class Evaluation:
    """What every trial of a plan shares (build it with :func:`evaluation`)."""

    model: nn.Module
    data: CampaignData
    clean: Clean  # the fault-free pass (values, per-batch logits or top-1 when they fit)
    metrics: tuple  # resolved hwlab.metrics Metric objects; the first is the primary one
    delayed_start: bool = True  # fault dropping and the prefix cache (rows are identical)
    cache_bytes: int = CACHE_BYTES  # bound of the fault-free caches
    leaf_modules: tuple = ()  # submodules the trace keeps opaque

    @property
    def parts(self) -> tuple:
        """What :func:`faultlab._trial.build_evaluator` builds a worker's Evaluator from."""
        return (self.model, self.data, self.clean, self.metrics, self.delayed_start,
                self.cache_bytes, self.leaf_modules)


def evaluation(model: nn.Module, data, metrics=("accuracy",), *, batch_size: int = 500,
               delayed_start: bool = True, cache_bytes: int = CACHE_BYTES, leaf_modules=(),
               full: bool = True, model_name: str | None = None,
               caller: str = "evaluation") -> Evaluation:
    """Check the arguments, run the fault-free pass once and freeze the :class:`Evaluation`.

    ``data``: a Split, an ``(x, y)`` pair, a DataLoader or any re-iterable of batches;
    ``metrics``: names of :mod:`hwlab.metrics` or callables (see :func:`faultlab.campaign`).
    ``full=False`` skips the fault-free values (nothing compares with them; see
    :func:`faultlab._campaign_data.prepare`). A model that rejects the data is an error naming
    both shapes, before any run is opened.
    """
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
          type(model).__name__)
    batch_size = check_positive_int(batch_size, "batch_size", caller)
    cache_bytes = check_positive_int(cache_bytes, "cache_bytes", caller, minimum=0)
    delayed_start = check_bool(delayed_start, "delayed_start", caller)
    leaves = check_leaf_modules(model, leaf_modules, caller)
    resolved = tuple(resolve_metrics(metrics, caller))
    cdata = CampaignData(data, batch_size, caller, model)
    clean = prepare(model, cdata, resolved, cache_bytes, model_name, full)
    return Evaluation(model, cdata, clean, resolved, delayed_start, cache_bytes, leaves)


@dataclass(frozen=True)
class Runner:
    """Runs plans on one shared :class:`Evaluation` (yielded by :func:`runner`)."""

    executor: Any  # a concurrent.futures.Executor or None (serial)
    shared: Any  # the hwlab.executors.share handle of the evaluation's parts

    def run(self, store, run_id: str, plan: Mapping[str, Trial], progress=None,
            defaults: Mapping[str, Any] | None = None, maps_per_pass: int = 1) -> int:
        """Run every trial of ``plan`` whose key is not stored in run ``run_id`` yet; return
        the number of rows written. ``defaults``: columns every row gets unless it sets them.
        ``maps_per_pass > 1`` evaluates up to that many weight-fault trials per forward pass
        (:mod:`faultlab._batched`)."""
        if maps_per_pass > 1:
            from faultlab._batched import run_trials

            return run_items(store, run_id, plan, run_trials, self.executor, progress, defaults,
                             shared=self.shared, batch=maps_per_pass)
        return run_items(store, run_id, plan, run_trial, self.executor, progress, defaults,
                         shared=self.shared)


@contextmanager
def runner(ev: Evaluation, executor=None):
    """Share ``ev`` with the workers of ``executor`` (None, an Executor or a spec string such as
    ``"process:2"``, opened and closed here) once, and yield the :class:`Runner`."""
    from contextlib import ExitStack

    from hwlab.executors import share

    check(isinstance(ev, Evaluation), "ev", "runner", "a faultlab Evaluation (see evaluation)",
          type(ev).__name__)
    with ExitStack() as stack:
        ex = executor
        if isinstance(executor, str):
            from hwlab.executors import get_executor

            ex = stack.enter_context(get_executor(executor))
        ref = stack.enter_context(share(ex, ev.parts, setup=build_evaluator))
        yield Runner(ex, ref)
