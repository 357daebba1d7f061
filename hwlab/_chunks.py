"""Persistent worker state and chunked mapping over any executor.

A study with a large shared object (a model and its data) and many small items pays for the
object once per worker and for each item only its own work:

>>> with share(executor, (model, x, y), setup=build) as ref:       # once per campaign
...     for key, row in map_chunked(executor, trial, items, shared=ref):
...         ...                                                    # trial(build(obj), item)

- the object reaches each worker once: a pickle file written once to a private temporary folder
  for a process pool (workers read it on first use), ``client.scatter(..., broadcast=True)`` on
  Dask (the scheduler keeps it in every worker's memory), nothing at all for the serial executor;
- ``setup(obj)`` runs once per worker process (build an evaluator, warm Numba kernels) and its
  result is kept there, keyed by the share's token, for every later chunk and every later
  ``map_chunked`` call with the same ref (the workers of one executor stay up);
- items go in chunks of decreasing size (guided self-scheduling, Polychronopoulos & Kuck 1987:
  each chunk a ``1 / (2 * workers)`` share of what is left, down to a ``1 / (32 * workers)``
  share of all items): the first chunks are large, so per-task overhead (pickling, scheduling)
  is paid a few times per worker, and the last ones are small, so no worker idles long at the
  end while another finishes a large chunk;
- rows come back as each chunk finishes, in completion order; ``fn`` sees the same arguments as
  inline, so the results are those of the serial executor.

A worker runs one chunk of a given share at a time (a lock per token), so a Dask worker with
several threads never runs two items on the same model at once; give such workers one thread and
more processes for parallelism.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from hwlab.errors import HwlabError, check, is_int

__all__ = ["ItemError", "Shared", "map_chunked", "share", "worker_count"]

GUIDED_SHARE = 2  # a chunk is 1 / (GUIDED_SHARE * workers) of the items left: large ones first
MIN_SHARE = 32  # ... and at least 1 / (MIN_SHARE * workers) of all items: the tail's idle time
_STATE: dict[str, Any] = {}  # worker side only: token -> setup(obj); at most _KEEP entries
_KEEP = 2
_LOCK = threading.Lock()
_LOCKS: dict[str, threading.Lock] = {}


class ItemError(RuntimeError):
    """An item that raised: ``key``, the original exception's type name and message."""

    def __init__(self, key: str, kind: str, message: str, caller: str = "map_chunked"):
        super().__init__(f"item {key!r} of {caller} failed: {kind}: {message}")
        self.key, self.kind, self.message = key, kind, message


class Shared:
    """Handle of one object shared with every worker of an executor (see :func:`share`)."""

    def __init__(self, token: str, value: Any = None, path: str | None = None, future=None,
                 setup: Callable | None = None):
        self.token, self.path, self.future, self.setup = token, path, future, setup
        self._value = value  # this process only (serial / thread executors); never pickled
        self._state = None

    def __getstate__(self):
        return {"token": self.token, "path": self.path, "setup": self.setup}

    def __setstate__(self, state):
        self.__init__(state["token"], path=state["path"], setup=state["setup"])

    def local_state(self):
        """``setup(obj)`` in the sharing process (computed once)."""
        if self._state is None:
            self._state = self.setup(self._value) if self.setup else self._value
        return self._state


def _is_dask(executor) -> bool:
    return getattr(executor, "client", None) is not None and hasattr(executor.client, "scatter")


def _slots(executor) -> list | None:
    """One entry per worker thread of a Dask executor that can place tasks (``submit_on``)."""
    if not hasattr(executor, "submit_on"):
        return None
    return [addr for addr, n in executor.client.nthreads().items() for _ in range(n)] or None


def _is_inline(executor) -> bool:
    from hwlab.executors import SerialExecutor

    return executor is None or isinstance(executor, SerialExecutor)


def worker_count(executor) -> int:
    """How many items ``executor`` runs at once (1 for serial, N for ``process:N``, Dask threads)."""
    if _is_inline(executor):
        return 1
    if isinstance(executor, ProcessPoolExecutor):
        return int(executor._max_workers)
    if _is_dask(executor):
        return max(1, sum(executor.client.nthreads().values()))
    return max(1, int(getattr(executor, "_max_workers", 0) or os.cpu_count() or 1))


