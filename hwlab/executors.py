"""Executors: where a study's independent items run, behind one ``concurrent.futures`` interface.

``get_executor(spec)`` understands four specs:

- ``"serial"``: runs each function inline in ``submit`` (debugging, tiny studies);
- ``"process:N"``: N local worker processes (``spawn`` start method, safe with torch and numba
  threads), each limited to one torch / OpenMP thread;
- ``"dask-local:N"``: a Dask ``LocalCluster`` of N single-threaded worker processes bound to
  127.0.0.1 (no dashboard), closed with the executor;
- ``"dask:ADDRESS"``: an existing Dask scheduler (``tcp://host:8786``), e.g. a cluster that spans
  several machines; the client is closed with the executor, the cluster is left running.

Use it as a context manager. Submitted functions must be top-level (picklable), and results must
not depend on the executor: derive seeds from the study seed and the item key
(:func:`hwlab.studies.derive_seed`), never from the order of completion.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor

from hwlab.errors import fail

__all__ = ["SPEC_FORMS", "DaskExecutor", "SerialExecutor", "get_executor", "parse_spec"]

SPEC_FORMS = "'serial', 'process:N', 'dask-local:N' or 'dask:ADDRESS'"
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


class SerialExecutor(Executor):
    """A ``concurrent.futures.Executor`` that runs each function inline, in ``submit``."""

    def __init__(self):
        self._shutdown = False
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - kept in the future; KeyboardInterrupt propagates
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True


def _single_thread_worker() -> None:
    """Process-pool initializer: one compute thread per worker (N workers use N cores)."""
    for var in _THREAD_ENV:
        os.environ[var] = "1"  # read by OpenMP / numba when they start in this process
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but stay usable without
        return
    torch.set_num_threads(1)


class DaskExecutor(Executor):
    """A Dask ``Client`` executor that also closes its client (and its own local cluster)."""

    def __init__(self, client, cluster=None):
        self.client = client
        self.cluster = cluster
        self._inner = client.get_executor(pure=False)  # every submit runs, even if args repeat

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        try:
            self._inner.shutdown(wait=wait and not cancel_futures)
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def parse_spec(spec: str | None) -> tuple[str, str]:
    """Validate an executor spec without starting anything: ``(kind, argument)``."""
    if spec is None or spec == "serial":
        return "serial", ""
    kind, _, arg = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind in ("process", "dask-local"):
        if not re.fullmatch(r"[1-9][0-9]*", arg):
            raise fail("spec", "get_executor",
                       f"one of {SPEC_FORMS} with N a positive integer", spec)
        return kind, arg
    if kind == "dask" and arg:
        return kind, arg
    raise fail("spec", "get_executor", f"one of {SPEC_FORMS}", spec)


def get_executor(spec: str | None = "serial") -> Executor:
    """An executor for ``spec`` (see the module docstring); ``None`` means ``"serial"``."""
    kind, arg = parse_spec(spec)
    if kind == "serial":
        return SerialExecutor()
    if kind == "process":
        return ProcessPoolExecutor(max_workers=int(arg),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_single_thread_worker)
    from distributed import Client, LocalCluster

    if kind == "dask":
        return DaskExecutor(Client(arg))
    # Worker processes get OMP/MKL/OPENBLAS_NUM_THREADS=1 from the Dask nanny's default
    # pre-spawn environment, so torch starts with one thread in each.
    cluster = LocalCluster(n_workers=int(arg), threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    try:
        return DaskExecutor(Client(cluster), cluster)
    except BaseException:
        cluster.close()
        raise
