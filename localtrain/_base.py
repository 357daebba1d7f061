"""The local-learning task: one ``hwlab.train.Task`` that trains K gradient-isolated modules.

Local learning step (InfoPro, Wang et al. 2021; MAN, Su et al. 2024; AugLocal, Ma et al. 2024):
forward module k on the detached output of module k-1, compute its local loss with its auxiliary
network, call ``.backward()`` at once (freeing module k's saved activations), detach, go on. The last
module ends in the model's own classifier and uses the ordinary cross-entropy. ``hwlab.train.fit``
then takes one optimizer step for all modules and calls :meth:`LocalRule.after_step`. Only one
module's activations (plus its auxiliary net's) are alive at a time: that is the memory saving.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_choice, check_number, check_positive_int, is_int, is_number
from hwlab.train import Task
from localtrain._split import (
    Partition,
    SavedCounter,
    _balanced_cuts,
    _check_model,
    _from_stops,
    _partition,
    _probe_shapes,
    unit_saved_bytes,
)

__all__ = ["LocalRule", "fresh_copy", "interpolate_weight", "num_classes_of"]


def interpolate_weight(k: int, K: int, pair) -> float:
    """InfoPro's linear schedule of a loss weight across the K-1 local modules.

    ``pair = (w_first, w_last)`` is the weight of module 0 and of module K-2; module k gets
    ``w_first * (1 - r) + w_last * r`` with ``r = k / (K - 2)`` (``r = 0`` when K <= 2), as in the
    official code (``ixx_1``/``ixx_2``, ``ixy_1``/``ixy_2``).
    """
    r = k / (K - 2) if K > 2 else 0.0
    return float(pair[0]) * (1 - r) + float(pair[1]) * r


def fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every sub-layer re-initialised (same shapes, new weights)."""
    new = copy.deepcopy(module)
    for m in new.modules():
        for name in ("reset_parameters", "_reset_parameters"):
            fn = getattr(m, name, None)
            if callable(fn):
                fn()
                break
    return new


