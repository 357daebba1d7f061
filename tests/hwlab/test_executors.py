"""hwlab.executors: serial, process:N and a real Dask LocalCluster give the same results."""

from __future__ import annotations

import operator
from concurrent.futures import Executor
from functools import partial

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


def test_process_pool_matches_serial_and_uses_one_torch_thread(tmp_path):
    with get_executor("process:2") as ex:
        assert list(ex.map(partial(derive_seed, 7), KEYS)) == _reference()
        assert ex.submit(torch.get_num_threads).result() == 1
        table = _run_items_table(tmp_path, "process", ex)
    assert table == _run_items_table(tmp_path, "serial", None)


def test_dask_local_cluster_matches_serial(tmp_path):
    with get_executor("dask-local:2") as ex:
        assert list(ex.map(partial(derive_seed, 7), KEYS)) == _reference()
        assert ex.submit(torch.get_num_threads).result() == 1
        assert ex.cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        address = ex.cluster.scheduler_address
        with get_executor(f"dask:{address}") as remote:  # connect to a running scheduler
            assert remote.submit(derive_seed, 7, KEYS[0]).result() == _reference()[0]
            assert remote.cluster is None
        assert ex.submit(abs, -3).result() == 3  # closing the second client left the cluster up
        table = _run_items_table(tmp_path, "dask", ex)
    assert ex.client.status == "closed"
    assert table == _run_items_table(tmp_path, "serial", None)
