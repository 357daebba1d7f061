"""Device noise for the quantum layers: a batched density-matrix simulator in torch.

The noiseless layers evolve state vectors; with a :class:`Noise` set (``with_noise(model,
noise)``, or ``layer.noise = Noise(...)``) they evolve density matrices ``rho`` (a batch of
``B x 2**n x 2**n`` complex128 tensors, one torch op per gate or channel for the whole batch) and
insert, after EVERY gate (each of our gates acts on all ``n`` wires of its circuit):

* ``depolarizing`` p: PennyLane's ``DepolarizingChannel(p)`` on every wire (Kraus sqrt(1-p) I,
  sqrt(p/3) X, Y, Z: a Pauli expectation shrinks by 1 - 4p/3);
* ``depolarizing2`` p: the two-qubit depolarizing channel on every neighbouring pair (w, w+1) of
  a chain (Kraus sqrt(1-p) I.I and sqrt(p/15) P.Q for the 15 other Pauli pairs, PennyLane's
  one-qubit convention carried to two qubits; the n-wire gate is charged as one layer of
  two-qubit gates on a chain). Equivalently rho -> (1 - 16p/15) rho + 16p/15 Tr_ab(rho) x I/4;
* ``damping`` gamma: ``AmplitudeDamping(gamma)`` on every wire;

and before the measurement ``readout`` p: ``BitFlip(p)`` on every measured wire (symmetric
readout error). ``shots`` N (``None`` = exact expectations) acts at inference only (``eval()``
mode; training uses the exact noisy expectations, the practical recipe of the noise note):
probabilities become multinomial frequencies of N shots per sample (``QuantumLinear``), Pauli
expectations 2 Binomial(N, (1 + e)/2) / N - 1 per Pauli word (the state tomography behind
``QuantumConv2d``'s kernel; wires' correlations within a word are exact, between words not).
Channels with probability 0 are skipped, so ``Noise()`` costs one density-matrix evolution.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from hwlab.errors import check, check_int, check_number

__all__ = ["Noise", "with_noise"]

_X = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128)


@dataclass(frozen=True)
class Noise:
    """Noise of every gate and measurement of a quantum layer (probabilities in [0, 1])."""

    depolarizing: float = 0.0  # one-qubit depolarizing per wire after each gate (PennyLane p)
    depolarizing2: float = 0.0  # two-qubit depolarizing per neighbouring pair after each gate
    damping: float = 0.0  # amplitude damping gamma per wire after each gate (T1 relaxation)
    readout: float = 0.0  # symmetric bit flip per wire before the measurement
    shots: int | None = None  # shots per expectation at inference; None = exact (infinite)

    def __post_init__(self):
        for name in ("depolarizing", "depolarizing2", "damping", "readout"):
            object.__setattr__(self, name, check_number(getattr(self, name), name, "Noise", 0, 1))
        if self.shots is not None:
            object.__setattr__(self, "shots", check_int(self.shots, "shots", "Noise", 1))

    @property
    def channels(self) -> bool:
        """Whether any channel is on (else only shots, if any, differ from the ideal circuit)."""
        return any((self.depolarizing, self.depolarizing2, self.damping, self.readout))


def _view(rho: torch.Tensor, wire: int, k: int, n: int) -> torch.Tensor:
    """``rho`` (B x 2**n x 2**n) viewed as B x L x d x R x L x d x R with the ``k`` contiguous
    wires ``wire .. wire+k-1`` as the d = 2**k axes (a view: no copy, no permutation)."""
    left, right = 2 ** wire, 2 ** (n - wire - k)
    return rho.reshape(rho.shape[0], left, 2 ** k, right, left, 2 ** k, right)


def depolarize(rho: torch.Tensor, wire: int, k: int, p: float, n: int) -> torch.Tensor:
    """Depolarizing channel on the ``k`` contiguous wires from ``wire`` (d = 2**k), PennyLane's
    convention: rho -> (1 - p d^2/(d^2-1)) rho + p d^2/(d^2-1) Tr_wires(rho) x I/d."""
    if p == 0:
        return rho
    t = _view(rho, wire, k, n)
    d = t.shape[2]
    lam = p * d * d / (d * d - 1)
    reduced = t.diagonal(dim1=2, dim2=5).sum(-1)  # B x L x R x L x R: Tr_wires
    eye = torch.eye(d, dtype=rho.dtype, device=rho.device)[:, None, None, :, None] * (lam / d)
    out = torch.addcmul((1 - lam) * t, eye, reduced[:, :, None, :, :, None, :])
    return out.reshape(rho.shape)


def kraus1(rho: torch.Tensor, wire: int, kraus: torch.Tensor, n: int) -> torch.Tensor:
    """sum_i K_i rho K_i^+ on one wire; ``kraus`` is K x 2 x 2."""
    t = _view(rho, wire, 1, n)
    k = kraus.to(rho.dtype)
    return torch.einsum("kij,bxjyulz,kpl->bxiyupz", k, t, k.conj()).reshape(rho.shape)


def damping_kraus(gamma: float) -> torch.Tensor:
    """``AmplitudeDamping(gamma)``'s Kraus operators: 2 x 2 x 2."""
    g = torch.tensor(gamma, dtype=torch.float64)
    k0 = torch.stack([torch.stack([g.new_ones(()), g.new_zeros(())]),
                      torch.stack([g.new_zeros(()), (1 - g).sqrt()])])
    k1 = torch.stack([torch.stack([g.new_zeros(()), g.sqrt()]),
                      torch.stack([g.new_zeros(()), g.new_zeros(())])])
    return torch.stack([k0, k1]).to(torch.complex128)


