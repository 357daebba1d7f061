"""The SNN module both paths produce, and ANN-to-SNN conversion.

A :class:`SpikingNet` is a sequence of layers run once per time step (a non-Sequential QCFS net
converts to its subclass :class:`spiking.GraphSpikingNet`, which runs a traced graph per step
instead); the spiking layers are
snntorch ``Leaky`` neurons whose membranes are passed in and returned explicitly (no hidden
state), so a runner can index-select the states of the samples still running. The readout is the
last layer's output at each step; stopping rules look at its running sum over steps.
"""

from __future__ import annotations

import copy

import snntorch as snn
import torch
from torch import nn

from hwlab.errors import check, check_choice

from ._qcfs import QCFS

__all__ = ["ENCODINGS", "SpikingNet", "convert"]

ENCODINGS = ("direct", "rate")
# Layers that are linear (or shape-only) at each step, so they carry over from ANN to SNN as is.
_PASS_THROUGH = (nn.Linear, nn.Conv2d, nn.Conv1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
                 nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Identity)


class SpikingNet(nn.Module):
    """A sequential SNN: ``layers`` run in order at every step, ``snntorch.Leaky`` layers spike.

    Args:
        layers: modules in order; the last one gives the per-step output (N x classes).
        encoding: ``"direct"`` feeds the analogue input at every step; ``"rate"`` feeds Bernoulli
            spikes with probability equal to the pixel value (inputs in [0, 1]).
        mem_init: fraction of each neuron's threshold its membrane starts at (0.5 for converted
            nets, as QCFS and Dynamic Confidence do; 0.0 for directly trained nets).
    """

    def __init__(self, layers, encoding: str = "direct", mem_init: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.encoding = encoding
        self.mem_init = float(mem_init)

    @property
    def neurons(self) -> list[snn.Leaky]:
        return [m for m in self.layers if isinstance(m, snn.Leaky)]

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The input of one step for the whole batch ``x`` (N x C x H x W)."""
        if self.encoding == "rate":  # Bernoulli rate code, p = pixel value
            noise = torch.rand(x.shape, generator=generator, device=x.device)  # N x C x H x W
            return (noise < x).to(x.dtype)
        return x

    def initial_state(self) -> list[torch.Tensor | None]:
        """One membrane per spiking layer; ``None`` = start at ``mem_init * threshold``."""
        return [None] * len(self.neurons)

    def step(self, x_t: torch.Tensor, state: list) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Advance every layer by one time step; returns (output N x classes, new state)."""
        h, new, k = x_t, [], 0
        for layer in self.layers:
            if isinstance(layer, snn.Leaky):
                mem = state[k]
                if mem is None:  # U[0] = mem_init * theta (theta/2 after conversion)
                    mem = torch.full_like(h, self.mem_init) * layer.threshold
                h, mem = layer(h, mem)  # IF/LIF: U += I; S = U > theta; U -= S * theta
                new.append(mem)
                k += 1
            else:
                h = layer(h)
        return h, new

    def forward(self, x: torch.Tensor, steps: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Run ``steps`` steps from a fresh state; returns per-step outputs N x T x classes."""
        state, outs = self.initial_state(), []
        for _ in range(steps):
            out, state = self.step(self.encode(x, generator), state)
            outs.append(out)
        return torch.stack(outs, dim=1)  # N x T x classes


def _flat_children(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [m for child in model for m in _flat_children(child)]
    return [model]


def convert(ann: nn.Module, encoding: str = "direct", leaf_modules=()) -> SpikingNet:
    """Convert a QCFS ANN into a NEW spiking net; ``ann`` is left untouched.

    Each :class:`QCFS` call site becomes an integrate-and-fire neuron: ``snntorch.Leaky`` with
    beta 1, reset by subtraction, threshold = the learned scale lambda, spikes graded to lambda (so
    a spike carries the same value as one full ANN activation) and membrane started at
    ``shift * lambda`` (lambda / 2). Everything else must be linear at each time step and is
    kept: linear, convolution, average pooling, batch norm (eval mode), flatten, dropout (off),
    residual adds, concatenation, reshapes and scaling by constants. The analogue input is fed at
    every step by default (``encoding="direct"``), as in QCFS and Dynamic Confidence.

    An ``nn.Sequential`` of such layers becomes a :class:`SpikingNet` of its layers; any other
    traceable network (residual blocks, ``torch.cat``, functional ops; see
    :func:`spiking.with_qcfs`) is traced with :mod:`hwlab.graph` and run as its graph once per
    time step, every QCFS site with its own neuron and membrane (:class:`spiking.GraphSpikingNet`).
    A remaining ReLU, a max pool or any other non-linear operation is an error naming it.

    Differs from the paper: none in the neuron model; the readout is the last layer's per-step
    output, accumulated by the stopping rules (the official code does the same).
    """
    check(isinstance(ann, nn.Module), "ann", "convert", "an nn.Module (a QCFS network)",
          type(ann).__name__)
    check_choice(encoding, ENCODINGS, "encoding", "convert")
    if isinstance(ann, nn.Sequential):
        children = _flat_children(ann)
        if all(isinstance(m, (QCFS, *_PASS_THROUGH)) for m in children):
            return _convert_sequential(children, encoding)
    from ._graph_snn import convert_graph

    return convert_graph(ann, encoding, leaf_modules)


def _neuron(m: QCFS) -> snn.Leaky:
    lam = float(m.scale.detach().abs())
    return snn.Leaky(beta=1.0, threshold=lam, reset_mechanism="subtract",
                     graded_spikes_factor=lam)


def _shift(qcfs: list[QCFS]) -> float:
    check(len(qcfs) > 0, "ann", "convert", "a network with at least one QCFS activation",
          "no QCFS layer")
    shifts = {m.shift for m in qcfs}
    check(len(shifts) == 1, "ann", "convert", "QCFS layers with one shift", sorted(shifts))
    return shifts.pop()


def _convert_sequential(children: list[nn.Module], encoding: str) -> SpikingNet:
    shift = _shift([m for m in children if isinstance(m, QCFS)])
    layers = []
    with torch.no_grad():
        for m in children:
            layers.append(_neuron(m) if isinstance(m, QCFS) else copy.deepcopy(m))
    net = SpikingNet(layers, encoding=encoding, mem_init=shift)
    return net.eval()