def num_classes_of(model: nn.Sequential) -> int:
    """Output width of the model's last linear layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    check(bool(linears), "model", "make_rule", "a classifier ending in nn.Linear", model)
    return linears[-1].out_features


def _check_pair(value, param: str, caller: str) -> tuple[float, float]:
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        is_number(v, 0) for v in value)
    check(ok, param, caller, "a pair (first, last) of finite numbers >= 0", value)
    return float(value[0]), float(value[1])


class LocalRule(Task):
    """Base class of the local rules; a subclass provides :meth:`build_aux` and :meth:`local_loss`.

    Everything the rule owns lives in ``self.net`` (an ``nn.ModuleDict``): the model and, per
    module k < K-1, ``self.net["aux"][k]`` (its auxiliary net, with MAN's EMA copy and learnable
    bias), so ``.to()``, ``.train()`` and ``state_dict()`` cover all of it. The rule is built on
    the CPU and moved to the model's device. :meth:`parameters` yields what the optimizer updates
    (model + auxiliary nets, frozen EMA copies excluded); :meth:`memory_parameters` yields every
    parameter held in memory.
    """

    name = "local"

    def __init__(self, model: nn.Module, K: int = 4, in_shape=(1, 28, 28),
                 balance: str = "memory", lr: float = 1e-3):
        caller = f"make_rule({self.name!r})"
        chain = _check_model(model, caller)  # the model itself when it is an nn.Sequential
        self.K = check_positive_int(K, "K", caller)
        ok = isinstance(in_shape, (tuple, list)) and len(in_shape) == 3 and all(
            is_int(s, 1) for s in in_shape)
        check(ok, "in_shape", caller, "a (C, H, W) tuple of positive integers", in_shape)
        check_choice(balance, ("layers", "memory"), "balance", caller)
        self.lr = check_number(lr, "lr", caller, 0, inclusive=(False, True))
        self.in_shape, self.balance = tuple(map(int, in_shape)), balance
        self.num_classes = num_classes_of(model)
        device = next(model.parameters()).device
        model.to("cpu")  # shapes, cuts and auxiliary nets are built on the CPU, then moved back
        self.chain = chain
        children = list(chain.children())
        self.children_ = children
        shapes = _probe_shapes(chain, torch.zeros(2, *self.in_shape), caller)
        # output shape of every child (None: not a tensor, e.g. a tuple; never a cut after it)
        self.child_shapes = [None if s is None else tuple(s) for s in shapes]
        self.net = nn.ModuleDict({"model": model})
        part = _partition(chain, self.K, "layers", None, shapes)
        if balance == "memory" and self.K > 1:
            part = self._memory_partition(part)
        self._set_partition(part)
        self.net["aux"] = nn.ModuleList([self.build_aux(k) for k in range(self.K - 1)])
        self.net.to(device)
        self._optimizer: torch.optim.Optimizer | None = None

    def _set_partition(self, part: Partition) -> None:
        self.partition = part
        self.modules_ = [nn.Sequential(*self.children_[a:b]) for a, b in part.bounds]
        self.out_shapes = [self.child_shapes[b - 1] for _, b in part.bounds]  # output of module k
        self.module_in_shapes = [self.in_shape if a == 0 else self.child_shapes[a - 1]
                                 for a, _ in part.bounds]

    def _memory_partition(self, part: Partition) -> Partition:
        """InfoPro*: cuts that balance each local module's saved activations, aux net included.

        On a seeded sample batch of 8: the bytes each body unit saves (``unit_saved_bytes``) and,
        for every module k and every unit i where it could end, the bytes module k's auxiliary
        network saves on unit i's output; then the exact min-max dynamic programme.
        """
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(8, *self.in_shape, generator=gen)
        y = torch.randint(0, self.num_classes, (8,), generator=gen)
        sizes, tail = unit_saved_bytes(self.chain, x)
        sizes[-1] += tail
        n, K = len(part.units), self.K
        feats = []  # (input, output) of every unit on x
        probe = copy.deepcopy(self.chain).train()
        kids = list(probe.children())
        with torch.no_grad():
            h = x
            for a, b in part.units:
                h_in = h
                for child in kids[a:b]:
                    h = child(h)
                feats.append((h_in, h))
        inf = float("inf")
        extra = [[inf] * n for _ in range(K - 1)]
        for k in range(K - 1):
            for i in range(k, n - (K - 1 - k)):
                ub = [(i, i + 1)] * K  # module k ends (and, for shapes, starts) at unit i
                ub[k + 1] = (i + 1, i + 2)  # module k+1 starts right after (MAN's next block)
                bounds = tuple((part.units[a][0], part.units[b - 1][1]) for a, b in ub)
                self._set_partition(Partition(part.units, part.tail, bounds, tuple(ub)))
                extra[k][i] = self._aux_saved_bytes(k, feats[i], x, y)
        return _from_stops(part.units, part.tail, _balanced_cuts(sizes, K, extra))

    def _aux_saved_bytes(self, k: int, feat, x, y) -> int:
        """Bytes module k's auxiliary net saves for backward on the unit output ``feat[1]``."""
        aux = self.build_aux(k)
        self.net["aux"] = nn.ModuleList([aux] * (k + 1))
        out = feat[1].clone().requires_grad_(True)
        exclude = {t.untyped_storage().data_ptr() for t in (*self.net.parameters(), out)}
        try:
            with SavedCounter(exclude) as counter:
                self.local_loss(k, out, feat[0], x, y)
        finally:
            del self.net["aux"]
        return counter.bytes

    # -- to be provided by subclasses ---------------------------------------------------------
    def build_aux(self, k: int) -> nn.Module:
        """Auxiliary network of module k (k < K-1)."""
        raise NotImplementedError

    def local_loss(self, k: int, out: torch.Tensor, inp: torch.Tensor, x: torch.Tensor,
                   y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Local loss of module k from its output ``out`` (input ``inp``, image ``x``, labels)."""
        raise NotImplementedError

    # -- Task protocol ------------------------------------------------------------------------
    @property
    def model(self) -> nn.Sequential:
        return self.net["model"]

    def unit_children(self, u: int) -> list[nn.Module]:
        """The children of body unit ``u``."""
        a, b = self.partition.units[u]
        return self.children_[a:b]

    def parameters(self):
        return [p for p in self.net.parameters() if p.requires_grad]

    def memory_parameters(self):
        return list(self.net.parameters())

    def train(self, mode: bool = True):
        self.net.train(mode)
        return self

    def to(self, device):
        self.net.to(device)
        return self

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Forward module by module; each local loss is backpropagated at once, outputs detached."""
        losses: dict[str, float] = {}
        h = x
        for k, module in enumerate(self.modules_):
            out = module(h)
            if k == self.K - 1:
                loss = F.cross_entropy(out, y)  # the last module: the ordinary task loss
                loss.backward()
                losses["loss"] = float(loss.detach())
            else:
                loss, parts = self.local_loss(k, out, h, x, y)
                if loss.requires_grad:  # all weights 0: the module is not trained by a local loss
                    loss.backward()  # frees module k's graph before module k+1 runs
                losses[f"local{k}"] = float(loss.detach())
                losses.update(parts)
                h = out.detach()
            del out, loss
        return losses

    def after_step(self) -> None:
        return None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- convenience ---------------------------------------------------------------------------
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """Adam over :meth:`parameters` at ``lr``, created on first use; :meth:`step` uses it.

        ``hwlab.train.fit`` builds its own optimizer from ``parameters()`` instead.
        """
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        return self._optimizer

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One full training step (zero_grad, :meth:`backward`, optimizer step, ``after_step``)."""
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        losses = self.backward(x, y)
        opt.step()
        self.after_step()
        return losses

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.K}, balance={self.balance!r})"
