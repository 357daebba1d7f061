"""Spiking-neuron faults: dead / saturated neurons seen in the recorded spikes, exact threshold and
leak drift, exact restore, record and run_live under faults, converted and direct nets."""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

import spiking as sp


def _spike_log(net, name):
    """Register (after any fault hook) a hook that logs the spikes of layer ``name``."""
    log = []
    mod = dict(net.named_modules())[name]
    handle = mod.register_forward_hook(lambda m, a, out: log.append(out[0].detach().clone()))
    return log, handle


def _clean_spikes(net, data, name, steps):
    log, h = _spike_log(net, name)
    sp.record(net, data, steps)
    h.remove()
    return torch.stack(log, dim=1)  # N x T x neurons


@pytest.mark.parametrize("which", ["converted", "direct"])
def test_dead_never_spikes_saturated_spikes_every_step(which, converted, direct, digits):
    net = converted[1] if which == "converted" else direct
    test = digits["test"]
    names = [n for n, _ in sp.neuron_layers(net)]
    first, second = names[0], names[1]
    steps = 8
    clean = _clean_spikes(net, test, first, steps)
    rates = (clean != 0).float().mean(dim=(0, 1))  # per-neuron firing rate
    busy = int(rates.argmax())  # the most active neuron: it spikes in the clean net
    quiet = int(rates.argmin())  # the least active one: it is silent at some steps
    assert rates[busy] > 0.2 and rates[quiet] < 0.9
    rec_clean = sp.record(net, test, steps)
    dead = sp.NeuronStuck("dead", neurons=((first, busy),))
    sat = sp.NeuronStuck("saturated", neurons=((first, quiet), (second, 3)))
    with sp.inject_neuron_faults(net, dead, test.in_shape) as dmap, \
            sp.inject_neuron_faults(net, sat, test.in_shape) as smap:
        log1, h1 = _spike_log(net, first)
        log2, h2 = _spike_log(net, second)
        rec = sp.record(net, test, steps)
        h1.remove()
        h2.remove()
    s1, s2 = torch.stack(log1, dim=1), torch.stack(log2, dim=1)  # N x T x neurons
    layer = dict(net.named_modules())
    g1 = float(layer[first].graded_spikes_factor)
    g2 = float(layer[second].graded_spikes_factor)
    assert len(dmap) == 1 and len(smap) == 2
    assert s1.shape[1] == steps and bool((s1[:, :, busy] == 0).all())
    assert bool((s1[:, :, quiet] == g1).all()) and bool((s2[:, :, 3] == g2).all())
    others = [i for i in range(s1.shape[2]) if i not in (busy, quiet)]
    assert (s1[:, :, others] != clean[:, :, others]).sum() == 0  # first layer: only those two
    assert not torch.equal(rec.outputs, rec_clean.outputs)
    assert torch.equal(sp.record(net, test, steps).outputs, rec_clean.outputs)  # restored
    assert all(not m._forward_hooks for _, m in sp.neuron_layers(net))


def test_threshold_drift_scales_threshold_exactly(converted, digits):
    net = converted[1]
    (name, mod), (_, mod2) = sp.neuron_layers(net)[:2]
    original, original2 = mod.threshold, mod2.threshold
    idx = (0, 7, 100, 255)
    fault = sp.ThresholdDrift(1.37, neurons=tuple((name, i) for i in idx))
    with sp.inject_neuron_faults(net, fault, digits["test"].in_shape) as fmap:
        thr = mod.threshold
        assert thr.shape == (256,) and mod2.threshold is original2
        expect = original.expand(256).clone()
        expect[list(idx)] = original * torch.tensor(1.37, dtype=original.dtype)
        assert torch.equal(thr.view(torch.int32), expect.view(torch.int32))
        assert float(thr[7]) == pytest.approx(1.37 * float(original), rel=1e-6)
        assert fmap.index.tolist() == list(idx) and np.all(fmap.value == 1.37)
    assert mod.threshold is original  # the very same tensor object is put back


