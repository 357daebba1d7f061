"""hwlab.executors: serial, process:N and a real Dask LocalCluster give the same results."""

from __future__ import annotations

import operator
import tempfile
from concurrent.futures import Executor
from functools import partial
from pathlib import Path

import pytest
import torch

from hwlab.executors import SerialExecutor, get_executor
from hwlab.store import Store
from hwlab.studies import derive_seed, run_items

KEYS = [f"bitflip|1e-0{i % 7}|trial={i}" for i in range(12)]


def _reference() -> list[int]:
    return [derive_seed(7, k) for k in KEYS]


def test_serial_runs_inline_and_keeps_errors_in_the_future():
    with get_executor("serial") as ex:
        assert isinstance(ex, SerialExecutor) and isinstance(ex, Executor)
        assert list(ex.map(partial(derive_seed, 7), KEYS)) == _reference()
        fut = ex.submit(operator.truediv, 1, 0)
        assert fut.done() and isinstance(fut.exception(), ZeroDivisionError)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, -1)
    assert isinstance(get_executor(None), SerialExecutor)


@pytest.mark.parametrize("spec", ["", "threads", "process", "process:0", "process:-1",
                                  "process:two", "dask-local:", "dask:", "ray:4", 3])
def test_bad_specs_list_the_allowed_forms(spec):
    with pytest.raises(ValueError, match=r"spec of get_executor must be one of 'serial', "
                                         r"'process:N', 'dask-local:N' or 'dask:ADDRESS'"):
        get_executor(spec)


def _run_items_table(tmp_path, name: str, ex) -> list[tuple]:
    store = Store(tmp_path / f"{name}.sqlite")
    run = store.open_run("t", {})
    items = {k: {"seed": i, "trial": i, "model": k.split("|")[0]} for i, k in enumerate(KEYS)}
    assert run_items(store, run, items, dict, executor=ex, max_pending=3) == len(KEYS)
    df = store.results(run_id=run).sort_values("key")
    return list(zip(df["key"], df["seed"], df["trial"], df["model"]))


@pytest.fixture(scope="module")
def process2():
    """One process:2 pool for the tests of this file (workers start once)."""
    with get_executor("process:2") as ex:
        yield ex


@pytest.fixture(scope="module")
def dask2():
    with get_executor("dask-local:2") as ex:
        yield ex
    assert ex.client.status == "closed"


def test_process_pool_matches_serial_and_uses_one_torch_thread(tmp_path, process2):
    ex = process2
    assert list(ex.map(partial(derive_seed, 7), KEYS)) == _reference()
    assert ex.submit(torch.get_num_threads).result() == 1
    table = _run_items_table(tmp_path, "process", ex)
    assert table == _run_items_table(tmp_path, "serial", None)


def test_dask_local_cluster_matches_serial(tmp_path, dask2):
    ex = dask2
    assert list(ex.map(partial(derive_seed, 7), KEYS)) == _reference()
    assert ex.submit(torch.get_num_threads).result() == 1
    assert ex.cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    address = ex.cluster.scheduler_address
    with get_executor(f"dask:{address}") as remote:  # connect to a running scheduler
        assert remote.submit(derive_seed, 7, KEYS[0]).result() == _reference()[0]
        assert remote.cluster is None
    assert ex.submit(abs, -3).result() == 3  # closing the second client left the cluster up
    table = _run_items_table(tmp_path, "dask", ex)
    assert table == _run_items_table(tmp_path, "serial", None)


def _trim_threshold(_=None):
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_dask_local_workers_keep_glibc_dynamic_mmap_threshold(dask2):
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 by default, which made torch forwards 2.7x
    # slower in its workers (every large tensor mmap-ed anew); hwlab's local cluster unsets it.
    import dask

    assert dask.config.get("distributed.nanny.pre-spawn-environ")["MALLOC_TRIM_THRESHOLD_"]
    assert set(dask2.client.run(_trim_threshold).values()) == {None}


# -- shared state and chunked mapping ---------------------------------------------------------
def _setup(obj):
    """Worker-side state: the shared object plus a marker of this setup call."""
    import os
    import uuid

    return {"base": obj["base"], "setup_id": uuid.uuid4().hex, "pid": os.getpid()}


def _shifted(state, item):
    if item == "boom":
        raise ValueError("item said boom")
    return {"value": state["base"] + item, "setup_id": state["setup_id"], "pid": state["pid"]}


def _row_of(state, item):
    if item == "refused":
        from hwlab.errors import fail

        raise fail("item", "_row_of", "not 'refused'", item)
    return {"trial": state["base"] + item}


def _one_dict(state, group):
    return {"n": len(group)}  # wrong for batch=: one dict for a whole group