def bit_flip(rho: torch.Tensor, wire: int, p: float, n: int) -> torch.Tensor:
    """``BitFlip(p)`` on one wire: (1-p) rho + p X rho X."""
    if p == 0:
        return rho
    eye = torch.eye(2, dtype=torch.complex128)
    return kraus1(rho, wire, torch.stack([(1 - p) ** 0.5 * eye, p ** 0.5 * _X]), n)


def after_gate(rho: torch.Tensor, noise: Noise, n: int) -> torch.Tensor:
    """The channels that follow every gate, on every wire (and neighbouring pair)."""
    for w in range(n):
        rho = depolarize(rho, w, 1, noise.depolarizing, n)
        if noise.damping:
            rho = kraus1(rho, w, damping_kraus(noise.damping), n)
    if n >= 2:
        for w in range(n - 1):
            rho = depolarize(rho, w, 2, noise.depolarizing2, n)
    return rho


def before_measurement(rho: torch.Tensor, noise: Noise, n: int) -> torch.Tensor:
    """Readout bit flips on every measured wire."""
    for w in range(n):
        rho = bit_flip(rho, w, noise.readout, n)
    return rho


def evolve(rho: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``U rho U^+`` (``u`` D x D or B x D x D, broadcast over the batch)."""
    return u @ rho @ u.conj().transpose(-1, -2)


def sample_probs(probs: torch.Tensor, shots: int) -> torch.Tensor:
    """Frequencies of ``shots`` draws from each row of ``probs`` (B x D), as B x D."""
    p = probs.detach().clamp_min(0)
    counts = torch.distributions.Multinomial(shots, probs=p / p.sum(-1, keepdim=True)).sample()
    return counts.to(probs.dtype) / shots


def sample_expectations(e: torch.Tensor, shots: int) -> torch.Tensor:
    """Shot estimates of +-1-valued observables with exact expectations ``e``:
    2 Binomial(shots, (1 + e)/2) / shots - 1 (variance (1 - e^2)/shots)."""
    p = ((1 + e.detach()) / 2).clamp(0, 1)
    return 2 * torch.distributions.Binomial(shots, probs=p).sample() / shots - 1


def with_noise(model: nn.Module, noise: Noise | None) -> nn.Module:
    """A NEW model whose every quantum layer runs under ``noise`` (``None``: noiseless)."""
    from quantum._conv import QuantumConv2d
    from quantum._linear import QuantumLinear

    check(isinstance(model, nn.Module), "model", "with_noise", "an nn.Module",
          type(model).__name__)
    check(noise is None or isinstance(noise, Noise), "noise", "with_noise",
          "None or a quantum.Noise", noise)
    new = copy.deepcopy(model)
    for m in new.modules():
        if isinstance(m, (QuantumConv2d, QuantumLinear)):
            m.noise = noise
    return new
