"""A systolic array and how every Conv2d / Linear layer is mapped onto it, tile by tile.

Every mapped layer is one matrix product per group (Conv2d as its im2col product)::

    Y[p, m] = sum_k X[p, k] * W[k, m]          (+ bias[m], added after the array)

* ``k`` in ``[0, K)``: the reduction index. Linear: the input feature. Conv2d with ``groups`` g:
  ``k = (c * kh + u) * kw + v`` for input channel ``c`` of the group (``C_in / g`` of them) and
  kernel offset ``(u, v)``, the order of ``F.unfold`` and of ``weight.reshape(M, -1)``.
* ``m`` in ``[0, M)``: the output channel / feature *within its group* (``M = C_out / g``).
* ``p`` in ``[0, L)``: the output position *within one sample*: ``p = ho * W_out + wo`` for a
  Conv2d, the token index for a Linear applied to ``N x L x K`` (``L = 1`` for ``N x K``). Samples
  are processed one after another, so the mapping never depends on the batch size.

An ``R x C`` array (``rows x cols``) computes the product in tiles. PE ``(i, j)`` is row ``i``,
column ``j``.

**weight-stationary** (TPU-like; Zhang et al. VTS'18): ``W`` is cut into ``R x C`` tiles; in tile
``(kt, mt)`` PE ``(i, j)`` holds ``W[kt*R + i, mt*C + j]`` in its weight register. The rows ``X[p, :]``
stream in from the left (array row ``i`` gets ``X[p, kt*R + i]``), partial sums flow *down* each
column and leave at the bottom into accumulators that add the ``K/R`` tiles::

             X[p, kt*R+0] -> [PE 0,0]-[PE 0,1]-...-[PE 0,C-1]     psum_0 = X[p,kt*R]*W[kt*R, m]
             X[p, kt*R+1] -> [PE 1,0]-[PE 1,1]-...-[PE 1,C-1]     psum_i = psum_{i-1}
                  ...            |        |             |                  + X[p,kt*R+i]*W[kt*R+i, m]
             X[p, kt*R+R-1]->[PE R-1,0] ...      [PE R-1,C-1]
                                 v        v             v
                   Y[p, mt*C+0] += psum  ...      Y[p, mt*C+C-1] += psum   (accumulators)

So PE ``(i, j)`` holds the weights ``W[k, m]`` with ``k % R == i`` and ``m % C == j``, and its output
(partial-sum) register carries a term of *every* output ``Y[p, m]`` with ``m % C == j``: all
positions of every sample, one output channel per column tile. The partial sum passes through
every PE of the column, also rows beyond ``K`` in a partial tile (they add 0).

**output-stationary**: ``Y`` (``L x M`` per sample) is cut into ``R x C`` tiles; in tile
``(pt, mt)`` PE ``(i, j)`` accumulates ``Y[pt*R + i, mt*C + j]`` over all ``k``. ``X[p, k]`` streams
along array row ``p % R`` and ``W[k, m]`` flows *down* array column ``m % C`` through the weight
register of every PE of that column (row 0 first)::

                 W[k, mt*C+0]  W[k, mt*C+1]  ...  W[k, mt*C+C-1]
                      v             v                   v
     X[pt*R+0, k] -> [acc Y[pt*R+0, mt*C+0]]-[acc ...]-...
     X[pt*R+1, k] -> [acc Y[pt*R+1, mt*C+0]]-...
          ...

So PE ``(i, j)`` owns the outputs ``Y[p, m]`` with ``p % R == i`` and ``m % C == j``; no weight
lives in it, but every weight of columns ``m % C == j`` passes through its weight register on its
way to the rows below.

Only ``nn.Conv2d`` and ``nn.Linear`` modules (any nesting, any call pattern) are mapped; pooling,
normalisation, activations and additions run on other units and stay fault-free. The
``out_proj`` of an ``nn.MultiheadAttention`` is skipped (it is never called as a module), and
int8 layers of ``faultlab.quantize_int8`` are refused (the PE model has float32 registers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from faultlab._quant import Int8Conv2d, Int8Linear
from hwlab.errors import check, check_choice, check_int, fail

__all__ = ["DATAFLOWS", "Gemm", "SystolicArray", "mapped_layers"]

DATAFLOWS = ("weight-stationary", "output-stationary")


@dataclass(frozen=True)
class Gemm:
    """The matrix product of one layer call: ``groups`` products of ``L x K`` by ``K x M``."""

    groups: int
    k: int  # reduction length per group
    m: int  # output channels / features per group
    positions: int  # L: output positions per sample


def mapped_layers(model: nn.Module, caller: str = "mapped_layers") -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv2d / Linear that runs on the array, in module order."""
    skip = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, (Int8Conv2d, Int8Linear)):
            raise fail("model", caller, "a model with float32 Conv2d / Linear layers (the PE "
                       "registers are float32 words)", f"int8 layer {name!r}")
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and id(mod) not in skip:
            check(mod.weight.dtype == torch.float32, "model", caller,
                  "a model with float32 Conv2d / Linear weights (the PE registers are float32 "
                  "words)", f"{str(mod.weight.dtype).replace('torch.', '')} layer {name!r}")
            out.append((name, mod))
    check(len(out) > 0, "model", caller, "a model with nn.Conv2d or nn.Linear layers",
          type(model).__name__)
    return out


