"""Fault-aware pruning (FAP) and FAP with retraining (FAP+T), Zhang et al. VTS'18.

FAP bypasses every faulty PE (a multiplexer routes the partial sum around it), so it contributes
nothing and its fault no longer acts:

* weight-stationary (the paper's TPU case): the weights the faulty PEs hold are zero. The result
  is a NEW model with those weights set to 0 (parameter names unchanged), evaluated on the
  array without faults.
* output-stationary (not in the paper; our extension): no weight lives in a PE; a bypassed PE
  emits nothing, so the outputs it owns read 0 before the bias. The NEW model carries a forward
  hook on each Conv2d / Linear that does this (weights untouched).

FAP+T retrains the FAP model with ``hwlab.train.fit`` (the one training loop); a callback sets the
pruned weights back to 0 after every optimizer step, so they stay at zero (weight-stationary);
output-stationary retrains with the bypass hooks in place.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from hwlab.errors import check
from hwlab.train import TrainConfig, fit

from ._array import SystolicArray, mapped_layers
from ._inject import _as_map

__all__ = ["FAP_T_CONFIG", "fap", "fap_masks", "fap_t"]

# A short retraining: Zhang et al. retrain "for a few epochs"; from trained weights a smaller step
# than Adam's 1e-3 keeps what the network already knows.
FAP_T_CONFIG = TrainConfig(epochs=2, batch_size=64, lr=3e-4)


def _bad(fmap) -> np.ndarray:
    a = fmap.array
    bad = np.zeros((a.rows, a.cols), dtype=bool)
    bad[fmap.row, fmap.col] = True
    return bad


def fap_masks(model: nn.Module, fault_or_map, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weight-stationary: ``{weight parameter name: bool mask}``, True where the weight is held
    by a faulty PE (``weight[k, m]`` with ``bad[k % rows, m % cols]``). Empty for
    output-stationary arrays (no weight lives in a PE)."""
    fmap = _as_map(fault_or_map, seed, "fap_masks")
    if fmap.array.dataflow != "weight-stationary":
        return {}
    bad = _bad(fmap)
    out = {}
    for name, mod in mapped_layers(model, "fap_masks"):
        row, col = fmap.array.weight_pe(mod)
        out[f"{name}.weight" if name else "weight"] = torch.from_numpy(bad[row, col]).to(
            mod.weight.device)
    return out


class _Bypass:
    """Output-stationary FAP: outputs owned by bypassed PEs read 0 (+ bias). Picklable."""

    def __init__(self, array: SystolicArray, bad: np.ndarray):
        self.array, self.bad = array, bad

    def __call__(self, module, args, y):
        conv = isinstance(module, nn.Conv2d)
        single = tuple(y.shape[-3:]) if conv else tuple(y.shape[1:] if y.dim() > 1 else y.shape)
        row, col = self.array.output_pe(module, single)
        mask = torch.from_numpy(self.bad[row, col]).to(y.device)  # one sample's output shape
        fill = torch.zeros((), dtype=y.dtype, device=y.device)
        if module.bias is not None:
            fill = module.bias.reshape((-1, 1, 1) if conv else (-1,)).expand(single)
        return torch.where(mask, fill, y)


def fap(model: nn.Module, fault_or_map, seed: int = 0) -> nn.Module:
    """A NEW model with the faulty PEs of ``fault_or_map`` bypassed; ``model`` is untouched.

    Weight-stationary: the weights held by faulty PEs are 0. Output-stationary: the outputs of
    faulty PEs read 0 before the bias (forward hooks on the copy). Evaluate the result plainly
    (no injection): bypassed PEs no longer compute, so their faults do not act.
    """
    c = "fap"
    check(isinstance(model, nn.Module), "model", c, "a torch.nn.Module", type(model).__name__)
    fmap = _as_map(fault_or_map, seed, c)
    mapped_layers(model, c)  # refuse int8 / non-float32 models before copying
    new = copy.deepcopy(model)
    if fmap.array.dataflow == "weight-stationary":
        params = dict(new.named_parameters())
        with torch.no_grad():
            for name, mask in fap_masks(new, fmap).items():
                params[name].masked_fill_(mask, 0.0)
    else:
        hook = _Bypass(fmap.array, _bad(fmap))
        for _, mod in mapped_layers(new, c):
            mod.register_forward_hook(hook)
    return new


class _HoldZero:
    """``fit`` callback: after every optimizer step, the pruned weights are 0 again."""

    def __init__(self, params: list[tuple[torch.Tensor, torch.Tensor]]):
        self.params = params

    def on_step(self, state) -> None:
        with torch.no_grad():
            for p, mask in self.params:
                p.masked_fill_(mask.to(p.device), 0.0)


def fap_t(model: nn.Module, fault_or_map, train, seed: int = 0,
          config: TrainConfig = FAP_T_CONFIG, val=None) -> nn.Module:
    """FAP, then retraining on ``train`` (a ``hwlab.data.Split``) with ``hwlab.train.fit``.

    The weights mapped to faulty PEs are held at zero by a callback after every step; the
    returned NEW model is in eval mode on the CPU; ``model`` is untouched.
    """
    new = fap(model, fault_or_map, seed)
    fmap = _as_map(fault_or_map, seed, "fap_t")
    params = dict(new.named_parameters())
    held = [(params[n], m) for n, m in fap_masks(new, fmap).items()]
    fit(new, train, config, val=val, callbacks=[_HoldZero(held)])
    return new.cpu().eval()
