"""Executors: where a study's independent items run, behind one ``concurrent.futures`` interface.

``get_executor(spec)`` understands four specs:

- ``"serial"``: runs each function inline in ``submit`` (debugging, tiny studies);
- ``"process:N"``: N local worker processes (``spawn`` start method, safe with torch and numba
  threads), each limited to one torch / OpenMP thread. Spawned workers re-import the main script,
  so a script that creates one must keep its work under ``if __name__ == "__main__":``; a call
  from unguarded top-level code is detected and refused with that advice;
- ``"dask-local:N"``: a Dask ``LocalCluster`` of N single-threaded worker processes bound to
  127.0.0.1 (no dashboard), closed with the executor (the same main-script rule);
- ``"dask:ADDRESS"``: an existing Dask scheduler (``tcp://host:8786``), e.g. a cluster that spans
  several machines; the client is closed with the executor, the cluster is left running. An
  address where no scheduler answers is an error within a few seconds.

Use it as a context manager. Submitted functions must be top-level (picklable), and results must
not depend on the executor: derive seeds from the study seed and the item key
(:func:`hwlab.studies.derive_seed`), never from the order of completion.

Many small items and one large shared object (a model and its data) go through
:func:`share` and :func:`map_chunked` (module :mod:`hwlab._chunks`): the object reaches every
worker once and stays there, and items travel in chunks sized to keep every worker busy.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import re
import socket
import sys
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor, wait

from hwlab._chunks import ItemError, Shared, map_chunked, share, worker_count
from hwlab.errors import fail

__all__ = ["SPEC_FORMS", "DaskExecutor", "ItemError", "SerialExecutor", "Shared", "get_executor",
           "map_chunked", "parse_spec", "share", "worker_count"]

SPEC_FORMS = "'serial', 'process:N', 'dask-local:N' or 'dask:ADDRESS'"
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
CONNECT_SECONDS = 3.0  # a scheduler on a reachable host answers a TCP connect in milliseconds


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


def _warm() -> int:
    """A first task: makes the worker import torch (one thread) while the caller prepares."""
    _single_thread_worker()
    return os.getpid()


def _prestart(ex: Executor, n: int) -> Executor:
    """Start all ``n`` workers now (not on the first items), so their start-up overlaps the
    caller's own preparation (a campaign's fault-free pass); only Dask's are waited for."""
    if isinstance(ex, DaskExecutor):
        # One on each worker (Dask may put both on one), awaited: a payload scattered while a
        # worker's task thread imports torch is unpickled on its comm thread, and two threads
        # importing torch at once fail ("partially initialized module torch.nn.parameter").
        wait([ex.submit_on(addr, _warm) for addr in ex.client.nthreads()])
        return ex
    for _ in range(n):
        ex.submit(_warm)
    return ex


class _ProcessPool(ProcessPoolExecutor):
    """A process pool whose ``with`` block ends without waiting for the workers to exit.

    Queued work is cancelled; the workers' interpreter teardown (about 0.5 s with torch loaded)
    then runs in the background (``shutdown(wait=False)``), and the interpreter's exit still
    joins them."""

    def __exit__(self, *exc):
        self.shutdown(wait=False, cancel_futures=True)
        return False


