"""hwlab.train: the one loop; determinism, callbacks, custom tasks, evaluation, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from hwlab.data import load
from hwlab.models import create_model
from hwlab.train import ClassificationTask, Task, TrainConfig, evaluate, fit, predict

CFG = TrainConfig(epochs=3, batch_size=64, lr=1e-2)  # reaches > 93 % on digits in 3 epochs


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train"), load("digits", "val"), load("digits", "test")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return create_model("mlp", in_shape=(1, 8, 8), hidden=(64,))


def test_fit_learns_digits(digits):
    tr, va, te = digits
    model = _mlp()
    hist = fit(model, tr, CFG, val=va)
    assert len(hist.losses) == 3 and len(hist.val_accuracy) == 3 and hist.seconds > 0
    assert hist.losses[-1]["loss"] < hist.losses[0]["loss"]
    assert hist.steps == 3 * 23  # ceil(1438 / 64)
    assert evaluate(model, te) > 0.9


def test_deterministic_and_global_rng_untouched(digits):
    tr = digits[0]
    a, b, c = _mlp(), _mlp(), _mlp()  # identical initial weights (each reseeds the global RNG)
    state = torch.random.get_rng_state()  # after the models: only fit must leave it untouched
    threads = torch.get_num_threads()
    cfg = dataclasses.replace(CFG, epochs=1)
    ha, hb = fit(a, tr, cfg), fit(b, tr, cfg)
    assert ha.losses == hb.losses
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    fit(c, tr, dataclasses.replace(cfg, seed=1))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_dropout_model_deterministic(digits):
    tr = load("synthetic", "train", shape=(1, 12, 12))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = create_model("alexnet-s", in_shape=(1, 12, 12), num_classes=4, width=4)
        runs.append(fit(m, tr, TrainConfig(epochs=1, batch_size=128)).losses)
    assert runs[0] == runs[1]


class _CountingTask(Task):
    """Local-learning shape: two halves, each with its own loss, detached between them."""

    def __init__(self):
        torch.manual_seed(0)
        self.front = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.aux = nn.Linear(32, 10)
        self.back = nn.Linear(32, 10)
        self.after = 0

    def backward(self, x, y):
        h = self.front(x)
        local = nn.functional.cross_entropy(self.aux(h), y)
        local.backward()
        out = nn.functional.cross_entropy(self.back(h.detach()), y)
        out.backward()
        return {"local": local.item(), "loss": out.item()}

    def after_step(self):
        self.after += 1

    def predict(self, x):
        return self.back(self.front(x))


def test_custom_task_and_callbacks(digits):
    tr, va, te = digits
    task = _CountingTask()
    assert len(list(task.parameters())) == 6

    class Stop:
        def __init__(self):
            self.steps, self.epochs = [], []

        def on_step(self, state):
            self.steps.append(state.step)
            assert set(state.losses) == {"local", "loss"}

        def on_epoch_end(self, state):
            self.epochs.append(state.epoch)
            state.stop = state.epoch == 1  # stop after the second epoch

    cb = Stop()
    hist = fit(task, tr, dataclasses.replace(CFG, epochs=5), val=va, callbacks=[cb])
    assert cb.epochs == [0, 1] and len(hist.losses) == 2 and task.after == 46
    assert cb.steps == list(range(1, 47))
    assert set(hist.losses[0]) == {"local", "loss"}
    assert evaluate(task, te) > 0.8
    task.front.train(True)
    assert predict(task, te.x[:5]).shape == (5, 10) and task.front.training  # mode restored


def test_sgd_and_no_schedule_and_batchnorm_tail(digits):
    tr = digits[0].subset(129)  # 129 = 2 * 64 + 1: the trailing batch of one is dropped
    torch.manual_seed(0)
    m = create_model("vgg-s", in_shape=(1, 8, 8), width=4)
    hist = fit(m, tr, dataclasses.replace(CFG, epochs=1, optimizer="sgd", schedule="none"))
    assert hist.steps == 2 and m.training


def test_divergence_is_reported(digits):
    m = _mlp()
    with pytest.raises(FloatingPointError, match=r"training diverged at epoch 0"):
        fit(ClassificationTask(m, loss=lambda out, y: out.sum() * float("nan")), digits[0], CFG)


def test_errors(digits):
    tr = digits[0]
    with pytest.raises(ValueError, match=r"optimizer of fit must be one of adam, adamw, sgd, "
                       r"got 'rmsprop'"):
        fit(_mlp(), tr, TrainConfig(optimizer="rmsprop"))
    with pytest.raises(ValueError, match=r"lr of fit must be a finite number > 0, got nan"):
        fit(_mlp(), tr, TrainConfig(lr=float("nan")))
    with pytest.raises(ValueError, match=r"epochs of fit must be an integer >= 1, got 0"):
        fit(_mlp(), tr, TrainConfig(epochs=0))
    with pytest.raises(ValueError, match=r"device of fit must be 'auto', 'cpu'"):
        fit(_mlp(), tr, TrainConfig(device="tpu"))
    with pytest.raises(ValueError, match=r"model_or_task of fit must be an nn.Module or a Task"):
        fit("lenet5", tr)
    # an (x, y) pair and DataLoaders are accepted now (#12); a one-shot iterator is not
    with pytest.raises(ValueError, match=r"data of fit must be a non-empty Split, an \(x, y\) "
                       r"pair, a DataLoader or a re-iterable of \(x, y\) batches \(not a "
                       r"one-shot iterator\), got 'generator'"):
        fit(_mlp(), ((tr.x, tr.y) for _ in range(2)))
    with pytest.raises(ValueError, match=r"data of fit must be a batch source with len\(\) when "
                       r"schedule='cosine'"):
        fit(_mlp(), _NoLen(tr), CFG)
    with pytest.raises(ValueError, match=r"loss of ClassificationTask must be a callable or one "
                       r"of ce, got 'mse'"):
        ClassificationTask(_mlp(), loss="mse")
    with pytest.raises(NotImplementedError, match=r"must implement backward"):
        fit(type("T", (Task,), {"__init__": lambda s: setattr(s, "m", _mlp())})(), tr, CFG)


class _NoLen:
    """A re-iterable of (x, y) batches without len()."""

    def __init__(self, split, batch=64):
        self.split, self.batch = split, batch

    def __iter__(self):
        for i in range(0, len(self.split), self.batch):
            yield self.split.x[i:i + self.batch], self.split.y[i:i + self.batch]


def test_fit_and_evaluate_stream_a_dataloader(digits):
    from torch.utils.data import DataLoader, TensorDataset

    tr, _, te = digits
    loader = DataLoader(TensorDataset(tr.x, tr.y), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    model = _mlp()
    hist = fit(model, loader, CFG, val=DataLoader(TensorDataset(te.x, te.y), batch_size=50))
    assert hist.steps == 3 * 23 and len(hist.val_accuracy) == 3
    acc = evaluate(model, te)
    assert acc > 0.9  # learns as well as from the Split
    test_loader = DataLoader(TensorDataset(te.x, te.y), batch_size=7)
    assert evaluate(model, test_loader) == acc == evaluate(model, (te.x, te.y))
    correct = int((predict(model, te.x).argmax(1) == te.y).sum())
    assert acc == correct / len(te)  # exactly correct / total
    pair_model, split_model = _mlp(), _mlp()  # an (x, y) pair trains exactly like the Split
    fit(pair_model, (tr.x, tr.y), dataclasses.replace(CFG, epochs=1))
    fit(split_model, tr, dataclasses.replace(CFG, epochs=1))
    assert all(torch.equal(p, q) for p, q in zip(pair_model.parameters(),
                                                 split_model.parameters()))
    fit(_mlp(), _NoLen(tr), dataclasses.replace(CFG, epochs=1, schedule="none"))
    with pytest.raises(ValueError, match=r"data of evaluate must be labels in \[0, inf\)"):
        evaluate(model, (te.x, te.y - 1))
