"""Activation (neuron) faults through pytorchfi: a thin bridge so campaigns can mix weight and
activation faults.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hwlab.errors import check, check_int, check_number, fail

__all__ = ["LAYER_TYPES", "NeuronFault", "NeuronFaulty", "neuron_count", "neuron_faults"]

# Names accepted in NeuronFault.layer_types -> the module classes pytorchfi hooks.
LAYER_TYPES = {"conv2d": nn.Conv2d, "linear": nn.Linear, "relu": nn.ReLU}


@dataclass(frozen=True)
class NeuronFault:
    """``count`` faulty neurons (output activations of the chosen layer types), same for every input.

    Each faulty neuron's output is *replaced* by a value: ``value`` if given, else a value drawn
    uniformly from ``[min_val, max_val]`` per neuron (pytorchfi's own ``random_value`` default
    range is [-1, 1]). Positions are uniform over all neurons of the chosen layers (pytorchfi's
    ``random_neuron_location`` instead picks a layer first, then a neuron in it: we differ so that
    a large layer gets proportionally more faults, as weight faults do).
    """

    count: int = 1  # faulty neurons per trial (pytorchfi injects single neurons by default)
    value: float | None = None  # replacement value; None = uniform in [min_val, max_val]
    min_val: float = -1.0  # pytorchfi's random_value default range
    max_val: float = 1.0
    layer_types: tuple[str, ...] = ("conv2d", "linear")  # pytorchfi's default is conv2d only

    def __post_init__(self):
        check_int(self.count, "count", "NeuronFault", 1)
        if self.value is not None:
            check_number(self.value, "value", "NeuronFault", constraint="None or a finite number")
        check(math.isfinite(self.min_val) and math.isfinite(self.max_val)
              and self.min_val <= self.max_val, "min_val and max_val", "NeuronFault",
              "finite numbers with min_val <= max_val", (self.min_val, self.max_val))
        types = (self.layer_types,) if isinstance(self.layer_types, str) else self.layer_types
        for t in types:
            check(t in LAYER_TYPES, "layer_types", "NeuronFault",
                  f"names among {', '.join(LAYER_TYPES)}", self.layer_types)
        object.__setattr__(self, "layer_types", tuple(types))

    kind = property(lambda self: "neuron")
    label = property(lambda self: "neuron")
    rate = property(lambda self: None)
    bits = property(lambda self: None)

    def to_dict(self) -> dict:
        return {"fault": "neuron", "count": self.count, "value": self.value,
                "min_val": self.min_val, "max_val": self.max_val,
                "layer_types": list(self.layer_types)}


def neuron_faults(model: nn.Module, fault: NeuronFault, input_shape, batch_size: int,
                  seed: int = 0) -> NeuronFaulty:
    """A pytorchfi-corrupted COPY of ``model`` with ``fault.count`` faulty neurons (a module).

    pytorchfi 0.6 (``pytorchfi.core.fault_injection``) profiles the output shape of every module of
    ``layer_types`` with one dummy forward pass, then ``declare_neuron_fi(batch=, layer_num=, dim1=,
    dim2=, dim3=, value=)`` deep-copies the model and registers forward hooks that overwrite
    ``output[batch][dim1, dim2, dim3]`` with ``value``. Its fault values are therefore *replacement
    values* of the activation (not deltas, not bit flips); they apply to the listed batch element
    of every forward call. To make a fault hold for every input, the same neuron is listed for all
    ``batch_size`` elements; the returned :class:`NeuronFaulty` calls the copy in chunks of
    exactly ``batch_size`` inputs (padding the last) and resets pytorchfi's layer counter before
    each (it is never reset by pytorchfi itself). Locations and values
    are drawn here from ``seed`` (pytorchfi's helpers use Python's global ``random``).
    The input model is untouched.
    """
    from pytorchfi.core import fault_injection

    caller = "neuron_faults"
    check(isinstance(fault, NeuronFault), "fault", caller, "a NeuronFault", fault)
    shape = [int(s) for s in input_shape]
    batch_size = check_int(batch_size, "batch_size", caller, 1)
    types = [LAYER_TYPES[t] for t in fault.layer_types]
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        pfi = fault_injection(model, batch_size, input_shape=shape, layer_types=types,
                              use_cuda=next(model.parameters()).is_cuda)
    except StopIteration:
        raise fail("model", caller, "a model with parameters", type(model).__name__) from None
    finally:
        # pytorchfi calls logging.basicConfig with a format that needs a "clientip" field, which
        # would break every later log record of the program: undo what it added.
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
    sizes = np.array([int(np.prod(s[1:])) for s in pfi.output_size], dtype=np.int64)
    check(sizes.size > 0, "fault", caller, "layer_types present in the model",
          fault.layer_types)
    check(fault.count <= int(sizes.sum()), "count", caller,
          f"at most the number of neurons of the {', '.join(fault.layer_types)} layers "
          f"({int(sizes.sum())})", fault.count)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    flat = rng.choice(int(sizes.sum()), size=fault.count, replace=False)
    ends = np.cumsum(sizes)
    layer = np.searchsorted(ends, flat, side="right")
    local = flat - (ends - sizes)[layer]
    if fault.value is None:
        values = rng.uniform(fault.min_val, fault.max_val, size=flat.size)
    else:
        values = np.full(flat.size, float(fault.value))
    lay, d1, d2, d3, val, bat = [], [], [], [], [], []
    for li, pos, v in zip(layer, local, values):
        dims = list(np.unravel_index(int(pos), pfi.output_size[li][1:])) + [None, None]
        for b in range(batch_size):
            lay.append(int(li))
            d1.append(int(dims[0]))
            d2.append(None if dims[1] is None else int(dims[1]))
            d3.append(None if dims[2] is None else int(dims[2]))
            val.append(float(v))
            bat.append(b)
    corrupted = pfi.declare_neuron_fi(batch=bat, layer_num=lay, dim1=d1, dim2=d2, dim3=d3,
                                      value=val)
    corrupted.train(model.training)
    return NeuronFaulty(corrupted, pfi, batch_size).train(model.training)


def neuron_count(model: nn.Module, fault: NeuronFault, sample: torch.Tensor) -> int:
    """Neurons a NeuronFault can hit: output elements per input of its layer types on ``sample``.

    Counted with forward hooks on one forward pass of ``sample`` (no grad), as pytorchfi's
    profiling pass sees them.
    """
    types = tuple(LAYER_TYPES[t] for t in fault.layer_types)
    total, handles = [0], []

    def hook(module, args, out):
        total[0] += out[0].numel() if isinstance(out, torch.Tensor) else 0

    for m in model.modules():
        if isinstance(m, types):
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
    return total[0]


def check_neuron_count(model: nn.Module, fault: NeuronFault, sample: torch.Tensor,
                       caller: str) -> None:
    """A NeuronFault's ``count`` must not exceed the neurons of its layers (as BitFlip's)."""
    n = neuron_count(model, fault, sample)
    check(fault.count <= n, "count", caller, f"at most the number of neurons of the "
          f"{', '.join(fault.layer_types)} layers ({n})", fault.count)


class NeuronFaulty(nn.Module):
    """The pytorchfi-corrupted copy, called in chunks of exactly ``batch_size`` (last one padded).

    pytorchfi counts hooked layers in ``current_layer`` across calls and never resets it, so the
    counter is reset before every chunk; padding rows are dropped from the output.
    """

    def __init__(self, corrupted: nn.Module, pfi, batch_size: int):
        super().__init__()
        self.corrupted = corrupted
        self.pfi = pfi
        self.batch_size = batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            xb = x[start:start + self.batch_size]  # b x ...
            n = xb.shape[0]
            if n < self.batch_size:
                xb = torch.cat([xb, xb.new_zeros((self.batch_size - n, *xb.shape[1:]))])
            self.pfi.reset_current_layer()
            out.append(self.corrupted(xb)[:n])
        return torch.cat(out)  # N x ...
