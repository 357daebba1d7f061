"""Direct SNN training with surrogate gradients (the snntorch way), as a ``hwlab.train.Task``.

The network is the same architecture as the QCFS ANN (:data:`spiking.ARCHITECTURES`) with
snntorch ``Leaky`` neurons in place of the activations. Training unrolls ``steps`` time steps and
applies cross entropy to the mean per-step output of the last (non-spiking) layer, so the readout
matches what the stopping rules accumulate. Differs from snntorch's tutorials, which read out an
output neuron's spike count or membrane: a linear readout keeps one readout for both SNN paths.
"""

from __future__ import annotations

import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate

from hwlab.errors import check, check_choice, check_positive_int
from hwlab.train import Task

from ._qcfs import ARCHITECTURES
from ._snn import ENCODINGS, SpikingNet

__all__ = ["SURROGATES", "DirectTask", "direct_net"]

SURROGATES = {"atan": surrogate.atan, "fast_sigmoid": surrogate.fast_sigmoid}


def direct_net(arch: str = "lenet", in_shape=(1, 28, 28), num_classes: int = 10,
               encoding: str = "direct", beta: float = 0.95, threshold: float = 1.0,
               surrogate_fn: str = "atan") -> SpikingNet:
    """A fresh (untrained) SNN of ``arch`` with snntorch ``Leaky`` neurons.

    Defaults follow snntorch's tutorials: beta 0.95, threshold 1, reset by subtraction, the
    arc-tangent surrogate gradient (Fang et al. 2021), membranes starting at 0.
    """
    caller = "direct_net"
    check(arch in ARCHITECTURES, "arch", caller, f"one of {', '.join(ARCHITECTURES)}", arch)
    check_choice(encoding, ENCODINGS, "encoding", caller)
    check_choice(surrogate_fn, tuple(SURROGATES), "surrogate_fn", caller)
    check(isinstance(beta, (int, float)) and 0.0 < beta <= 1.0, "beta", caller, "in (0, 1]", beta)
    check(isinstance(threshold, (int, float)) and threshold > 0, "threshold", caller, "> 0",
          threshold)
    check_positive_int(num_classes, "num_classes", caller, minimum=2)
    grad = SURROGATES[surrogate_fn]()

    def neuron():
        return snn.Leaky(beta=beta, threshold=threshold, spike_grad=grad,
                         reset_mechanism="subtract")

    seq = ARCHITECTURES[arch](tuple(in_shape), num_classes, neuron)
    return SpikingNet(list(seq), encoding=encoding, mem_init=0.0)


class DirectTask(Task):
    """Backpropagation through time over ``steps`` steps with a surrogate gradient.

    ``backward`` unrolls the SNN, takes cross entropy of the mean per-step output and calls
    ``.backward()``; ``fit`` does the optimizer step. ``predict`` returns the summed outputs.
    """

    def __init__(self, net: SpikingNet, steps: int = 8, seed: int = 0):
        check(isinstance(net, SpikingNet), "net", "DirectTask", "a SpikingNet",
              type(net).__name__)
        self.net = net
        self.steps = check_positive_int(steps, "steps", "DirectTask")
        self.seed = seed
        self._generator = None  # rate-code noise; made on first use, on the data's device

    def _gen(self, device) -> torch.Generator | None:
        if self.net.encoding != "rate":
            return None
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def backward(self, x, y):
        out = self.net(x, self.steps, self._gen(x.device))  # N x T x classes
        loss = F.cross_entropy(out.mean(dim=1), y)
        loss.backward()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.net(x, self.steps, self._gen(x.device)).sum(dim=1)  # N x classes
