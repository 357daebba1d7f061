"""campaign metrics, streamed data, in-memory rows and the checks made before a run opens."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import faultlab as fl
from hwlab.seeds import derive_seed
from hwlab.store import Store

METRICS = ("accuracy", "sdc", "critical_sdc", "top5", "loss")
FAULTS = [fl.BitFlip(rate=1e-3), fl.StuckAt(1, rate=3e-3, bits=(30,))]


def logit_shift(logits, y, clean_logits):
    """A user metric: mean absolute change of the logits (finite part)."""
    d = (logits - clean_logits).abs()
    return float(torch.nan_to_num(d, posinf=0.0, neginf=0.0).mean())


def _same(df, extra=()):
    cols = ["key", "fault_model", "fault_rate", "trial", "seed", *METRICS, *extra]
    return df[cols].reset_index(drop=True)


def test_sdc_and_critical_sdc_equal_an_independent_count(digits_mlp, digits):
    test = digits[1]
    df = fl.campaign(digits_mlp, test, FAULTS[:1], trials=4, seed=1,
                     metrics=(*METRICS, logit_shift))
    with torch.no_grad():
        clean = digits_mlp(test.x)  # N x 10
    c, y = clean.argmax(1).numpy(), test.y.numpy()
    for row in df.iloc[1:].itertuples():
        fmap = fl.sample_faults(digits_mlp, FAULTS[0], seed=derive_seed(int(row.seed), "weights0"))
        with fl.inject(digits_mlp, fmap), torch.no_grad():
            logits = digits_mlp(test.x)
        f = logits.argmax(1).numpy()
        assert row.accuracy == pytest.approx(np.mean(f == y))
        assert row.sdc == pytest.approx(np.mean(f != c))
        assert row.critical_sdc == pytest.approx(np.sum((c == y) & (f != y)) / np.sum(c == y))
        top5 = np.argsort(-logits.numpy(), axis=1, kind="stable")[:, :5]
        assert row.top5 == pytest.approx(np.mean((top5 == y[:, None]).any(1)))
        assert row.loss == pytest.approx(float(F.cross_entropy(logits, test.y)), rel=1e-5)
        assert row.logit_shift == pytest.approx(logit_shift(logits, test.y, clean), rel=1e-5)
    assert df["sdc"].iloc[0] == 0 and df["critical_sdc"].iloc[0] == 0
    assert (df["sdc"].iloc[1:] > 0).any()
    extra = json.loads(df["extra"].iloc[1])
    assert extra["n_samples"] == len(test) and extra["n_clean_correct"] == int(np.sum(c == y))


def test_dataloader_gives_the_rows_of_the_same_data_in_memory(digits_mlp, digits):
    x, y = digits[1].x, digits[1].y
    kw = {"trials": 3, "seed": 2, "batch_size": 37, "metrics": (*METRICS, logit_shift)}
    memory = fl.campaign(digits_mlp, (x, y), FAULTS, **kw)
    loader = DataLoader(TensorDataset(x, y), batch_size=37)
    streamed = fl.campaign(digits_mlp, loader, FAULTS, **kw)
    listed = fl.campaign(digits_mlp, list(zip(x.split(37), y.split(37))), FAULTS, **kw)
    # fault-free logits not cached (cache_bytes=0): recomputed per batch, same rows
    recomputed = fl.campaign(digits_mlp, loader, FAULTS, cache_bytes=0, **kw)
    for other in (streamed, listed, recomputed):
        pd.testing.assert_frame_equal(_same(other, ["logit_shift"]),
                                      _same(memory, ["logit_shift"]))
    with pytest.raises(ValueError, match=r"data of campaign must be a DataLoader without "
                                         r"shuffling"):
        fl.campaign(digits_mlp, DataLoader(TensorDataset(x, y), shuffle=True), FAULTS, trials=1)
    with pytest.raises(ValueError, match=r"a one-shot iterator"):
        fl.campaign(digits_mlp, ((a, b) for a, b in [(x, y)]), FAULTS, trials=1)


def test_store_none_keeps_rows_in_memory(digits_mlp, digits, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("campaign(store=None) opened an SQLite file")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    df = fl.campaign(digits_mlp, digits[1], FAULTS, trials=2, metrics=("accuracy", logit_shift))
    assert len(df) == 5 and df["run_id"].nunique() == 1 and "logit_shift" in df
    assert set(df["dtype"]) == {"float32"} and set(df["variant"]) == {"baseline"}


def test_user_metric_is_a_store_column_and_rows_match_memory(digits_mlp, digits, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    kw = {"trials": 2, "seed": 3, "metrics": ("sdc", logit_shift)}
    stored = fl.campaign(digits_mlp, digits[1], FAULTS, store=store, **kw)
    memory = fl.campaign(digits_mlp, digits[1], FAULTS, **kw)
    assert "logit_shift" in store.columns()
    cols = [c for c in memory.columns if c not in ("run_id", "latency_ms", "extra")]
    pd.testing.assert_frame_equal(stored[cols], memory[cols])
    assert stored["accuracy"].isna().all()  # not asked for: NULL, never 0


def test_refused_resume_leaves_the_finished_run_done(digits_mlp, digits, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    fl.campaign(digits_mlp, digits[1], FAULTS[:1], trials=2, store=store)
    assert list(store.runs()["status"]) == ["done"]
    x, y = digits[1].x[:60], digits[1].y[:60]
    with pytest.raises(ValueError, match=r"data of campaign must be the same data"):
        fl.campaign(digits_mlp, (x, y), FAULTS[:1], trials=2, store=store,
                    dataset_name=digits[1].name)
    runs = store.runs()
    assert list(runs["status"]) == ["done"] and list(runs["n_results"]) == [3]


def test_bad_executor_and_bad_data_open_no_run(digits_mlp, digits, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(ValueError, match=r"executor of campaign must be None, an Executor or "
                                         r"one of .*, got 'bogus'"):
        fl.campaign(digits_mlp, digits[1], FAULTS, trials=1, store=store, executor="bogus")
    wide = torch.rand(20, 1, 28, 28)
    with pytest.raises(ValueError, match=r"data of campaign must be inputs that model mlp "
                                         r"accepts \(it raised RuntimeError: mat1 and mat2 "
                                         r"shapes cannot be multiplied.*got 'inputs of shape "
                                         r"\(20, 1, 28, 28\)'"):
        fl.campaign(digits_mlp, (wide, torch.zeros(20, dtype=torch.long)), FAULTS, trials=1,
                    store=store, model_name="mlp")
    with pytest.raises(ValueError, match=r"data of campaign must be labels in \[0, 10\) \(model "
                                         r"Sequential has 10 outputs\), got 'labels from 0 to "
                                         r"99'"):
        y = digits[1].y.clone()
        y[5] = 99
        fl.campaign(digits_mlp, (digits[1].x, y), FAULTS, trials=1, store=store)
    assert len(store.runs()) == 0


def test_assert_resilient_on_other_metrics(digits_mlp, digits):
    r = fl.assert_resilient(digits_mlp, digits[1], fl.BitFlip(count=2, bits=(0,)), trials=3,
                            metric="sdc", max_value=0.05)
    assert r.metric == "sdc" and r.mean <= 0.05 and 0 <= r.ci_low <= r.ci_high <= 1
    with pytest.raises(AssertionError, match=r"not resilient to bitflip\|bits=30\|count=4: "
                                             r"mean sdc .* interval \[0\.\d+, [01]\.\d+\]"):
        fl.assert_resilient(digits_mlp, digits[1], fl.BitFlip(count=4, bits=(30,)), trials=3,
                            metric="sdc", max_value=0.01)
    with pytest.raises(ValueError, match=r"max_value of assert_resilient must be given"):
        fl.assert_resilient(digits_mlp, digits[1], fl.BitFlip(count=1), trials=2, metric="sdc")


class _Stream:
    """A re-iterable of fresh batches that counts how many of its inputs are alive at once."""

    def __init__(self, x, y, size):
        self.x, self.y, self.size, self.refs, self.most = x, y, size, [], 0

    def __iter__(self):
        import weakref

        for i in range(0, len(self.y), self.size):
            xb = self.x[i:i + self.size].clone()  # a new tensor, as a loader would decode it
            self.refs = [r for r in self.refs if r() is not None] + [weakref.ref(xb)]
            self.most = max(self.most, len(self.refs))
            yield xb, self.y[i:i + self.size]
            del xb


@pytest.mark.parametrize("kw", [{"delayed_start": False}, {"cache_bytes": 0}])
def test_a_stream_is_read_one_batch_at_a_time(digits_mlp, digits, kw):
    # (with delayed start and a budget, cached cut activations, possibly views of the inputs,
    # may hold up to cache_bytes more)
    stream = _Stream(digits[1].x, digits[1].y, 20)
    df = fl.campaign(digits_mlp, stream, FAULTS, trials=2, metrics=METRICS, **kw)
    memory = fl.campaign(digits_mlp, digits[1], FAULTS, trials=2, metrics=METRICS, batch_size=20)
    pd.testing.assert_frame_equal(_same(df), _same(memory))
    assert stream.most <= 2  # the batch being evaluated (and the one being produced)
