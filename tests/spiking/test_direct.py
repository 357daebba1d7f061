"""Direct training with surrogate gradients through hwlab.train.fit."""

from __future__ import annotations

import pytest
import snntorch as snn

import spiking as sp
from hwlab.train import TrainConfig, evaluate, fit


def test_direct_rate_coded_mlp_learns_digits(direct, digits):
    assert all(isinstance(m, snn.Leaky) and float(m.beta) == pytest.approx(0.95)
               for m in direct.neurons)
    acc = sp.record(direct, digits["test"], steps=8).accuracy_curve()
    assert acc[-1] > 0.8  # 3 epochs, 4 training steps; chance is 0.1
    assert acc[0] < acc[-1]  # one rate-coded step carries less evidence than eight


def test_surrogate_gradient_reaches_the_first_layer(digits):
    net = sp.direct_net("lenet", digits["train"].in_shape, 10, encoding="direct")
    task = sp.DirectTask(net, steps=3)
    x, y = digits["train"].x[:16], digits["train"].y[:16]
    losses = task.backward(x, y)
    first = net.layers[0].weight.grad
    assert losses["loss"] > 0 and first is not None and first.abs().sum() > 0


def test_direct_lenet_trains_with_the_one_loop(digits):
    net = sp.direct_net("lenet", digits["train"].in_shape, 10, encoding="direct", threshold=0.5)
    task = sp.DirectTask(net, steps=4)
    fit(task, digits["train"], TrainConfig(epochs=3, batch_size=64, lr=5e-3, seed=0))
    assert evaluate(task, digits["test"]) > 0.5  # chance is 0.1; LeNet spikes need more epochs


@pytest.mark.parametrize("kw, msg", [
    ({"encoding": "poisson"}, "encoding of direct_net must be one of direct, rate, got 'poisson'"),
    ({"beta": 1.5}, r"beta of direct_net must be in \(0, 1\], got 1.5"),
    ({"surrogate_fn": "sigmoid"}, "surrogate_fn of direct_net must be one of atan, fast_sigmoid"),
])
def test_direct_net_rejects_bad_options(kw, msg):
    with pytest.raises(ValueError, match=msg):
        sp.direct_net("mlp", (1, 8, 8), 10, **kw)
