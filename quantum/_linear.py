"""``QuantumLinear``: the paper's data re-uploading layer as a drop-in for ``nn.Linear``.

For an input vector ``x`` (``in_features``), padded with zeros to ``4**n`` and reshaped row-major
into a ``2**n x 2**n`` matrix ``M``, the circuit on ``n`` qubits is

    |psi(x)> = prod_{r=1..R} [ SU(theta_r) exp(i t (M + M^T) / 2) ] |+>^n,   t = 1 / R,

(the data gate first in each repetition, as in the official code), and the layer returns

    y_j = |<j|psi(x)>|^2 + bias_j,   j = 0 .. out_features - 1,

the probabilities of the first ``out_features`` computational basis states (Wang et al. 2024,
Sec. 3.2; paper: 7 qubits, R = 10). The trainable gates are ``qml.SpecialUnitary`` with
``4**n - 1`` real Pauli coordinates each. The data gate is a ``qml.QubitUnitary`` whose matrix
torch computes per sample (an eigendecomposition of the real symmetric generator with an exact,
degeneracy-safe backward, so the gradient reaches the layer's input); the batch runs as ONE broadcast circuit on
``default.qubit`` with ``backprop`` (parameter broadcasting, as ``qml.qnn.TorchLayer`` does).

Difference from the official code: there the SU parameters are complex tensors that Adam updates
in both parts, so the trained gates are no longer unitary. Here they are real, so every gate is
unitary (to machine precision) throughout training. Circuits run in complex128.
"""

from __future__ import annotations

import pennylane as qml
import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_int
from quantum._common import (
    DEFAULT_DEVICE,
    DEFAULT_DIFF,
    MAX_QUBITS,
    LazyQNode,
    check_backend,
    make_qnode,
    su_matrices,
)
from quantum._noise import Noise, after_gate, before_measurement, evolve, sample_probs

__all__ = ["QuantumLinear", "linear_qubits"]

DEFAULT_REPS = 10  # the paper's number of re-uploading repetitions


