"""PE faults applied by forward hooks: only the outputs that faulty PEs own are recomputed.

Per mapped layer call the hook takes the layer's input and clean output and, for the array
columns that hold a fault, recomputes the affected outputs from the layer's matrix product
exactly as the array would produce them (see :mod:`faultlab.systolic._array` for the map):

* weight-stationary, output register: the partial sum of column ``j`` passes the faulty rows
  ``r_1 < r_2 < ...`` of that column; per K tile it is ``op_n(...op_1(S_0) + S_1 ...) + S_n`` where
  ``S_s`` is the sum of the rows between two faulty rows (one matrix product with the segment
  weights), then the K tiles are added and the bias.
* weight-stationary, weight register: every weight that PE holds is read through the fault.
* output-stationary, output register: the accumulated value of every output the PE owns is read
  through the fault (once, when the PE emits it), then the bias is added.
* output-stationary, weight register: weights flow down the column, so rows ``>= r`` of that
  column see the faulty weight (and a second faulty row below applies its fault on top).

Outputs whose value the faults do not change keep the layer's own result bit for bit; outputs of
healthy columns are never touched. The model's parameters are never written, so after the block
the model is bit-identical. Faulty outputs carry no gradient.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faultlab._faults import KINDS
from hwlab.errors import check, check_int, fail

from ._array import mapped_layers
from ._faults import TARGETS, PEFault, PEFaultMap, _sample

__all__ = ["PEHooks", "PETable", "inject", "layer_inputs"]

_MAX_ELEMENTS = 1 << 24  # elements of one partial-sum block (64 MB of float32)


@dataclass(frozen=True)
class _Ops:
    """Faulty PEs of one register type: position and their combined bit masks (int32 words)."""

    row: np.ndarray
    col: np.ndarray
    xor: np.ndarray
    orr: np.ndarray
    clear: np.ndarray

    def __len__(self):
        return int(self.row.shape[0])


def _ops(fmap: PEFaultMap, target: str) -> _Ops:
    sel = np.flatnonzero(fmap.target == TARGETS.index(target))
    pe = fmap.row[sel] * fmap.array.cols + fmap.col[sel]
    order = np.argsort(pe, kind="stable")
    sel, pe = sel[order], pe[order]
    uniq, start = np.unique(pe, return_index=True)
    one = np.left_shift(np.uint32(1), fmap.bit[sel].astype(np.uint32))
    masks = []
    for kind in ("flip", "stuck1", "stuck0"):
        part = np.where(fmap.kind[sel] == KINDS.index(kind), one, np.uint32(0))
        masks.append(np.bitwise_or.reduceat(part, start).view(np.int32) if len(sel) else
                     np.zeros(0, dtype=np.int32))
    return _Ops(uniq // fmap.array.cols, uniq % fmap.array.cols, *masks)


@dataclass(frozen=True)
class PETable:
    """A map prepared for the hooks: the array and the output / weight register faults."""

    rows: int
    cols: int
    dataflow: str
    out: _Ops
    weight: _Ops

    @classmethod
    def from_map(cls, fmap: PEFaultMap) -> PETable:
        a = fmap.array
        return cls(a.rows, a.cols, a.dataflow, _ops(fmap, "output"), _ops(fmap, "weight"))


def _apply(v: torch.Tensor, x, o, c) -> torch.Tensor:
    """((v ^ xor) | or) & ~clear on the int32 view of float32 ``v`` (masks broadcast)."""
    return ((v ^ x) | o) & ~c


def _t(a, device) -> torch.Tensor:
    return torch.as_tensor(np.require(a, requirements=["C", "W"]), device=device)


def _expand(r, c, K, M, R, C):
    """Elements (entry, k, m) of the K x M weight tile grid that PEs (r, c) hold (WS)."""
    nk = np.where(r < K, (K - r + R - 1) // R, 0)
    nm = np.where(c < M, (M - c + C - 1) // C, 0)
    cnt = nk * nm
    e = np.repeat(np.arange(len(r)), cnt)
    t = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return e, r[e] + R * (t // nm[e]), c[e] + C * (t % nm[e])


def _columns(ops: _Ops, keep: np.ndarray, cols: np.ndarray):
    """Per affected column (``cols``, sorted): faulty rows sorted, masks; padded to a rectangle.

    Returns (rows nA x S, xor, or, clear) with padding row = huge and identity masks.
    """
    r, c = ops.row[keep], ops.col[keep]
    x, o, cl = ops.xor[keep], ops.orr[keep], ops.clear[keep]
    order = np.lexsort((r, c))
    r, c, x, o, cl = r[order], c[order], x[order], o[order], cl[order]
    a = np.searchsorted(cols, c)
    n = np.bincount(a, minlength=len(cols))
    s = max(int(n.max()) if len(n) else 0, 0)
    rank = np.arange(len(r)) - np.repeat(np.cumsum(n) - n, n)
    big = np.iinfo(np.int64).max
    rows = np.full((len(cols), s), big, dtype=np.int64)
    xs, os_, cs = (np.zeros((len(cols), s), dtype=np.int32) for _ in range(3))
    rows[a, rank], xs[a, rank], os_[a, rank], cs[a, rank] = r, x, o, cl
    return rows, xs, os_, cs


def _ws(xr, w, tab: PETable):
    """Weight-stationary: (m_aff, new values NL x nq, changed NL x nq) or None."""
    R, C = tab.rows, tab.cols
    K, M = w.shape
    dev = w.device
    w_eff, wchanged = w, np.zeros(M, dtype=bool)
    if len(tab.weight):
        e, k, m = _expand(tab.weight.row, tab.weight.col, K, M, R, C)
        if len(e):
            w_eff = w.clone()
            iv = w_eff.view(torch.int32)
            kt, mt = _t(k, dev), _t(m, dev)
            old = iv[kt, mt]
            new = _apply(old, *(_t(getattr(tab.weight, a)[e], dev) for a in ("xor", "orr",
                                                                                "clear")))
            iv[kt, mt] = new
            wchanged[np.unique(m[(new != old).cpu().numpy()])] = True
    keep = np.flatnonzero(tab.out.col < M)
    cols = np.union1d(tab.out.col[keep], np.unique(np.flatnonzero(wchanged) % C))
    if len(cols) == 0:
        return None
    rows, xs, os_, cs = _columns(tab.out, keep, cols)
    smax = rows.shape[1] + 1
    m_aff = np.flatnonzero(np.isin(np.arange(M) % C, cols))
    a_q = np.searchsorted(cols, m_aff % C)  # affected column of each affected output channel
    nq, kt_n = len(m_aff), -(-K // R)
    i = np.arange(R)
    seg = (rows[:, None, :] < i[None, :, None]).sum(-1)  # nA x R: segment of each array row
    k = np.arange(K)
    e = ((np.arange(nq)[None, :] * kt_n + (k // R)[:, None]) * smax
         + seg[a_q[None, :], (k % R)[:, None]])  # K x nq: column of B for each weight
    b = torch.zeros(K, nq * kt_n * smax, dtype=w.dtype, device=dev)
    b[_t(np.broadcast_to(k[:, None], e.shape), dev), _t(e, dev)] = w_eff[:, _t(m_aff, dev)]
    masks = [_t(t[a_q], dev) for t in (xs, os_, cs)]  # nq x (smax - 1)
    wch = _t(wchanged[m_aff], dev)
    totals, changed = [], []
    step = max(1, _MAX_ELEMENTS // max(1, b.shape[1]))
    for lo in range(0, xr.shape[0], step):
        s = (xr[lo:lo + step] @ b).view(-1, nq, kt_n, smax)  # n x nq x KT x S segment sums
        v = s[..., 0]
        ch = wch.expand(s.shape[0], nq).clone()
        for j in range(1, smax):  # the PE after segment j-1 emits through its fault
            iv = v.contiguous().view(torch.int32)
            nv = _apply(iv, *(mk[:, j - 1, None] for mk in masks))
            ch |= (nv != iv).any(dim=-1)
            v = nv.view(torch.float32) + s[..., j]
        totals.append(v.sum(dim=-1))  # accumulators add the K tiles
        changed.append(ch)
    return m_aff, torch.cat(totals), torch.cat(changed)


def _os(xr, w, tab: PETable, positions: int):
    """Output-stationary: (m_aff, new values NL x nq, changed NL x nq) or None."""
    R, C = tab.rows, tab.cols
    K, M = w.shape
    dev = w.device
    kw = np.flatnonzero((tab.weight.col < M) & (tab.weight.row < min(R, positions)))
    ko = np.flatnonzero((tab.out.col < M) & (tab.out.row < min(R, positions)))
    cols = np.union1d(tab.weight.col[kw], tab.out.col[ko])
    if len(cols) == 0:
        return None
    m_aff = np.flatnonzero(np.isin(np.arange(M) % C, cols))
    a_q = np.searchsorted(cols, m_aff % C)
    nq = len(m_aff)
    wrows, wx, wo, wc = _columns(tab.weight, kw, cols)
    vmax = wrows.shape[1] + 1
    ver = (wrows[:, None, :] <= np.arange(R)[None, :, None]).sum(-1)  # nA x R weight version
    wv = [w[:, _t(m_aff, dev)]]  # versions of the weights of each affected channel: K x nq
    for j in range(1, vmax):
        iv = wv[-1].contiguous().view(torch.int32)
        wv.append(_apply(iv, *(_t(t[a_q, j - 1], dev) for t in (wx, wo, wc))).view(torch.float32))
    wvs = torch.stack(wv, dim=-1)  # K x nq x V
    wdiff = (wvs.view(torch.int32) != wvs[..., :1].view(torch.int32)).any(dim=0)  # nq x V
    otab = [np.zeros((len(cols), R), dtype=np.int32) for _ in range(3)]
    a_o = np.searchsorted(cols, tab.out.col[ko])
    for t, name in zip(otab, ("xor", "orr", "clear")):
        t[a_o, tab.out.row[ko]] = getattr(tab.out, name)[ko]
    b = wvs.reshape(K, nq * vmax)
    totals, changed = [], []
    step = max(1, _MAX_ELEMENTS // max(1, b.shape[1]))
    for lo in range(0, xr.shape[0], step):
        p = (np.arange(lo, min(lo + step, xr.shape[0])) % positions) % R  # array row of each row
        acc = (xr[lo:lo + step] @ b).view(-1, nq, vmax)
        vq = _t(ver[a_q[None, :], p[:, None]], dev)  # n x nq version used
        acc = acc.gather(-1, vq[..., None])[..., 0].contiguous()  # n x nq
        iv = acc.view(torch.int32)
        nv = _apply(iv, *(_t(t[a_q[None, :], p[:, None]], dev) for t in otab))
        ch = (nv != iv) | wdiff[torch.arange(nq, device=dev)[None, :], vq]
        totals.append(nv.view(torch.float32))
        changed.append(ch)
    return m_aff, torch.cat(totals), torch.cat(changed)


def layer_inputs(module: nn.Module, x: torch.Tensor):
    """The layer's product operands: (rows N*L x K per group as a list, L, N)."""
    if isinstance(module, nn.Conv2d):
        x = x if x.dim() == 4 else x[None]  # an unbatched C x H x W input is one sample
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        xp = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        cols = F.unfold(xp, module.kernel_size, module.dilation, 0, module.stride)  # N x GK x L
        n, gk, L = cols.shape
        kg = gk // module.groups
        parts = [cols[:, g * kg:(g + 1) * kg].transpose(1, 2).reshape(n * L, kg)
                 for g in range(module.groups)]
        return parts, L, n
    n = x.shape[0] if x.dim() > 1 else 1
    L = x.numel() // (n * module.in_features)
    return [x.reshape(n * L, module.in_features)], L, n


