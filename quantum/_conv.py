"""``QuantumConv2d``: the paper's "flipped quanvolution" with an exact classical fast path.

Per (out, in) channel pair a trainable ``q``-qubit state ``|psi> = SU(2**q)(theta)|0...0>``
(``qml.SpecialUnitary``: ``exp(i sum_m theta_m P_m)`` over the ``4**q - 1`` Pauli words). Each
``k x k`` input patch ``X`` is zero-padded (right and bottom) to ``2**q x 2**q`` and symmetrised,
``H(X) = (X~ + X~^T) / 2``, and used as the measured observable. The layer output is

    y[b, o, i, j] = 1/C_in * sum_c <psi_oc| H(X_bcij) |psi_oc> + bias[o]

(Wang et al. 2024, "Let the quantum creep in", Sec. 3.1; for a 3x3 kernel q = 2 and SU(4) has 15
parameters). The expectation is linear in the patch:

    <psi|H(X)|psi> = sum_{a,b} H_ab Re(rho_ab) = sum_{a,b < k} X_ab Re(rho_ab),  rho = |psi><psi|,

because ``H`` is real symmetric (the imaginary part of ``rho`` is antisymmetric and cancels, and
the symmetrisation moves onto ``Re(rho)``, which is already symmetric). So the layer IS a classical
convolution with kernel ``K[o, c] = Re(rho_oc)[:k, :k] / C_in``. The forward pass runs ONE
PennyLane circuit, broadcast over all ``C_out * C_in`` states, that returns the states (with
``backprop``; on other devices / diff methods, where ``SpecialUnitary`` cannot broadcast, one
circuit per state measures the ``4**q - 1`` Pauli expectations, state tomography
``rho = (I + sum_m <P_m> P_m) / 2**q``), and torch convolves. :meth:`QuantumConv2d.reference_forward`
evaluates the literal per-patch circuits for checking.

Difference from the official code: there the 15 parameters are complex and Adam moves their
imaginary parts, so the "unitary" drifts off the unitary group. Here ``theta`` is real, so every
gate is exactly special-unitary at every step.
"""

from __future__ import annotations

import pennylane as qml
import torch
import torch.nn.functional as F
from pennylane.ops.qubit.special_unitary import pauli_basis_matrices, pauli_basis_strings
from torch import nn

from hwlab.errors import check, check_int, is_int
from quantum._common import (
    DEFAULT_DEVICE,
    DEFAULT_DIFF,
    LazyQNode,
    check_backend,
    make_qnode,
    qubits_for,
    su_matrices,
)
from quantum._noise import Noise, after_gate, before_measurement, sample_expectations

__all__ = ["QuantumConv2d"]

_PAULI = {"X": qml.PauliX, "Y": qml.PauliY, "Z": qml.PauliZ}


def _pauli_word(word: str) -> qml.operation.Operator:
    ops = [_PAULI[c](w) for w, c in enumerate(word) if c != "I"]
    return ops[0] if len(ops) == 1 else qml.prod(*ops)


def _pair(value, name: str) -> tuple[int, int]:
    if is_int(value):
        value = (value, value)
    ok = isinstance(value, tuple) and len(value) == 2 and all(is_int(v) for v in value)
    check(ok, name, "QuantumConv2d", "an int or a pair of ints", value)
    return int(value[0]), int(value[1])