def _group_of(state, group):
    """``batch=`` form: one call for a list of items, one result per item."""
    if "boom" in group:
        raise ValueError("group said boom")
    return [{"value": state["base"] + i, "group": len(group)} for i in group]


def _check_chunked(ex) -> None:
    from hwlab.executors import ItemError, map_chunked, share, worker_count

    items = {f"k{i}": i for i in range(23)}
    assert worker_count(ex) == 2
    with share(ex, {"base": 1000, "pad": b"x" * 2**20}, setup=_setup) as ref:
        first = dict(map_chunked(ex, _shifted, items, shared=ref))
        again = dict(map_chunked(ex, _shifted, items, shared=ref, chunksize=5))
        assert {k: v["value"] for k, v in first.items()} == {k: 1000 + i for k, i in items.items()}
        # setup ran once per worker process and was reused by the second call
        per_pid = {}
        for row in [*first.values(), *again.values()]:
            per_pid.setdefault(row["pid"], set()).add(row["setup_id"])
        assert all(len(ids) == 1 for ids in per_pid.values()) and 1 <= len(per_pid) <= 2
        store = Store(Path(tempfile.mkdtemp()) / "s.sqlite")  # run_items on the same workers
        run = store.open_run("t", {})
        rows = {k: {"trial": i} for i, k in enumerate(items)}
        assert run_items(store, run, items, _row_of, executor=ex, shared=ref, max_pending=4) == 23
        got = store.results(run_id=run).set_index("key")["trial"].to_dict()
        assert got == {k: 1000 + r["trial"] for k, r in rows.items()}
        grouped = dict(map_chunked(ex, _group_of, items, shared=ref, batch=4))
        assert {k: v["value"] for k, v in grouped.items()} == {k: 1000 + i
                                                               for k, i in items.items()}
        assert max(v["group"] for v in grouped.values()) == 4  # groups of up to 4 items
        assert sorted(v["group"] for v in grouped.values()).count(4) >= 16
        bad = {**{f"k{i}": i for i in range(6)}, "bad": "boom"}
        with pytest.raises(ItemError, match=r"item 'bad' of run_items failed: ValueError: item "
                                            r"said boom"):
            list(map_chunked(ex, _shifted, bad, shared=ref, caller="run_items"))
        with pytest.raises(ValueError, match=r"item of _row_of must be not 'refused'"):
            list(map_chunked(ex, _row_of, {"a": 1, "r": "refused"}, shared=ref))  # as it is
    with pytest.raises(ValueError, match=r"chunksize of map_chunked must be None or an integer"):
        list(map_chunked(ex, _shifted, items, chunksize=0))


def test_map_chunked_serial_is_inline_and_same_values():
    from hwlab.executors import map_chunked, share, worker_count

    with share(None, {"base": 1000}, setup=_setup) as ref:
        rows = dict(map_chunked(None, _shifted, [("a", 1), ("b", 2)], shared=ref))
        assert ref.path is None and ref.future is None  # nothing written, nothing sent
    assert [r["value"] for r in rows.values()] == [1001, 1002]
    assert len({r["setup_id"] for r in rows.values()}) == 1
    assert worker_count(None) == 1 and worker_count(SerialExecutor()) == 1
    with share(None, {"base": 10}, setup=_setup) as ref:
        groups = dict(map_chunked(None, _group_of, {f"k{i}": i for i in range(7)}, shared=ref,
                                  batch=3))
        assert [g["group"] for g in groups.values()] == [3, 3, 3, 3, 3, 3, 1]
        assert [g["value"] for g in groups.values()] == list(range(10, 17))
        with pytest.raises(ValueError, match=r"fn of map_chunked must be a function returning "
                                             r"one result per item of a group \(2\), got 'dict'"):
            list(map_chunked(None, _one_dict, [("a", 1), ("b", 2)], shared=ref, batch=2))
        with pytest.raises(ValueError, match=r"batch of map_chunked must be None or an integer"):
            list(map_chunked(None, _shifted, [("a", 1)], batch=0))


def test_process_pool_map_chunked_shares_once_per_worker(process2):
    _check_chunked(process2)


def test_dask_local_map_chunked_scatters_once_per_worker(dask2):
    _check_chunked(dask2)