def test_leak_drift_sets_beta_and_changes_membranes(converted, digits):
    net = converted[1]
    _, mod = sp.neuron_layers(net)[0]
    beta = mod.beta
    assert float(beta) == 1.0  # converted neurons integrate and fire
    rec0 = sp.record(net, digits["test"], 8)
    with sp.inject_neuron_faults(net, sp.LeakDrift(0.5, rate=0.5), digits["test"].in_shape,
                                 seed=3) as fmap:
        sel = fmap.index[fmap.layer == 0]
        assert torch.equal(mod.beta[sel], torch.full((len(sel),), 0.5))
        mask = torch.ones(256, dtype=torch.bool)
        mask[sel] = False
        assert bool((mod.beta[mask] == 1.0).all())
        rec = sp.record(net, digits["test"], 8)
    assert not torch.equal(rec.outputs, rec0.outputs) and mod.beta is beta
    # 384 neurons at rate 0.5: Binomial(384, 0.5), sd 9.8
    assert abs(len(fmap) - 192) < 4 * 9.8


@pytest.mark.parametrize("which", ["converted", "direct"])
def test_record_and_run_live_agree_under_faults(which, converted, direct, digits):
    net = converted[1] if which == "converted" else direct
    test = digits["test"]
    for fault in (sp.NeuronStuck("saturated", rate=0.05), sp.ThresholdDrift(0.7, rate=0.2)):
        with sp.inject_neuron_faults(net, fault, test.in_shape, seed=1):
            rec = sp.record(net, test, 10, batch_size=64, seed=2)
            off = sp.apply_rule(rec, "dynamic-confidence", 0.5)
            live = sp.run_live(net, test.x, "dynamic-confidence", 0.5, steps=10, batch_size=64,
                               seed=2)
        assert torch.equal(live.predictions, off.predictions)
        assert torch.equal(live.steps, off.steps)


def test_copy_leaves_input_untouched_and_matches_in_place(converted, digits):
    net = converted[1]
    test = digits["test"]
    before = sp.record(net, test, 6).outputs
    fault = sp.NeuronStuck("dead", count=40)
    faulty = sp.with_neuron_faults(net, fault, test.in_shape, seed=4)
    assert len(faulty.neuron_fault_map) == 40
    assert torch.equal(sp.record(net, test, 6).outputs, before)
    with sp.inject_neuron_faults(net, faulty.neuron_fault_map):
        in_place = sp.record(net, test, 6).outputs
    assert torch.equal(sp.record(faulty, test, 6).outputs, in_place)
    assert not torch.equal(in_place, before)


def test_restore_after_exception(converted, digits):
    net = converted[1]
    mods = sp.neuron_layers(net)
    thresholds = [m.threshold for _, m in mods]
    with pytest.raises(RuntimeError, match="boom"), \
            sp.inject_neuron_faults(net, sp.ThresholdDrift(2.0, rate=0.5), (1, 8, 8)), \
            sp.inject_neuron_faults(net, sp.NeuronStuck("saturated", rate=0.5), (1, 8, 8)):
        raise RuntimeError("boom")
    assert all(m.threshold is t for (_, m), t in zip(mods, thresholds))
    assert all(not m._forward_hooks for _, m in mods)


def test_maps_replayable_nested_counted_and_errors(converted):
    net = converted[1]
    shape = (1, 8, 8)
    a = sp.sample_neuron_faults(net, sp.NeuronStuck("dead", rate=0.05), shape, seed=9)
    assert a == sp.sample_neuron_faults(net, sp.NeuronStuck("dead", rate=0.05), shape, seed=9)
    b = sp.sample_neuron_faults(net, sp.ThresholdDrift(1.5, rate=0.2), shape, seed=9)
    pos = lambda m: set(zip(m.layer.tolist(), m.index.tolist()))
    assert pos(a) <= pos(b)  # same seed: nested across rates and fault kinds
    c = sp.sample_neuron_faults(net, sp.LeakDrift(0.9, count=17), shape, seed=0)
    assert len(c) == 17 and c.neurons == 384 and sum(c.counts().values()) == 17
    with pytest.raises(ValueError, match="rate, count and neurons of NeuronStuck must be exactly "
                                         "one of rate, count or neurons"):
        sp.NeuronStuck("dead")
    with pytest.raises(ValueError, match="mode of NeuronStuck must be one of"):
        sp.NeuronStuck("sleepy", rate=0.1)
    with pytest.raises(ValueError, match="scale of ThresholdDrift must be a finite number >= 0"):
        sp.ThresholdDrift(float("nan"), rate=0.1)
    with pytest.raises(ValueError, match="neurons of sample_neuron_faults must be indices below "
                                         "256 for layer 'layers.2'"):
        sp.sample_neuron_faults(net, sp.NeuronStuck("dead", neurons=(("layers.2", 256),)), shape)
    with pytest.raises(ValueError, match="in_shape of inject_neuron_faults must be one sample's "
                                         "input shape when a fault model is given"), \
            sp.inject_neuron_faults(net, sp.NeuronStuck("dead", rate=0.1)):
        pass