def _touches(tab: PETable, module: nn.Module, y: torch.Tensor) -> bool:
    """Whether any fault can reach this layer call (checked before any im2col work)."""
    w = module.weight
    groups = getattr(module, "groups", 1)
    m, k = w.shape[0] // groups, w[0].numel()
    if isinstance(module, nn.Conv2d):
        positions = y.shape[-1] * y.shape[-2]
    else:
        positions = y[..., 0].numel() // (y.shape[0] if y.dim() > 1 else 1)
    if tab.dataflow == "weight-stationary":
        return bool((tab.out.col < m).any() or ((tab.weight.col < m) & (tab.weight.row < k)).any())
    rows = min(tab.rows, positions)
    return bool(((tab.out.col < m) & (tab.out.row < rows)).any()
                or ((tab.weight.col < m) & (tab.weight.row < rows)).any())


def _faulty(module: nn.Module, x: torch.Tensor, y: torch.Tensor, tab: PETable) -> torch.Tensor:
    if not _touches(tab, module, y):
        return y
    with torch.no_grad():
        parts, L, n = layer_inputs(module, x)
        groups = len(parts)
        w = module.weight
        mg = w.shape[0] // groups
        out = None
        for g, xr in enumerate(parts):
            wg = w[g * mg:(g + 1) * mg].reshape(mg, -1).t().contiguous()  # K x M
            res = _ws(xr, wg, tab) if tab.dataflow == "weight-stationary" else \
                _os(xr, wg, tab, L)
            if res is None:
                continue
            m_aff, total, changed = res
            if out is None:
                out = y.detach().contiguous().clone()
                yv = out.view(n, -1, L) if isinstance(module, nn.Conv2d) else \
                    out.view(n, L, -1).transpose(1, 2)  # N x M x L either way
            glob = torch.as_tensor(g * mg + m_aff, device=y.device)
            if module.bias is not None:
                total = total + module.bias.detach()[glob]
            old = yv[:, glob, :]  # N x nq x L
            new = total.view(n, L, -1).transpose(1, 2)
            yv[:, glob, :] = torch.where(changed.view(n, L, -1).transpose(1, 2), new, old)
    return y if out is None else out