@contextmanager
def share(executor: Executor | None, obj: Any, setup: Callable | None = None) -> Iterator[Shared]:
    """Send ``obj`` to the workers of ``executor`` once; yield the :class:`Shared` handle.

    ``setup`` (top-level, picklable) turns the object into what ``fn`` receives, once per worker.
    The file or the scattered data is released on exit.
    """
    token = uuid.uuid4().hex
    if _is_inline(executor):
        yield Shared(token, obj, setup=setup)
        return
    if _is_dask(executor):
        future = executor.client.scatter(obj, broadcast=True, hash=False)
        try:
            yield Shared(token, obj, future=future, setup=setup)
        finally:
            executor.client.cancel([future])
        return
    folder = tempfile.mkdtemp(prefix="hwlab-shared-")
    try:
        path = os.path.join(folder, f"{token}.pkl")
        with open(path, "wb") as f:  # written by this process; read back only by its workers
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        yield Shared(token, obj, path=path, setup=setup)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _worker_state(ref: Shared, data: Any):
    """The worker's ``setup(obj)`` for ``ref``: built on first use, then reused."""
    state = _STATE.get(ref.token)
    if state is None:
        if data is None:
            with open(ref.path, "rb") as f:  # the sharing process wrote it (never a user file)
                data = pickle.load(f)
        state = ref.setup(data) if ref.setup else data
        while len(_STATE) >= _KEEP:
            _STATE.pop(next(iter(_STATE)))
        _STATE[ref.token] = state
    return state


def _groups(keys: list, items: list, batch: int | None):
    """``(keys, items, one)`` per call of ``fn``: single items, or lists of up to ``batch``."""
    if batch is None:
        return [([k], v, True) for k, v in zip(keys, items)]
    return [(keys[i:i + batch], items[i:i + batch], False) for i in range(0, len(keys), batch)]


