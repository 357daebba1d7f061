"""QuantumConv2d and QuantumLinear: exactness, gradients, unitarity, error messages."""

from __future__ import annotations

import copy
from functools import reduce
from itertools import product

import numpy as np
import pytest
import torch
from scipy.linalg import expm
from torch.func import functional_call

from quantum import QuantumConv2d, QuantumLinear, linear_qubits

_P = {"I": np.eye(2), "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]),
      "Z": np.diag([1.0, -1.0])}


def _su_numpy(theta: np.ndarray, n: int) -> np.ndarray:
    """exp(i sum_m theta_m P_m), Pauli words lexicographic in I, X, Y, Z, identity dropped."""
    words = list(product("IXYZ", repeat=n))[1:]
    gen = sum(t * reduce(np.kron, [_P[c] for c in w]) for t, w in zip(theta, words))
    return expm(1j * gen)


# -- QuantumConv2d --------------------------------------------------------------------------------
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_conv_exact_kernel_equals_per_patch_circuits(stride, padding):
    torch.manual_seed(0)
    layer = QuantumConv2d(2, 3, 3, stride=stride, padding=padding).double()
    x = torch.rand(2, 2, 5, 6, dtype=torch.float64) * 2 - 1
    fast = layer(x)
    slow = layer.reference_forward(x)
    conv = torch.nn.Conv2d(2, 3, 3, stride=stride, padding=padding)
    assert fast.shape == slow.shape == conv(x.float()).shape
    assert (fast - slow).abs().max().item() < 1e-6
    assert fast.abs().max().item() > 0.1  # a real signal, not zeros on both sides


def test_conv_matches_numpy_formula():
    """<psi|H(X)|psi> with psi = SU(theta)|00> and H the symmetrised zero-padded patch."""
    torch.manual_seed(1)
    layer = QuantumConv2d(1, 1, 3).double()
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    psi = _su_numpy(layer.theta.detach().numpy()[0, 0], 2)[:, 0]
    patch = np.zeros((4, 4))
    patch[:3, :3] = x[0, 0].numpy()
    herm = (patch + patch.T) / 2
    expect = (psi.conj() @ herm @ psi).real + layer.bias.item()
    assert layer(x).item() == pytest.approx(expect, abs=1e-10)


def test_conv_density_matrices_are_pure_states():
    torch.manual_seed(2)
    rho = QuantumConv2d(3, 2, 3).double().density_matrices().detach()  # 2 x 3 x 4 x 4
    trace = torch.diagonal(rho, dim1=-2, dim2=-1).sum(-1)
    assert torch.allclose(trace, torch.ones_like(trace), atol=1e-12)
    assert torch.allclose(rho, rho.transpose(-1, -2), atol=1e-12)
    eig = torch.linalg.eigvalsh(rho)
    assert eig.min().item() > -1e-12  # Re(rho) of a pure state is PSD
    # purity of Re(rho) <= 1 (equality only for real states); a random state is complex
    assert (rho @ rho).diagonal(dim1=-2, dim2=-1).sum(-1).max().item() < 1 - 1e-3


@pytest.mark.parametrize("device,diff_method", [("default.qubit", "parameter-shift"),
                                                 ("lightning.qubit", "adjoint")])
def test_conv_tomography_path_equals_state_path(device, diff_method):
    """Other devices measure the 15 Pauli expectations per state instead of reading the state."""
    torch.manual_seed(3)
    a = QuantumConv2d(1, 2, 3).double()
    b = QuantumConv2d(1, 2, 3, device=device, diff_method=diff_method).double()
    b.load_state_dict(a.state_dict())
    ka, kb = a.kernel(), b.kernel()
    assert (ka - kb).abs().max().item() < 1e-6
    (ka * torch.arange(18.0).reshape(ka.shape)).sum().backward()
    (kb * torch.arange(18.0).reshape(kb.shape)).sum().backward()
    assert (a.theta.grad - b.theta.grad).abs().max().item() < 1e-6


def test_conv_gradients_match_finite_differences():
    torch.manual_seed(4)
    layer = QuantumConv2d(2, 1, 3, padding=1).double()
    x = torch.rand(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, th: functional_call(layer, {"theta": th}, (inp,)),
                                    (x, layer.theta.detach().clone().requires_grad_()),
                                    eps=1e-6, atol=1e-6)


def test_conv_kernel_two_is_one_qubit_and_exact():
    torch.manual_seed(5)
    layer = QuantumConv2d(1, 2, 2).double()
    assert layer.n_qubits == 1 and layer.theta.shape == (2, 1, 3)
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    assert (layer(x) - layer.reference_forward(x)).abs().max().item() < 1e-6


def test_conv_errors():
    with pytest.raises(ValueError, match="in_channels of QuantumConv2d must be an integer >= 1"):
        QuantumConv2d(0, 2)
    with pytest.raises(ValueError, match="stride of QuantumConv2d must be an int or a pair"):
        QuantumConv2d(1, 2, stride="x")
    with pytest.raises(ValueError, match=r"x of QuantumConv2d must be a B x 2 x H x W tensor, "
                                         r"got \(1, 3, 5, 5\)"):
        QuantumConv2d(2, 2)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="device of QuantumConv2d must be a PennyLane device"):
        QuantumConv2d(1, 1, device="")