class _NestedSNN(sp.SpikingNet):
    """A SpikingNet whose neurons live inside a ModuleDict and whose step is its own (not the
    flat ``layers`` list): the fault code must find the Leaky modules anyway."""

    def __init__(self):
        super().__init__([nn.Identity()], mem_init=0.0)
        self.blocks = nn.ModuleDict({"a": nn.Linear(64, 16), "b": nn.Linear(16, 16),
                                     "out": nn.Linear(16, 5)})
        self.spikes = nn.ModuleDict({"a": snn.Leaky(beta=0.9, threshold=0.3),
                                     "b": snn.Leaky(beta=0.9, threshold=0.3)})

    @property
    def neurons(self):
        return list(self.spikes.values())

    def initial_state(self):
        return [None, None]

    def step(self, x_t, state):
        h = self.blocks["a"](x_t.flatten(1))
        s1, m1 = self.spikes["a"](h, torch.zeros_like(h) if state[0] is None else state[0])
        h2 = F.relu(self.blocks["b"](s1)) + h  # residual add and a functional relu
        s2, m2 = self.spikes["b"](h2, torch.zeros_like(h2) if state[1] is None else state[1])
        return self.blocks["out"](s2), [m1, m2]


def test_nested_user_snn_and_residual_conversion():
    torch.manual_seed(0)
    net = _NestedSNN().eval()
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 5, (6,))
    assert [n for n, _ in sp.neuron_layers(net)] == ["spikes.a", "spikes.b"]
    assert sp.neuron_shapes(net, (1, 8, 8)) == {"spikes.a": (16,), "spikes.b": (16,)}
    with sp.inject_neuron_faults(net, sp.NeuronStuck("saturated", neurons=(("spikes.b", 2),)),
                                 (1, 8, 8)):
        log2, h2 = _spike_log(net, "spikes.b")
        rec = sp.record(net, (x, y), 5)
        live = sp.run_live(net, x, "dynamic-confidence", 0.5, steps=5)
        h2.remove()
    spikes = torch.stack(log2, dim=1)
    assert bool((spikes[:, :, 2] == 1.0).all()) and rec.outputs.shape == (6, 5, 5)
    assert torch.equal(live.predictions, sp.apply_rule(rec, "dynamic-confidence", 0.5).predictions)

    class Res(nn.Module):  # a residual QCFS ANN written here, converted by spiking.convert
        def __init__(self):
            super().__init__()
            self.fc1, self.q1 = nn.Linear(64, 32), sp.QCFS(4)
            self.fc2, self.q2 = nn.Linear(32, 32), sp.QCFS(4)
            self.out = nn.Linear(32, 5)

        def forward(self, x):
            h = self.q1(self.fc1(x.flatten(1)))
            return self.out(self.q2(self.fc2(h)) + h)

    try:
        snn_res = sp.convert(Res().eval())
    except ValueError as exc:  # a spiking.convert without residual support
        pytest.skip(f"spiking.convert does not convert residual nets here: {exc}")
    names = [n for n, _ in sp.neuron_layers(snn_res)]
    assert len(names) == 2
    with sp.inject_neuron_faults(snn_res, sp.NeuronStuck("dead", rate=1.0), (1, 8, 8)):
        log3, h3 = _spike_log(snn_res, names[1])
        sp.record(snn_res, (x, y), 4)
        h3.remove()
    assert all(bool((s == 0).all()) for s in log3) and len(log3) == 4