# -- clear errors instead of hangs and reruns (#13 items 5 and 14) ----------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dask_address_without_scheduler_is_a_quick_clear_error(tmp_path):
    import subprocess
    import sys
    import time

    spec = f"dask:tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"spec of get_executor must be the address of a running "
                                         r"Dask scheduler \(connecting to 127.0.0.1:\d+ failed: "
                                         r"Connection refused\), got 'dask:tcp://127"):
        get_executor(spec)
    assert time.monotonic() - t0 < 5
    from pathlib import Path

    hwlab = str(Path(sys.executable).parent / "hwlab")  # the console script
    done = subprocess.run([hwlab, "run", "hwlab.zoo", "--quick",
                           "--executor", spec, "--store", str(tmp_path / "s.sqlite")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    errors = [ln for ln in done.stderr.splitlines() if "error" in ln.lower()]
    assert errors == [(f"hwlab: error: spec of get_executor must be the address of a running "
                       f"Dask scheduler (connecting to {spec[11:]} failed: Connection refused), "
                       f"got {spec!r}")]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("guarded", [False, True])
def test_process_pool_from_an_unguarded_script_is_refused(tmp_path, guarded):
    import subprocess
    import sys

    body = ('from hwlab.executors import get_executor\n'
            'with get_executor("process:1") as ex:\n'
            '    print("result", ex.submit(abs, -3).result())\n')
    if guarded:
        body = "if __name__ == '__main__':\n" + "".join(f"    {ln}\n" for ln in body.splitlines())
    script = tmp_path / "user_script.py"
    script.write_text(body)
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True,
                          text=True, timeout=120)
    if guarded:
        assert done.returncode == 0 and "result 3" in done.stdout
    else:
        assert done.returncode == 1 and "result" not in done.stdout
        assert (f'unguarded call at {script}:2, got \'process:1\'') in done.stderr
        assert 'guarded by `if __name__ == "__main__":`' in done.stderr


@pytest.mark.parametrize(("line", "guard"), [
    ('if __name__ == "__main__":', True), ("if '__main__' == __name__:", True),
    ('if __name__ == "__main__" and len(sys.argv) > 1:', True),
    ('if __name__ != "__main__":', False), ("if True:", False),
    ('if __name__ == "__main__" or x:', False)])
def test_main_guard_forms(line, guard):
    import ast

    from hwlab.executors import _is_main_guard

    assert _is_main_guard(ast.parse(f"{line}\n    pass\n").body[0]) is guard


@pytest.mark.parametrize("n,workers,chunksize,max_pending,batch", [
    (2672, 2, None, None, None), (10, 2, None, None, None), (100, 3, None, 20, None),
    (101, 2, None, None, 4), (7, 3, 3, None, None), (1, 4, None, None, None)])
def test_chunks_cover_the_items_once_large_first_small_last(n, workers, chunksize, max_pending,
                                                            batch):
    import itertools

    from hwlab._chunks import _chunk_bounds

    bounds = _chunk_bounds(n, workers, chunksize, max_pending, batch)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # contiguous, no overlap
    sizes = [hi - lo for lo, hi in bounds]
    if chunksize is not None:
        assert sizes[:-1] == [chunksize] * (len(sizes) - 1)
        return
    assert sizes == sorted(sizes, reverse=True)  # never larger than the chunk before
    if max_pending is not None:
        assert max(sizes) <= max_pending // workers
    if batch is not None:
        assert all(s % batch == 0 for s in sizes[:-1])
    if n >= 1000:  # the tail: a small last chunk, first chunks a large share
        assert sizes[0] == -(-n // (2 * workers)) and sizes[-1] <= -(-n // (32 * workers))


def _slow_square(x):
    import time

    time.sleep(0.05)
    return x * x


def test_max_pending_holds_while_nothing_finishes():
    """An idle wake-up (``idle_seconds``) must not submit past the window (it once did)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from hwlab.executors import map_chunked

    class Counting(ThreadPoolExecutor):
        def __init__(self):
            super().__init__(max_workers=4)
            self.lock, self.out, self.most = threading.Lock(), 0, 0

        def submit(self, fn, /, *args, **kwargs):
            with self.lock:
                self.out += 1
                self.most = max(self.most, self.out)
            fut = super().submit(fn, *args, **kwargs)
            fut.add_done_callback(self._done)
            return fut

        def _done(self, _):
            with self.lock:
                self.out -= 1

    idle = []
    with Counting() as ex:
        got = dict(map_chunked(ex, _slow_square, {f"k{i}": i for i in range(12)},
                               idle_seconds=0.005, on_idle=lambda: idle.append(1),
                               max_pending=2))
    assert got == {f"k{i}": i * i for i in range(12)}
    assert idle and ex.most == 2  # woke up idle, yet never more than 2 items in flight


def test_with_blocks_end_before_the_workers_are_gone():
    """The with-block returns once every result is in; the teardown finishes in the background."""
    import threading

    with get_executor("process:1") as ex:
        assert ex.submit(operator.add, 2, 3).result() == 5
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(operator.add, 1, 1)
    with get_executor("dask-local:1") as dx:
        assert dx.submit(operator.add, 2, 3).result() == 5
    assert dx.client.status == "closed"
    for t in [t for t in threading.enumerate() if t.name == "hwlab-dask-close"]:
        t.join(timeout=60)
    assert dx.cluster.status.name == "closed"
