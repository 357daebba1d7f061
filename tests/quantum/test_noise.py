"""Device noise: the batched torch density-matrix path against PennyLane's default.mixed and
the channels' closed forms; shots converge; gradients on the mixed-state device stay finite."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pennylane as qml
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import quantum as q
from hwlab.errors import HwlabError
from quantum._noise import after_gate, before_measurement, evolve

NOISE = q.Noise(depolarizing=0.04, depolarizing2=0.03, damping=0.05, readout=0.02)
_PAULIS = [np.eye(2), qml.matrix(qml.PauliX(0)), qml.matrix(qml.PauliY(0)),
           qml.matrix(qml.PauliZ(0))]
# two-qubit depolarizing as PennyLane Kraus operators: sqrt(1-p) I.I, sqrt(p/15) P.Q
_DEP2 = [np.kron(a, b) for a, b in itertools.product(_PAULIS, repeat=2)]


def _pl_channels(noise: q.Noise, wires) -> None:
    """The channels of ``noise`` after one gate, as PennyLane operations."""
    for w in wires:
        qml.DepolarizingChannel(noise.depolarizing, wires=w)
        qml.AmplitudeDamping(noise.damping, wires=w)
    p = noise.depolarizing2
    kraus = [math.sqrt(1 - p) * _DEP2[0]] + [math.sqrt(p / 15) * k for k in _DEP2[1:]]
    for a, b in itertools.pairwise(wires):
        qml.QubitChannel(kraus, wires=[a, b])


def _pl_readout(noise: q.Noise, wires) -> None:
    for w in wires:
        qml.BitFlip(noise.readout, wires=w)


def test_channels_have_their_closed_forms():
    one = torch.zeros(1, 2, 2, dtype=torch.complex128)
    one[0, 1, 1] = 1  # |1><1|
    zero = torch.zeros(1, 2, 2, dtype=torch.complex128)
    zero[0, 0, 0] = 1

    def z(rho):
        return (rho[0, 0, 0] - rho[0, 1, 1]).real.item()

    assert z(after_gate(zero, q.Noise(depolarizing=0.3), 1)) == pytest.approx(0.6, abs=1e-12)
    assert z(after_gate(one, q.Noise(damping=0.3), 1)) == pytest.approx(-0.4, abs=1e-12)
    assert z(before_measurement(zero, q.Noise(readout=0.1), 1)) == pytest.approx(0.8, abs=1e-12)
    # two-qubit depolarizing: <Z0 Z1> of |00> shrinks by 1 - 16p/15
    zz = torch.zeros(1, 4, 4, dtype=torch.complex128)
    zz[0, 0, 0] = 1
    out = after_gate(zz, q.Noise(depolarizing2=0.15), 2)
    assert (out[0].diagonal().real @ torch.tensor([1.0, -1, -1, 1], dtype=torch.float64)
            ).item() == pytest.approx(1 - 16 * 0.15 / 15, abs=1e-12)


def test_density_path_matches_default_mixed_on_three_qubits():
    rng = np.random.default_rng(0)
    u = qml.matrix(qml.SpecialUnitary(rng.normal(size=63), wires=[0, 1, 2]))
    dev = qml.device("default.mixed", wires=3)

    @qml.qnode(dev)
    def circuit():
        qml.QubitUnitary(u, wires=[0, 1, 2])
        _pl_channels(NOISE, [0, 1, 2])
        _pl_readout(NOISE, [0, 1, 2])
        return qml.density_matrix(wires=[0, 1, 2])

    rho = torch.zeros(1, 8, 8, dtype=torch.complex128)
    rho[0, 0, 0] = 1
    ours = before_measurement(after_gate(evolve(rho, torch.from_numpy(u)), NOISE, 3), NOISE, 3)
    assert np.abs(ours[0].numpy() - circuit()).max() < 1e-10


def test_noisy_quantum_linear_matches_default_mixed_circuit():
    torch.manual_seed(0)
    layer = q.QuantumLinear(10, 5, reps=2, noise=NOISE).double()  # 5 outputs: 3 qubits
    wires = [0, 1, 2]
    x = torch.randn(3, 10, dtype=torch.float64)
    gates = layer.data_gates(x).detach().numpy()
    theta = layer.theta.detach().numpy()
    dev = qml.device("default.mixed", wires=3)

    @qml.qnode(dev)
    def circuit(gate):
        for w in wires:
            qml.Hadamard(w)
        for r in range(2):
            qml.QubitUnitary(gate, wires=wires)
            _pl_channels(NOISE, wires)
            qml.SpecialUnitary(theta[r], wires=wires)
            _pl_channels(NOISE, wires)
        _pl_readout(NOISE, wires)
        return qml.probs(wires=wires)

    ref = np.stack([circuit(g) for g in gates])[:, :5]  # the first 5 basis states
    ours = (layer(x) - layer.bias).detach().numpy()
    assert np.abs(ours - ref).max() < 1e-10
    clean = q.with_noise(layer, None)
    assert np.abs((clean(x) - layer(x)).detach().numpy()).max() > 1e-3  # the noise is real


def test_noisy_quantum_conv_kernel_matches_default_mixed():
    torch.manual_seed(1)
    layer = q.QuantumConv2d(2, 3, 3, noise=NOISE).double()
    dev = qml.device("default.mixed", wires=2)

    @qml.qnode(dev)
    def state(theta):
        qml.SpecialUnitary(theta, wires=[0, 1])
        _pl_channels(NOISE, [0, 1])
        _pl_readout(NOISE, [0, 1])
        return qml.density_matrix(wires=[0, 1])

    theta = layer.theta.detach().numpy()
    ref = np.stack([[state(theta[o, i]).real[:3, :3] / 2 for i in range(2)] for o in range(3)])
    assert np.abs(layer.kernel().detach().numpy() - ref).max() < 1e-10
    # p = 0 on the density-matrix path equals the noiseless state-vector path
    ideal = q.with_noise(layer, q.Noise())
    assert (ideal.kernel() - q.with_noise(layer, None).kernel()).abs().max().item() < 1e-12


@pytest.mark.parametrize("kind", ["depolarizing", "depolarizing2", "damping", "readout"])
def test_every_noise_kind_changes_a_model_written_here(kind):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 4))
    hybrid = q.swap(net, 2, reps=2)
    x = torch.rand(6, 1, 6, 6)
    clean = hybrid(x)
    noisy = q.with_noise(hybrid, q.Noise(**{kind: 0.2}))(x)
    assert (noisy - clean).abs().max().item() > 1e-3  # never silently a no-op (qiskit #636)


def test_highest_depolarizing_level_costs_accuracy_on_a_trained_model():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(120, 8, generator=gen)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # 4 quadrant classes
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 16), q.QuantumLinear(16, 4, reps=2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def acc(m):
        with torch.no_grad():
            return (m(x).argmax(-1) == y).float().mean().item()

    accs = [acc(q.with_noise(model, q.Noise(depolarizing=p, depolarizing2=p)))
            for p in (0.0, 0.01, 0.3)]
    assert acc(model) > 0.6 and accs[0] == pytest.approx(acc(model), abs=1e-9)
    assert accs[2] < accs[0] - 0.1


def test_shot_estimates_converge_to_the_analytic_values():
    torch.manual_seed(4)
    layer = q.QuantumLinear(10, 4, reps=2).double()  # 2 qubits: 4 probabilities
    x = torch.randn(1, 10, dtype=torch.float64)
    exact = (layer(x) - layer.bias).detach()[0]
    reps, errs = 200, []
    for shots in (10, 100, 1000):
        noisy = q.with_noise(layer, q.Noise(shots=shots)).eval()
        with torch.no_grad():
            draws = torch.stack([noisy(x)[0] - noisy.bias for _ in range(reps)])  # reps x 4
        var = exact * (1 - exact) / shots
        assert ((draws.mean(0) - exact).abs() <= 3 * (var / reps).sqrt() + 1e-12).all()
        assert torch.allclose(draws.var(0), var, rtol=0.25)
        errs.append((draws - exact).abs().mean().item())
    assert errs[0] > errs[1] > errs[2]
    # shots act at inference only: in train mode the exact expectation is used
    train = q.with_noise(layer, q.Noise(shots=10)).train()
    assert torch.allclose(train(x) - train.bias, exact[None], atol=1e-12)


def test_conv_shot_kernel_converges_to_the_exact_kernel():
    torch.manual_seed(5)
    layer = q.QuantumConv2d(1, 2, 3).double()
    exact = layer.kernel().detach()
    spread = []
    for shots in (100, 10000):
        noisy = q.with_noise(layer, q.Noise(shots=shots)).eval()
        draws = torch.stack([noisy.kernel().detach() for _ in range(100)])
        sigma = draws.std(0) / 10  # standard error of the mean of 100 draws
        assert ((draws.mean(0) - exact).abs() <= 3 * sigma + 1e-9).all()
        spread.append(draws.std(0).mean().item())
    assert spread[1] < spread[0] / 5  # 100x the shots: about 10x less spread


def test_training_on_default_mixed_gives_finite_gradients():
    """Regression for PennyLane #7102 (NaN norms training on default.mixed): a hybrid model
    written here, backprop through default.mixed with channels, finite gradients for every
    parameter, also for an all-zero input row, over a few Adam steps; and our density path."""
    torch.manual_seed(6)
    pre = nn.Linear(5, 16).double()
    layer = q.QuantumLinear(16, 4, reps=2).double()
    dev = qml.device("default.mixed", wires=2)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(gate, theta):
        for w in (0, 1):
            qml.Hadamard(w)
        for r in range(2):
            qml.QubitUnitary(gate, wires=[0, 1])
            _pl_channels(NOISE, [0, 1])
            qml.SpecialUnitary(theta[r], wires=[0, 1])
            _pl_channels(NOISE, [0, 1])
        _pl_readout(NOISE, [0, 1])
        return qml.probs(wires=[0, 1])

    x = torch.randn(4, 5, dtype=torch.float64)
    x[0] = 0  # with the bias zeroed below: an all-zero data gate generator
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        pre.bias[:] = 0
    params = [*pre.parameters(), *layer.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        gates = layer.data_gates(pre(x))
        probs = torch.stack([torch.as_tensor(circuit(g, layer.theta)) for g in gates])
        loss = F.cross_entropy(probs + layer.bias, y)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        assert layer.theta.grad.abs().sum() > 0 and pre.weight.grad.abs().sum() > 0
        ours = q.with_noise(layer, NOISE)
        ours.theta = layer.theta  # the same parameter: compare outputs and gradients
        assert (ours(pre(x)) - (probs + layer.bias)).abs().max().item() < 1e-10
        opt.step()


def test_noise_errors():
    with pytest.raises(HwlabError, match=r"depolarizing of Noise must be .*got 1.5"):
        q.Noise(depolarizing=1.5)
    with pytest.raises(HwlabError, match=r"shots of Noise must be .*got 0"):
        q.Noise(shots=0)
    with pytest.raises(HwlabError, match="noise of with_noise must be None or a quantum.Noise"):
        q.with_noise(nn.Linear(2, 2), {"depolarizing": 0.1})
    with pytest.raises(HwlabError, match="noise of QuantumLinear must be None or a quantum"):
        q.QuantumLinear(4, 2, noise=0.1)