class _PEHook:
    """Forward hook of one mapped layer (picklable)."""

    def __init__(self, table: PETable):
        self.table = table

    def __call__(self, module, args, output):
        return _faulty(module, args[0], output, self.table)


def _as_map(fault_or_map, seed, caller) -> PEFaultMap:
    if isinstance(fault_or_map, PEFaultMap):
        return fault_or_map
    if isinstance(fault_or_map, PEFault):
        return _sample(fault_or_map, check_int(seed, "seed", caller, 0))
    raise fail("fault_or_map", caller, "a PEFault or PEFaultMap", fault_or_map)


@contextmanager
def inject(model: nn.Module, fault_or_map, seed: int = 0):
    """Run ``model`` on a faulty systolic array for the ``with`` block; yields the PEFaultMap.

    ``fault_or_map``: a :class:`PEFault` (its map is drawn from ``seed``) or a
    :class:`PEFaultMap` to replay; the array is the fault's / map's. A forward hook on every
    ``nn.Conv2d`` / ``nn.Linear`` (any nesting) rewrites only the outputs that the faulty PEs
    own; nothing else is touched, and the hooks are removed on exit (also after an exception),
    so the model is bit-identical afterwards. Cost per layer: one product of the layer's input
    with the weights of the affected columns (and, per extra faulty PE in a column, one more
    segment), so it grows with the faults, not with the model.
    """
    caller = "faultlab.systolic.inject"
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
          type(model).__name__)
    fmap = _as_map(fault_or_map, seed, caller)
    layers = mapped_layers(model, caller)
    hook = _PEHook(PETable.from_map(fmap))
    handles = []
    try:
        for _, mod in layers:
            handles.append(mod.register_forward_hook(hook))
        yield fmap
    finally:
        for h in handles:
            h.remove()


class PEHooks:
    """The hooks of one campaign trial: installed on creation, ``remove()`` at the end.

    ``lifter(inner)`` gives the campaign a context manager factory that takes the PE faults (and
    ``inner``'s faults, if given) away for a moment, to compute fault-free logits.
    """

    def __init__(self, model: nn.Module, fault_or_map, seed: int = 0):
        self.fmap = _as_map(fault_or_map, seed, "campaign")
        self._layers = [m for _, m in mapped_layers(model, "campaign")]
        self._hook = _PEHook(PETable.from_map(self.fmap))
        self._handles = []
        self._install()

    def _install(self):
        self._handles = [m.register_forward_hook(self._hook) for m in self._layers]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def lifter(self, inner=None):
        @contextmanager
        def lift():
            self.remove()
            try:
                if inner is None:
                    yield
                else:
                    with inner():
                        yield
            finally:
                self._install()

        return lift