@dataclass(frozen=True)
class SystolicArray:
    """An ``rows x cols`` array of PEs with a ``dataflow`` (see the module docstring for the map).

    Zhang et al. (VTS'18) study a 256 x 256 weight-stationary array (the TPU's); that is the
    default of :class:`faultlab.systolic.PEFault`.
    """

    rows: int = 256  # the TPU's 256 x 256 MAC array, as in Zhang et al. VTS'18
    cols: int = 256
    dataflow: str = "weight-stationary"  # TPU dataflow; "output-stationary" the other common one

    def __post_init__(self):
        for name in ("rows", "cols"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, "SystolicArray", 1))
        check_choice(self.dataflow, DATAFLOWS, "dataflow", "SystolicArray")

    @property
    def size(self) -> int:
        return self.rows * self.cols

    def to_dict(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "dataflow": self.dataflow}

    @property
    def label(self) -> str:
        return f"{self.rows}x{self.cols}-{'ws' if self.dataflow[0] == 'w' else 'os'}"

    # -- the mapping, as arrays (used by FAP and by the tests' independent check) --------------
    def gemm(self, module: nn.Module, out_shape) -> Gemm:
        """The product of ``module`` for one sample's output shape (C_out x H x W or ... x M)."""
        if isinstance(module, nn.Conv2d):
            g = module.groups
            kh, kw = module.kernel_size
            return Gemm(g, module.in_channels // g * kh * kw, module.out_channels // g,
                        int(math.prod(out_shape[1:])))
        check(isinstance(module, nn.Linear), "module", "SystolicArray.gemm",
              "an nn.Conv2d or nn.Linear", type(module).__name__)
        return Gemm(1, module.in_features, module.out_features, int(math.prod(out_shape[:-1])))

    def weight_pe(self, module: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the PE that holds each element of ``module.weight`` (weight's shape).

        Output-stationary: ``row`` is -1 (the weight passes every row of column ``col``).
        """
        w = module.weight
        m_local = np.arange(w.shape[0]) % (w.shape[0] // getattr(module, "groups", 1))
        k = np.arange(int(np.prod(w.shape[1:])))
        col = np.broadcast_to((m_local % self.cols)[:, None], (w.shape[0], k.size))
        if self.dataflow == "weight-stationary":
            row = np.broadcast_to((k % self.rows)[None, :], col.shape)
        else:
            row = np.full(col.shape, -1)
        return row.reshape(w.shape).copy(), col.reshape(w.shape).copy()

    def output_pe(self, module: nn.Module, out_shape) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the PE whose output register produces each element of one sample's
        output (``out_shape`` without the batch). Weight-stationary: ``row`` is -1 (the partial
        sum passes every row of column ``col``)."""
        gm = self.gemm(module, out_shape)
        if isinstance(module, nn.Conv2d):  # C_out x L (channel-major)
            m = np.arange(gm.groups * gm.m)[:, None] % gm.m
            p = np.arange(gm.positions)[None, :]
        else:  # L x M
            m = np.arange(gm.m)[None, :]
            p = np.arange(gm.positions)[:, None]
        col = np.broadcast_to(m % self.cols, np.broadcast_shapes(m.shape, p.shape))
        row = (np.broadcast_to(p % self.rows, col.shape) if self.dataflow == "output-stationary"
               else np.full(col.shape, -1))
        return row.reshape(out_shape).copy(), col.reshape(out_shape).copy()

    def tiles(self, module: nn.Module, out_shape) -> dict:
        """Tile counts of one sample: {"k_tiles", "m_tiles", "p_tiles", "groups"}."""
        gm = self.gemm(module, out_shape)
        return {"groups": gm.groups, "k_tiles": -(-gm.k // self.rows),
                "m_tiles": -(-gm.m // self.cols), "p_tiles": -(-gm.positions // self.rows)}