def _chunk_bounds(n: int, workers: int, chunksize: int | None, max_pending: int | None,
                  batch: int | None) -> list[tuple[int, int]]:
    """``[(lo, hi)]`` of the chunks, in submission order: ``chunksize`` each when given, else
    guided (see the module docstring), at most ``max_pending // workers`` when limited, and
    whole groups of ``batch``."""
    def whole(size):
        size = max(1, size)
        return size if batch is None else batch * math.ceil(size / batch)

    if chunksize is not None:
        size = whole(chunksize)
        return [(lo, min(n, lo + size)) for lo in range(0, n, size)]
    cap = max(1, max_pending // workers) if max_pending is not None else n
    floor = min(cap, math.ceil(n / (MIN_SHARE * workers)))
    out, lo = [], 0
    while lo < n:
        size = whole(min(cap, max(floor, math.ceil((n - lo) / (GUIDED_SHARE * workers)))))
        out.append((lo, min(n, lo + size)))
        lo += size
    return out


def _call_group(fn, state, ref, group_keys, arg, one, caller):
    """``fn`` on one item or one group; a list of results with one per key."""
    args = (arg,) if ref is None else (state, arg)
    if one:
        return [fn(*args)]
    out = fn(*args)
    ok = isinstance(out, (list, tuple)) and len(out) == len(group_keys)
    check(ok, "fn", caller, f"a function returning one result per item of a group "
          f"({len(group_keys)})", type(out).__name__)
    return list(out)


def _run_chunk(fn: Callable, ref: Shared | None, data: Any, keys: list, items: list,
               batch: int | None = None, caller: str = "map_chunked") -> list:
    """Worker side: run a chunk in order; stop at the first item (or group) that raises."""
    if ref is None:
        state, lock = None, threading.Lock()
    else:
        with _LOCK:
            lock = _LOCKS.setdefault(ref.token, threading.Lock())
    out = []
    with lock:
        if ref is not None:
            state = ref.local_state() if ref._value is not None else _worker_state(ref, data)
        for group_keys, arg, one in _groups(keys, items, batch):
            try:
                values = _call_group(fn, state, ref, group_keys, arg, one, caller)
            except HwlabError as exc:  # a refused input: raised as it is by the caller
                out.append((group_keys[0], False, exc))
                break
            except Exception as exc:  # noqa: BLE001 - reported with its key by the caller
                out.append((group_keys[0], False, (type(exc).__name__, str(exc))))
                break
            out.extend((k, True, v) for k, v in zip(group_keys, values))
    return out


def map_chunked(executor: Executor | None, fn: Callable, items, shared: Shared | None = None,
                chunksize: int | None = None, caller: str = "map_chunked",
                idle_seconds: float | None = None, on_idle: Callable | None = None,
                max_pending: int | None = None, batch: int | None = None
                ) -> Iterator[tuple[str, Any]]:
    """Yield ``(key, fn(item))`` (or ``fn(state, item)`` with ``shared``) for every item.

    ``items``: a mapping ``key -> item`` or an iterable of ``(key, item)``. Inline for the serial
    executor (or None), else in chunks of ``chunksize`` items (default ``ceil(n / (4 *
    workers))``), all submitted at once unless ``max_pending`` limits the items in flight;
    results arrive per finished chunk. An item that raises ends the iteration with
    :class:`ItemError` (naming ``caller`` and the key; a :class:`~hwlab.errors.HwlabError` is
    raised as it is) after the results of the chunks that finished; pending chunks are
    cancelled. With ``on_idle``, it is called whenever nothing finished for ``idle_seconds``
    (e.g. to flush buffered rows).

    ``batch=B``: ``fn`` takes a list of up to B consecutive items (of one chunk; chunks are then
    multiples of B) and returns their results as a list in the same order (e.g. B fault maps
    in one forward pass); a failing group is reported with its first key.
    """
    pairs = list(items.items() if isinstance(items, Mapping) else items)
    for param, v in (("chunksize", chunksize), ("max_pending", max_pending), ("batch", batch)):
        check(v is None or is_int(v, 1), param, caller, "None or an integer >= 1", v)
    check(shared is None or isinstance(shared, Shared), "shared", caller,
          "None or a hwlab.executors.Shared from share()", type(shared).__name__)
    if not pairs:
        return
    if _is_inline(executor):
        state = shared.local_state() if shared is not None else None
        keys, values = [k for k, _ in pairs], [v for _, v in pairs]
        for group_keys, arg, one in _groups(keys, values, batch):
            try:
                results = _call_group(fn, state, shared, group_keys, arg, one, caller)
            except HwlabError:
                raise
            except Exception as exc:
                raise ItemError(group_keys[0], type(exc).__name__, str(exc), caller) from exc
            yield from zip(group_keys, results)
        return
    workers = worker_count(executor)
    bounds = _chunk_bounds(len(pairs), workers, chunksize, max_pending, batch)
    data = shared.future if shared is not None else None
    largest = max(hi - lo for lo, hi in bounds)
    # Dask places a task on a worker when it is submitted (not when a worker frees up), so the
    # chunks go one per worker thread at a time, each to a free one: large first, small last.
    # A process pool hands its queue out in order as workers free up: all are submitted.
    slots = _slots(executor) if max_pending is None and _is_dask(executor) else None
    if max_pending is not None:
        window = max(1, math.ceil(max_pending / largest))
    else:
        window = len(bounds) if slots is None else len(slots)
    chunks = iter(bounds)
    pending = set()
    owner = {}  # future -> the worker it was placed on (Dask)

    def submit():  # fill the window (also called when nothing finished: then a no-op)
        while len(pending) < window:
            bound = next(chunks, None)
            if bound is None:
                return
            lo, hi = bound
            part = pairs[lo:hi]
            args = (_run_chunk, fn, shared, data, [k for k, _ in part], [v for _, v in part],
                    batch, caller)
            if slots:
                worker = slots.pop()
                fut = executor.submit_on(worker, *args)
                owner[fut] = worker
            else:
                fut = executor.submit(*args)
            pending.add(fut)

    try:
        submit()
        while pending:
            ready, pending = wait(pending, return_when=FIRST_COMPLETED,
                                  timeout=idle_seconds if on_idle is not None else None)
            if not ready:
                on_idle()
            error = None
            for fut in ready:  # every finished row first, then the first error
                if fut in owner:
                    slots.append(owner.pop(fut))
                for key, ok, value in fut.result():
                    if ok:
                        yield key, value
                    elif error is None:
                        error = value if isinstance(value, HwlabError) else \
                            ItemError(key, value[0], value[1], caller)
            if error is not None:
                raise error
            submit()
    finally:
        for fut in pending:
            fut.cancel()