class _ExpISym(torch.autograd.Function):
    """``U = exp(i t H)`` for real symmetric ``H`` (... x D x D) through ``H = V diag(l) V^T``.

    Backward (Daleckii-Krein): ``dU = V (F o (V^T dH V)) V^T`` with the divided differences
    ``F_ab = (e^{itl_a} - e^{itl_b}) / (l_a - l_b) = i t e^{it(l_a+l_b)/2} sinc(t(l_a-l_b)/2)``,
    finite also for equal eigenvalues (there it is the derivative ``i t e^{itl_a}``), so a
    degenerate H (an all-zero input) has a well-defined gradient. About 5x faster than the
    backward of ``torch.linalg.matrix_exp`` at D = 32 and equal to it to 1e-15.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, t: float) -> torch.Tensor:
        lam, v = torch.linalg.eigh(h)  # ... x D, ... x D x D (real)
        phase = torch.polar(torch.ones_like(lam), t * lam)  # e^{i t l}
        vc = v.to(phase.dtype)
        ctx.save_for_backward(lam, v)
        ctx.t = t
        return (vc * phase.unsqueeze(-2)) @ vc.transpose(-1, -2)  # ... x D x D complex

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        lam, v = ctx.saved_tensors
        t = ctx.t
        diff = lam.unsqueeze(-1) - lam.unsqueeze(-2)  # ... x D x D
        mean = (lam.unsqueeze(-1) + lam.unsqueeze(-2)) / 2
        # torch.sinc(x) = sin(pi x) / (pi x)
        sinc = torch.sinc(t * diff / (2 * torch.pi))
        f = 1j * t * torch.polar(torch.ones_like(mean), t * mean) * sinc  # ... x D x D
        vc = v.to(grad.dtype)
        inner = vc.transpose(-1, -2) @ grad @ vc
        return (vc @ (f.conj() * inner) @ vc.transpose(-1, -2)).real, None


def linear_qubits(in_features: int, out_features: int) -> int:
    """Fewest qubits ``n`` with ``4**n >= in_features`` and ``2**n >= out_features``."""
    n = 1
    while 4 ** n < in_features or 2 ** n < out_features:
        n += 1
    return n


class QuantumLinear(LazyQNode, nn.Module):
    """A drop-in for ``nn.Linear(in_features, out_features)`` (inputs ... x in_features).

    Args:
        in_features, out_features: as in ``nn.Linear``.
        n_qubits: circuit width; default the fewest with ``4**n >= in_features`` and
            ``2**n >= out_features``.
        reps: number of (data gate, trainable gate) repetitions R; the data gate's time is 1/R.
        bias: add a trainable bias per output.
        device, diff_method: PennyLane device name and differentiation method (default
            ``default.qubit`` with ``backprop``, the one that broadcasts the batch; adjoint and
            parameter-shift cannot differentiate the data gate's matrix).
        noise: a :class:`quantum.Noise` (then the batch runs as density matrices in torch:
            channels after every gate, readout flips, multinomial shots at inference) or None;
            settable later as ``.noise``.

    Parameters: ``theta`` (reps, 4**n - 1) real, N(0, 1) as in the official code; ``bias``
    (out_features,), N(0, 1) likewise.
    """

    _hwlab_leaf = True  # hwlab.graph: an opaque layer (PennyLane inside), never traced

    def __init__(self, in_features: int, out_features: int, n_qubits: int | None = None,
                 reps: int = DEFAULT_REPS, bias: bool = True, device: str = DEFAULT_DEVICE,
                 diff_method: str = DEFAULT_DIFF, noise: Noise | None = None):
        super().__init__()
        caller = "QuantumLinear"
        check(noise is None or isinstance(noise, Noise), "noise", caller,
              "None or a quantum.Noise", noise)
        self.noise = noise
        self.in_features = check_int(in_features, "in_features", caller, 1)
        self.out_features = check_int(out_features, "out_features", caller, 1)
        need = linear_qubits(self.in_features, self.out_features)
        check(need <= MAX_QUBITS, "in_features and out_features", caller,
              f"at most {4 ** MAX_QUBITS} and {2 ** MAX_QUBITS} ({MAX_QUBITS} qubits)",
              (self.in_features, self.out_features))
        if n_qubits is None:
            n_qubits = need
        self.n_qubits = check_int(n_qubits, "n_qubits", caller, minimum=need, maximum=MAX_QUBITS)
        self.reps = check_int(reps, "reps", caller, 1)
        self.qdevice, self.diff_method = check_backend(device, diff_method, caller)
        self.theta = nn.Parameter(torch.randn(self.reps, 4 ** self.n_qubits - 1))  # R x G
        self.bias = nn.Parameter(torch.randn(self.out_features)) if bias else None  # out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"qubits={self.n_qubits}, reps={self.reps}, device={self.qdevice!r}")

    def _build_qnode(self) -> qml.QNode:
        wires, reps = list(range(self.n_qubits)), self.reps

        def reupload(data_gate, theta):  # data_gate: [B x] D x D (broadcast), theta: R x G
            for w in wires:
                qml.Hadamard(w)  # |+>^n
            for r in range(reps):
                qml.QubitUnitary(data_gate, wires=wires)
                qml.SpecialUnitary(theta[r], wires=wires)
            return qml.probs(wires=wires)

        return make_qnode(reupload, self.n_qubits, self.qdevice, self.diff_method)

    def data_gates(self, x: torch.Tensor) -> torch.Tensor:
        """``exp(i (M + M^T) / (2 R))`` per row of ``x`` (B x in): B x D x D complex128."""
        dim = 2 ** self.n_qubits
        m = F.pad(x.double(), (0, dim * dim - self.in_features)).reshape(-1, dim, dim)  # B x D x D
        h = (m + m.transpose(-1, -2)) / 2  # real symmetric generator
        return _ExpISym.apply(h, 1.0 / self.reps)  # B x D x D complex, t = 1/R

    def gate_matrices(self) -> torch.Tensor:
        """The trained SU(2**n) gates: R x D x D complex128."""
        return su_matrices(self.theta.detach().double(), self.n_qubits)

    def _check(self, x) -> None:
        check(isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[-1] == self.in_features,
              "x", "QuantumLinear", f"a tensor ... x {self.in_features}",
              tuple(getattr(x, "shape", ())) or type(x).__name__)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        lead = x.shape[:-1]
        gates = self.data_gates(x.reshape(-1, self.in_features))  # B x D x D
        if self.noise is None:
            probs = torch.as_tensor(self.qnode(gates, self.theta))  # B x D (one broadcast circuit)
        else:
            probs = self.noisy_probs(gates)  # B x D
        out = probs.reshape(-1, 2 ** self.n_qubits)[:, : self.out_features].to(x.dtype)  # B x out
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*lead, self.out_features)

    def noisy_probs(self, gates: torch.Tensor) -> torch.Tensor:
        """The circuit's probabilities under ``self.noise`` for data gates B x D x D: the batch
        as density matrices (one torch op per gate or channel); shots only in eval mode."""
        n, dim, noise = self.n_qubits, 2 ** self.n_qubits, self.noise
        su = su_matrices(self.theta.double(), n)  # R x D x D (differentiable in theta)
        rho = torch.full((gates.shape[0], dim, dim), 1 / dim, dtype=gates.dtype,
                         device=gates.device)  # |+><+|^n
        for r in range(self.reps):
            rho = after_gate(evolve(rho, gates), noise, n)
            rho = after_gate(evolve(rho, su[r]), noise, n)
        probs = torch.diagonal(before_measurement(rho, noise, n), dim1=-2, dim2=-1).real
        if noise.shots is not None and not self.training:
            probs = sample_probs(probs, noise.shots)
        return probs  # B x D

    def forward_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Same output, one circuit per sample (no broadcasting): the baseline of the benchmark."""
        self._check(x)
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)  # B x in
        probs = torch.stack([torch.as_tensor(self.qnode(self.data_gates(r)[0], self.theta))
                             for r in rows])  # B x D, one circuit (and data gate) per sample
        out = probs[:, : self.out_features].to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*lead, self.out_features)
