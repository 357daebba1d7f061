"""Activation faults through pytorchfi."""

from __future__ import annotations

import json

import pytest
import torch

import faultlab as fl


def _cnn():
    g = torch.Generator().manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(3 * 6 * 6, 4))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m.eval()


def test_neuron_fault_replaces_one_activation_for_every_input():
    m = _cnn()
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    before = [p.detach().clone() for p in m.parameters()]
    faulty = fl.neuron_faults(m, fl.NeuronFault(count=1, value=1e4, layer_types=("linear",)),
                              (1, 8, 8), batch_size=3, seed=0)
    with torch.no_grad():
        diff = faulty(x) - m(x)  # 7 x 4, batches of 3 with the last one padded
    changed = (diff.abs() > 1e-3).sum(dim=0)  # batches of 3 vs 7 round differently, by ~1e-6
    assert changed.tolist().count(7) == 1 and int(changed.sum()) == 7  # one logit, every input
    j = int(changed.argmax())
    assert torch.allclose(faulty(x)[:, j], torch.full((7,), 1e4))
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # input untouched
    again = fl.neuron_faults(m, fl.NeuronFault(count=1, value=1e4, layer_types=("linear",)),
                             (1, 8, 8), batch_size=3, seed=0)
    assert torch.equal(again(x), faulty(x))  # same seed, same location


def test_campaign_mixes_weight_and_neuron_faults():
    m = _cnn()
    x = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = m(x).argmax(1).detach()
    df = fl.campaign(m, (x, y), [fl.NeuronFault(count=2, value=100.0),
                                 (fl.BitFlip(count=3), fl.NeuronFault(count=1))],
                     trials=2, batch_size=16)
    assert list(df["fault_model"]) == ["none", "neuron", "neuron", "bitflip+neuron",
                                       "bitflip+neuron"]
    assert df["accuracy"].iloc[0] == 1.0
    extra = [json.loads(e) for e in df["extra"]]
    assert extra[3]["n_faults"] == 3 and extra[3]["neurons"] == 1 and extra[1]["n_faults"] == 0


def test_bad_neuron_fault():
    with pytest.raises(ValueError, match=r"layer_types of NeuronFault must be names among conv2d"):
        fl.NeuronFault(layer_types=("lstm",))
    with pytest.raises(ValueError, match=r"count of NeuronFault must be an integer >= 1, got 0"):
        fl.NeuronFault(count=0)
    with pytest.raises(ValueError, match=r"fault of neuron_faults must be layer_types present"):
        fl.neuron_faults(torch.nn.Sequential(torch.nn.Linear(2, 2)),
                         fl.NeuronFault(layer_types=("conv2d",)), (2,), batch_size=2)


def test_neuron_count_larger_than_the_neurons_is_an_error(tmp_path):
    from hwlab.store import Store

    m = _cnn()  # conv: 3 x 6 x 6 = 108 neurons, linear: 4 -> 112
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.zeros(8, dtype=torch.long)
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(ValueError, match=r"count of campaign must be at most the number of "
                                         r"neurons of the conv2d, linear layers \(112\), "
                                         r"got 10000000"):
        fl.campaign(m, (x, y), [fl.NeuronFault(count=10**7)], trials=1, store=store)
    assert len(store.runs()) == 0  # refused before the run opened
    with pytest.raises(ValueError, match=r"count of neuron_faults must be at most the number of "
                                         r"neurons of the linear layers \(4\), got 5"):
        fl.neuron_faults(m, fl.NeuronFault(count=5, layer_types=("linear",)), (1, 8, 8), 2)
    df = fl.campaign(m, (x, y), [fl.NeuronFault(count=112, value=0.0)], trials=1)
    assert len(df) == 2  # exactly all neurons is allowed


def test_pytorchfi_logging_config_is_undone():
    import logging

    root = logging.getLogger()
    handlers = list(root.handlers)
    fl.neuron_faults(_cnn(), fl.NeuronFault(), (1, 8, 8), batch_size=2)
    assert root.handlers == handlers