class DaskExecutor(Executor):
    """A Dask ``Client`` executor that also closes its client (and its own local cluster)."""

    def __init__(self, client, cluster=None):
        self.client = client
        self.cluster = cluster
        self._inner = client.get_executor(pure=False)  # every submit runs, even if args repeat

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._inner.submit(fn, *args, **kwargs)

    def submit_on(self, worker: str, fn, /, *args) -> Future:
        """``submit`` to the worker at address ``worker`` (another one only if it is gone)."""
        return self._inner.submit(fn, *args, workers=[worker], allow_other_workers=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        try:
            self._inner.shutdown(wait=wait and not cancel_futures)
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()

    def __exit__(self, *exc):
        """End the block without waiting for an own local cluster to stop (about 0.5 s: its
        workers' teardown): it closes in a background thread that the interpreter's exit
        joins. The client is closed at once."""
        try:
            self._inner.shutdown(wait=False)
        finally:
            self.client.close()
            if self.cluster is not None:
                threading.Thread(target=self.cluster.close, name="hwlab-dask-close").start()
        return False


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


def _unguarded_main_call() -> str | None:
    """``"FILE:LINE"`` when the caller runs in a main script's unguarded top level, else None.

    Spawned workers (``process:N`` and Dask's nanny) import the main script again as
    ``__mp_main__``; work at its top level outside ``if __name__ == "__main__":`` then runs again in
    every worker. Found by locating the main script's module frame on the stack and parsing the
    script: the top-level statement that holds the current line must be such an ``if``.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not os.path.isfile(path):
        return None  # interactive, python -c, a notebook: nothing is re-imported
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>"
                                     and frame.f_globals.get("__name__") == "__main__"
                                     and os.path.abspath(frame.f_code.co_filename)
                                     == os.path.abspath(path)):
        frame = frame.f_back
    if frame is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    for stmt in tree.body:
        if stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            return None if _is_main_guard(stmt) else f"{path}:{line}"
    return None


def _is_main_guard(stmt) -> bool:
    if not isinstance(stmt, ast.If):
        return False
    test = stmt.test
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):  # guard and something
        return any(_is_main_guard(ast.If(test=v, body=[], orelse=[])) for v in test.values)
    if not isinstance(test, ast.Compare):
        return False
    sides = [test.left, *test.comparators]
    names = {s.id for s in sides if isinstance(s, ast.Name)}
    texts = {s.value for s in sides if isinstance(s, ast.Constant)}
    return names == {"__name__"} and texts == {"__main__"} and isinstance(test.ops[0], ast.Eq)


def _check_main_guard(spec: str) -> None:
    where = _unguarded_main_call()
    if where is None and not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    raise fail("spec", "get_executor", "used from a script whose work is guarded by "
               "`if __name__ == \"__main__\":` (spawned workers import the main script again and "
               f"would rerun it), or 'serial'; unguarded call at {where or 'a worker import'}",
               spec)


def _connect(spec: str, address: str):
    """A Dask client of ``address``; an address without a scheduler is a quick, clear error."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if "://" not in address or address.startswith(("tcp://", "tls://")):
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                     timeout=CONNECT_SECONDS).close()
        except ValueError:
            raise fail("spec", "get_executor", "'dask:ADDRESS' with ADDRESS like "
                       "tcp://host:8786", spec) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise fail("spec", "get_executor", "the address of a running Dask scheduler "
                       f"(connecting to {hostport} failed: {reason})", spec) from None
    from distributed import Client

    try:
        return Client(address, timeout=f"{int(3 * CONNECT_SECONDS)}s")
    except Exception as exc:  # noqa: BLE001 - refused, timed out, or not a Dask scheduler
        raise fail("spec", "get_executor", "the address of a running Dask scheduler "
                   f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", spec) from None


def get_executor(spec: str | None = "serial") -> Executor:
    """An executor for ``spec`` (see the module docstring); ``None`` means ``"serial"``."""
    kind, arg = parse_spec(spec)
    if kind == "serial":
        return SerialExecutor()
    if kind in ("process", "dask-local"):
        _check_main_guard(spec)
    if kind == "process":
        return _prestart(_ProcessPool(max_workers=int(arg),
                                      mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_single_thread_worker), int(arg))
    if kind == "dask":
        return DaskExecutor(_connect(spec, arg))
    import dask
    from distributed import Client, LocalCluster

    # Worker processes get OMP/MKL/OPENBLAS_NUM_THREADS=1 from the Dask nanny's default
    # pre-spawn environment, so torch starts with one thread in each. Its default
    # MALLOC_TRIM_THRESHOLD_=65536 is unset: an explicit trim threshold turns off glibc's dynamic
    # mmap threshold, so every activation tensor above 128 KiB is mmap-ed and page-faulted anew
    # (measured: a LeNet-5 forward on 500 images ran 2.7x slower in such a worker). The
    # periodic work of every Dask process (the statistical profiler, the 20 ms event-loop tick,
    # the system and memory monitors) runs beside the task threads on the same cores: made rare
    # here (measured: trials 5 % faster on 2 cores); chunks are placed by map_chunked, so
    # work stealing is off.
    quiet = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
             "distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
             "distributed.admin.system-monitor.interval": "5s",
             "distributed.worker.memory.monitor-interval": "1s",
             "distributed.scheduler.work-stealing": False}
    with dask.config.set(quiet):
        cluster = LocalCluster(n_workers=int(arg), threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
    try:
        return _prestart(DaskExecutor(Client(cluster), cluster), int(arg))
    except BaseException:
        cluster.close()
        raise