class QuantumConv2d(LazyQNode, nn.Module):
    """A drop-in for ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)``.

    Args:
        in_channels, out_channels: as in ``nn.Conv2d``.
        kernel_size: square kernel side ``k`` (paper: 3); the state has ``ceil(log2 k)`` qubits.
        stride, padding: as in ``nn.Conv2d`` (zero padding).
        bias: add a trainable bias per output channel.
        device, diff_method: PennyLane device name and differentiation method of the state
            circuit (default ``default.qubit`` with ``backprop``).
        noise: a :class:`quantum.Noise` (channels after the state's gate, readout flips, shots
            in the tomography at inference) or None (noiseless); settable later as ``.noise``.

    Parameters: ``theta`` (out, in, 4**q - 1) real SU(2**q) coordinates, initialised N(0, 1) as
    in the official code; ``bias`` (out,), N(0, 1) likewise.
    """

    _hwlab_leaf = True  # hwlab.graph: an opaque layer (PennyLane inside), never traced

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride=1,
                 padding=0, bias: bool = True, device: str = DEFAULT_DEVICE,
                 diff_method: str = DEFAULT_DIFF, noise: Noise | None = None):
        super().__init__()
        caller = "QuantumConv2d"
        check(noise is None or isinstance(noise, Noise), "noise", caller,
              "None or a quantum.Noise", noise)
        self.noise = noise
        self.in_channels = check_int(in_channels, "in_channels", caller, 1)
        self.out_channels = check_int(out_channels, "out_channels", caller, 1)
        self.kernel_size = check_int(kernel_size, "kernel_size", caller, 1, 2 ** 5)
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        check(min(self.stride) >= 1, "stride", caller, "positive", stride)
        check(min(self.padding) >= 0, "padding", caller, "non-negative", padding)
        self.qdevice, self.diff_method = check_backend(device, diff_method, caller)
        self.n_qubits = qubits_for(self.kernel_size)
        n_gen = 4 ** self.n_qubits - 1
        self.theta = nn.Parameter(torch.randn(out_channels, in_channels, n_gen))  # O x I x G
        self.bias = nn.Parameter(torch.randn(out_channels)) if bias else None  # O
        # Real parts of the Pauli words, in qml.SpecialUnitary's (lexicographic) order.
        basis = torch.from_numpy(pauli_basis_matrices(self.n_qubits).real.copy())  # G x D x D
        self.register_buffer("_pauli_real", basis.float(), persistent=False)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, qubits={self.n_qubits}, "
                f"device={self.qdevice!r}")

    def _build_qnode(self) -> qml.QNode:
        wires = list(range(self.n_qubits))
        if self.diff_method == "backprop":  # the simulator's state is differentiable: read it

            def state(theta):  # theta: S x G (broadcast over S states)
                qml.SpecialUnitary(theta, wires=wires)
                return qml.state()

            return make_qnode(state, self.n_qubits, self.qdevice, self.diff_method)
        words = [_pauli_word(w) for w in pauli_basis_strings(self.n_qubits)]

        def tomography(theta):  # any device / diff method: the G Pauli expectations
            qml.SpecialUnitary(theta, wires=wires)
            return [qml.expval(p) for p in words]

        return make_qnode(tomography, self.n_qubits, self.qdevice, self.diff_method)

    def density_matrices(self) -> torch.Tensor:
        """Real part of ``rho = |psi><psi|`` of every (out, in) state, from the circuit:
        O x I x D x D (symmetric, trace 1; the imaginary part does not enter the layer).

        With ``backprop`` the circuit returns the state; otherwise it measures the Pauli
        expectations and ``rho = (I + sum_m <P_m> P_m) / D`` (two-qubit state tomography).
        """
        o, i, g = self.theta.shape
        dim = 2 ** self.n_qubits
        if self.noise is not None:
            return self._noisy_density(o, i, dim)
        if self.diff_method == "backprop":
            psi = torch.as_tensor(self.qnode(self.theta.reshape(o * i, g)))  # S x D complex
            psi = psi.reshape(o * i, dim)
            rho = (psi[:, :, None] * psi.conj()[:, None, :]).real  # S x D x D
        else:
            # SpecialUnitary cannot broadcast outside backprop: one circuit per state (S of them).
            c = torch.stack([torch.stack([torch.as_tensor(e) for e in self.qnode(t)])
                             for t in self.theta.reshape(o * i, g)])  # S x G
            eye = torch.eye(dim, dtype=c.dtype, device=c.device)
            rho = (eye + torch.einsum("sg,gab->sab", c, self._pauli_real.to(c.dtype))) / dim
        return rho.reshape(o, i, dim, dim)

    def _noisy_density(self, o: int, i: int, dim: int) -> torch.Tensor:
        """Re(rho) under ``self.noise``: the gate SU(theta)|0..0> as a density matrix, the
        channels after it, readout flips; in eval mode with shots, rho re-estimated from shot
        estimates of its 4**q - 1 Pauli expectations (batched over all O x I states)."""
        n, noise = self.n_qubits, self.noise
        u = su_matrices(self.theta.reshape(o * i, -1).double(), n)  # S x D x D
        rho = u[:, :, :1] @ u[:, :, :1].conj().transpose(-1, -2)  # S x D x D: U|0><0|U^+
        rho = before_measurement(after_gate(rho, noise, n), noise, n)
        if noise.shots is not None and not self.training:
            pauli = torch.from_numpy(pauli_basis_matrices(n)).to(rho.device)  # G x D x D
            e = torch.einsum("sab,gba->sg", rho, pauli).real  # S x G: Tr(rho P)
            e = sample_expectations(e, noise.shots)
            eye = torch.eye(dim, dtype=e.dtype, device=e.device)
            real = (eye + torch.einsum("sg,gab->sab", e, self._pauli_real.to(e.dtype))) / dim
        else:
            real = rho.real
        return real.reshape(o, i, dim, dim)

    def kernel(self) -> torch.Tensor:
        """The exact classical kernel ``Re(rho)[:k, :k] / C_in``: O x I x k x k."""
        k = self.kernel_size
        return self.density_matrices()[..., :k, :k] / self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check(x.dim() == 4 and x.shape[1] == self.in_channels, "x", "QuantumConv2d",
              f"a B x {self.in_channels} x H x W tensor", tuple(x.shape))
        w = self.kernel().to(x.dtype)  # O x I x k x k
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, w, b, self.stride, self.padding)  # B x O x H' x W'

    def gate_matrices(self) -> torch.Tensor:
        """The SU(2**q) gate of every (out, in) pair: O x I x D x D complex."""
        return su_matrices(self.theta.detach().double(), self.n_qubits)

    # -- the literal circuit, one per patch (slow; for tests and benchmarks) ----------------------
    def _reference_qnode(self) -> qml.QNode:
        wires = list(range(self.n_qubits))

        def patch_circuit(theta, observable):  # theta: O x G (broadcast), observable: D x D
            qml.SpecialUnitary(theta, wires=wires)
            return qml.expval(qml.Hermitian(observable, wires=wires))

        return make_qnode(patch_circuit, self.n_qubits, self.qdevice, self.diff_method)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same output by one circuit per (sample, patch, input channel), each measuring the
        symmetrised zero-padded patch as a ``qml.Hermitian`` observable; broadcast over the
        output channels. Cost grows with B x H' x W' x C_in circuits: use on tiny inputs only.
        """
        check(x.dim() == 4 and x.shape[1] == self.in_channels, "x", "QuantumConv2d",
              f"a B x {self.in_channels} x H x W tensor", tuple(x.shape))
        qnode, k, dim = self._reference_qnode(), self.kernel_size, 2 ** self.n_qubits
        b, c = x.shape[:2]
        h_out = (x.shape[2] + 2 * self.padding[0] - k) // self.stride[0] + 1
        w_out = (x.shape[3] + 2 * self.padding[1] - k) // self.stride[1] + 1
        cols = F.unfold(x.double(), k, padding=self.padding, stride=self.stride)  # B x C*k*k x L
        patches = cols.reshape(b, c, k, k, -1)  # B x C x k x k x L
        theta = self.theta.double()
        out = torch.zeros(b, self.out_channels, cols.shape[-1], dtype=torch.float64)
        for n in range(b):
            for pos in range(cols.shape[-1]):
                for ch in range(c):
                    padded = torch.zeros(dim, dim, dtype=torch.float64)
                    padded[:k, :k] = patches[n, ch, :, :, pos]
                    obs = (padded + padded.T) / 2  # D x D, real symmetric
                    out[n, :, pos] += torch.as_tensor(qnode(theta[:, ch], obs)).reshape(-1)
        out = out / c
        if self.bias is not None:
            out = out + self.bias.double()[None, :, None]
        return out.reshape(b, self.out_channels, h_out, w_out).to(x.dtype)