# -- QuantumLinear --------------------------------------------------------------------------------
def _linear_numpy(layer: QuantumLinear, x: np.ndarray) -> np.ndarray:
    n, dim = layer.n_qubits, 2 ** layer.n_qubits
    m = np.zeros(dim * dim)
    m[: len(x)] = x
    m = m.reshape(dim, dim)
    data = expm(1j * (m + m.T) / 2 / layer.reps)
    psi = np.full(dim, dim ** -0.5, dtype=complex)  # |+>^n
    for r in range(layer.reps):
        psi = _su_numpy(layer.theta.detach().double().numpy()[r], n) @ (data @ psi)
    return np.abs(psi[: layer.out_features]) ** 2 + layer.bias.detach().double().numpy()


def test_linear_matches_numpy_circuit():
    torch.manual_seed(6)
    layer = QuantumLinear(11, 3, reps=3).double()
    assert layer.n_qubits == 2  # 4**2 = 16 >= 11, 2**2 >= 3
    x = torch.randn(4, 11, dtype=torch.float64)
    out = layer(x).detach().numpy()
    ref = np.stack([_linear_numpy(layer, xi) for xi in x.numpy()])
    assert np.abs(out - ref).max() < 1e-10


def test_linear_batched_equals_per_sample_and_keeps_leading_dims():
    torch.manual_seed(7)
    layer = QuantumLinear(20, 5, reps=2)
    x = torch.randn(2, 3, 20)
    out = layer(x)
    assert out.shape == (2, 3, 5)
    assert (out - layer.forward_per_sample(x)).abs().max().item() < 1e-6


def test_linear_probabilities_sum_to_at_most_one():
    torch.manual_seed(8)
    layer = QuantumLinear(16, 4, reps=2, bias=False)  # 2 qubits: all 4 basis states are outputs
    assert layer(torch.randn(6, 16)).sum(-1).sub(1).abs().max().item() < 1e-6


def test_linear_gradients_match_finite_differences():
    torch.manual_seed(9)
    layer = QuantumLinear(6, 3, reps=2).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    theta = layer.theta.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda inp, th: functional_call(layer, {"theta": th}, (inp,)), (x, theta),
                                    eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["random", "zero"])
def test_data_gate_matches_matrix_exp_with_gradients(kind):
    """The eigh-based data gate and its backward equal torch.linalg.matrix_exp, also for a
    degenerate generator (all-zero input: every eigenvalue equal)."""
    torch.manual_seed(12)
    layer = QuantumLinear(12, 2, reps=4).double()
    x = torch.randn(3, 12, dtype=torch.float64) if kind == "random" else torch.zeros(3, 12).double()
    w = torch.randn(3, 4, 4, dtype=torch.complex128)
    a_in, b_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ua = layer.data_gates(a_in)
    m = torch.nn.functional.pad(b_in, (0, 4)).reshape(3, 4, 4)
    ub = torch.linalg.matrix_exp(1j * (m + m.transpose(1, 2)) / 2 / 4)
    assert (ua - ub).abs().max().item() < 1e-12
    (ga,) = torch.autograd.grad((ua * w).real.sum(), a_in)
    (gb,) = torch.autograd.grad((ub * w).real.sum(), b_in)
    assert torch.isfinite(ga).all() and (ga - gb).abs().max().item() < 1e-12


def test_linear_qubits_and_errors():
    assert linear_qubits(800, 10) == 5 and linear_qubits(128, 10) == 4 and linear_qubits(3, 5) == 3
    with pytest.raises(ValueError, match=r"n_qubits of QuantumLinear must be an integer in \[5, "):
        QuantumLinear(800, 10, n_qubits=4)
    with pytest.raises(ValueError, match=r"in_features and out_features of QuantumLinear must be "
                                         r"at most 16384 and 128 \(7 qubits\), got \(20000, 10\)"):
        QuantumLinear(20000, 10)
    with pytest.raises(ValueError, match="reps of QuantumLinear must be an integer >= 1, got 0"):
        QuantumLinear(4, 2, reps=0)
    with pytest.raises(ValueError, match=r"x of QuantumLinear must be a tensor ... x 4, got \(2, 5\)"):
        QuantumLinear(4, 2)(torch.zeros(2, 5))


def test_linear_on_lightning_with_parameter_shift_matches_backprop():
    """Another device: same outputs and theta-gradients (inputs need backprop, see docs)."""
    torch.manual_seed(11)
    a = QuantumLinear(6, 3, reps=1).double()
    b = QuantumLinear(6, 3, reps=1, device="lightning.qubit", diff_method="parameter-shift")
    b.double().load_state_dict(a.state_dict())
    x = torch.randn(3, 6, dtype=torch.float64)
    ya, yb = a(x), b(x)
    assert (ya - yb).abs().max().item() < 1e-10
    ya.sum().backward()
    yb.sum().backward()
    assert (a.theta.grad - b.theta.grad).abs().max().item() < 1e-8


def test_layers_deepcopy_and_state_dict_round_trip():
    torch.manual_seed(10)
    layer = QuantumLinear(8, 2, reps=2)
    x = torch.randn(3, 8)
    y = layer(x)  # builds the QNode
    twin = copy.deepcopy(layer)
    assert twin._qnode_cache is None and torch.equal(twin(x), y)
    fresh = QuantumLinear(8, 2, reps=2)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), y)
