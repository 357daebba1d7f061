"""Fault-aware training on the one loop: RandBET (Stutz et al., MLSys 2021, Algorithm 1).

:class:`FaultAwareTask` is a :class:`hwlab.train.Task`; ``hwlab.train.fit`` calls its
``backward`` and then ``optimizer.step()``. Inside ``backward`` the task draws a fresh fault map,
applies it with faultlab's injector, runs the faulty forward / backward and restores every touched
word exactly, so the step that follows updates the *clean* weights with gradients computed at the
faulty ones. Per step (Algorithm 1):

1. (``w_max``) clip the Conv / Linear weights to ``[-w_max, w_max]``;
2. (``dtype="int8"``) quantise them, ``v = Q(w)`` (:func:`faultlab.quantize_int8`'s scheme), into
   int8 words held by the task under the float weights' names;
3. clean forward / backward on ``Q^-1(v)`` (``clean_loss=True``, the paper's averaged objective
   ``L(f(x; w~)) + L(f(x; w))``, eq. 2; gradients are summed as in Algorithm 1, line 15);
4. perturbed forward / backward on ``Q^-1(BErr_p(v))`` with a fresh map (seed derived from
   ``(seed, step)``) once a clean loss below ``start_loss`` has been seen (paper: 1.75, since
   errors from the start can prevent convergence).

int8 uses fake quantisation with a straight-through estimator: the layers compute with
``w + (Q^-1(v~) - w).detach()`` (``torch.func.functional_call``), so ``dL/dw`` is the gradient at
the faulty dequantised weights. Both passes run in train mode (batch statistics); with
``norm_stats="both"`` (int8 default: Algorithm 1 run as written in train mode) both update
BatchNorm's running averages, with ``"clean"`` (float32 default) only the clean pass does
(measured: vgg-s in float32 fell to 10 % clean with "both", its running variances absorbing
exploding faulty activations; in int8 "both" was the more robust, vgg-s at 5 % BER 58.7 % vs
47.2 % for RandBET[0.1]). The float32 path injects into the model's own weights; exponent
flips make faulty losses of 1e10 and more whose gradients wreck the optimiser's moments (measured:
lenet5 fell to 67.6 % clean), so a faulty pass whose loss is above ``max_faulty_loss`` (float32
default 10; int8 default: no bound) or whose gradient is not finite is dropped and counted in
the ``skipped`` loss key (an extension: the paper trains fixed-point weights only). Any fault model works: ``BitFlip`` / ``StuckAt`` (and every
model ``faultlab.sample_faults`` accepts) or a callable ``(target, seed) -> FaultMap`` (the hook
for memory-layout models). Differences from the paper: biases and normalisation parameters stay
float and unfaulted; the start criterion uses the previous step's clean batch loss; the symmetric
per-tensor scheme is this class's default (``scheme="asymmetric"`` is the paper's robust one) so
that the model deploys with ``faultlab.quantize_int8``'s default.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from faultlab._clipping import _check_w_max, _clip, clipped_parameters
from faultlab._faults import FAULT_MODELS, FaultMap
from faultlab._inject import apply_fault_map, restore
from faultlab._quant import (
    GRANULARITIES,
    ROUNDINGS,
    SCHEMES,
    _dequantize,
    _quantize,
    quantizable,
    quantize_int8,
)
from faultlab._sample import _sample_faults
from hwlab.errors import check, check_bool, check_choice, check_int, check_number, fail
from hwlab.studies import derive_seed
from hwlab.train import LOSSES, Task

__all__ = ["DTYPES", "NORM_STATS", "START_LOSS", "FaultAwareTask", "int8_weight_names"]

DTYPES = ("int8", "float32")
NORM_STATS = ("both", "clean")  # which passes update BatchNorm's running averages
START_LOSS = 1.75  # Stutz et al. 2021, section 4.3: inject once the clean CE loss is below this
FLOAT_MAX_FAULTY_LOSS = 10.0  # float32: CE above 10 (10 classes: chance is 2.3) is an exponent
# flip blowing up the logits; its gradient (up to 1e19) would wreck Adam's moment estimates


def int8_weight_names(model: nn.Module) -> list[str]:
    """Names of the weights ``quantize_int8`` stores as int8 (Linear / Conv2d, not in attention)."""
    skip = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    return [f"{n}.weight" if n else "weight" for n, m in model.named_modules()
            if quantizable(m) and not any(n.startswith(f"{s}.") or not s for s in skip)]


def _store_tree(model: nn.Module, names: list[str]) -> nn.Module:
    """An empty module tree with one frozen int8 Parameter per name (same dotted names)."""
    params = dict(model.named_parameters())
    root = nn.Module()
    for name in names:
        *path, leaf = name.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, nn.Module())
            node = node._modules[part]
        words = torch.zeros(params[name].shape, dtype=torch.int8, device=params[name].device)
        node.register_parameter(leaf, nn.Parameter(words, requires_grad=False))
    return root


def _is_fault_model(fm) -> bool:
    return isinstance(fm, FAULT_MODELS) or type(fm).__module__.startswith("faultlab.memory")


class FaultAwareTask(Task):
    """Train ``model`` (in place) on freshly drawn weight faults each step: RandBET.

    ``fault_model``: e.g. ``BitFlip(rate=0.01)`` (the paper trains at the target bit error rate),
    ``StuckAt``, any model ``faultlab.sample_faults`` accepts, or a callable
    ``(target_module, seed) -> FaultMap``. ``dtype``: ``"int8"`` (fake-quantised training, the
    paper's setting) or ``"float32"``. ``scheme`` / ``granularity`` / ``rounding``: the int8
    quantisation (as in :func:`faultlab.quantize_int8`; deploy with :meth:`deployed`).
    ``clean_loss``: also back-propagate the clean loss (paper: yes). ``start_loss``: no faults
    until a clean batch loss is below it (``0`` or ``math.inf`` to start at once). ``w_max``:
    weight clipping (RandBET[w_max]); ``None`` = off. ``seed``: fault maps of step ``s`` use
    ``derive_seed(seed, "randbet|s")``. ``layers`` / ``include_bias``: which parameters may be
    faulty (float32 path, as in ``sample_faults``; int8: the quantised weights).
    ``max_faulty_loss``: drop a faulty pass above this loss (None: 10 for float32, none for int8).
    ``norm_stats``: ``"both"`` or ``"clean"`` passes update BatchNorm's running averages (None:
    both for int8, clean for float32).
    """

    def __init__(self, model: nn.Module, fault_model, *, dtype: str = "int8",
                 scheme: str = "symmetric", granularity: str = "tensor",
                 rounding: str = "nearest", clean_loss: bool = True,
                 start_loss: float = START_LOSS, w_max: float | None = None, seed: int = 0,
                 layers=None, include_bias: bool = False, loss="ce",
                 max_faulty_loss: float | None = None, norm_stats: str | None = None):
        c = "FaultAwareTask"
        check(isinstance(model, nn.Module), "model", c, "an nn.Module", type(model).__name__)
        check(_is_fault_model(fault_model) or callable(fault_model), "fault_model", c,
              "a BitFlip / StuckAt (or other faultlab fault model) or a callable "
              "(module, seed) -> FaultMap", fault_model)
        check_choice(dtype, DTYPES, "dtype", c)
        check_choice(scheme, SCHEMES, "scheme", c)
        check_choice(granularity, GRANULARITIES, "granularity", c)
        check_choice(rounding, ROUNDINGS, "rounding", c)
        check_number(start_loss, "start_loss", c, 0, finite=False,
                     constraint="a number >= 0 (math.inf: faults from the first step)")
        seed = check_int(seed, "seed", c, 0)
        check(callable(loss) or loss in LOSSES, "loss", c,
              f"a callable or one of {', '.join(LOSSES)}", loss)
        clean_loss = check_bool(clean_loss, "clean_loss", c, "a bool")
        self.model = model
        self.fault_model = fault_model
        self.dtype, self.quant = dtype, (scheme, granularity, rounding)
        self.clean_loss, self.start_loss = clean_loss, float(start_loss)
        self.w_max = None if w_max is None else _check_w_max(w_max, c)
        self.seed, self.layers, self.include_bias = seed, layers, include_bias
        self.loss_fn = loss if callable(loss) else LOSSES[loss]
        if max_faulty_loss is None:
            max_faulty_loss = math.inf if dtype == "int8" else FLOAT_MAX_FAULTY_LOSS
        self.max_faulty_loss = check_number(max_faulty_loss, "max_faulty_loss", c, 0,
                                            inclusive=(False, True), finite=False,
                                            constraint="a number > 0 or None")
        if norm_stats is None:
            norm_stats = "both" if dtype == "int8" else "clean"
        check_choice(norm_stats, NORM_STATS, "norm_stats", c)
        self.norm_stats = norm_stats
        self.steps = 0  # backward calls so far (the fault map index)
        self.faulty = math.isinf(self.start_loss)  # latched once a clean loss < start_loss
        self.names: list[str] = []
        self._store = None  # int8 words (a module tree), built on first use
        self._qparams: dict[str, tuple] = {}
        if dtype == "int8":
            self.names = int8_weight_names(model)
            check(len(self.names) > 0, "model", c, "a model with nn.Linear or nn.Conv2d layers "
                  "for dtype='int8'", type(model).__name__)
            self._store = _store_tree(model, self.names)

    # -- the step ----------------------------------------------------------------------------
    def modules(self) -> list[nn.Module]:
        return [self.model] + ([self._store] if self._store is not None else [])

    @torch.no_grad()
    def _quantize_now(self) -> None:
        params = dict(self.model.named_parameters())
        words = dict(self._store.named_parameters())
        for name in self.names:
            q, scale, offset = _quantize(params[name], *self.quant)
            words[name].copy_(q)
            self._qparams[name] = (scale.to(q.device), None if offset is None else offset)

    def _forward(self, x, ste: bool = True):
        if self.dtype == "float32":
            return self.model(x)  # B x classes
        params = dict(self.model.named_parameters())
        words = dict(self._store.named_parameters())
        used = {}
        for name in self.names:
            w = params[name]
            scale, offset = self._qparams[name]
            deq = _dequantize(words[name], scale, offset, w.dtype)  # same shape as w
            used[name] = w + (deq - w).detach() if ste else deq  # straight-through estimator
        return torch.func.functional_call(self.model, used, (x,))  # B x classes

    def _draw(self) -> FaultMap:
        target = self._store if self.dtype == "int8" else self.model
        seed = derive_seed(self.seed, f"randbet|{self.steps}")
        if _is_fault_model(self.fault_model):
            return _sample_faults(target, self.fault_model, seed, self.layers, self.include_bias,
                                  False, "FaultAwareTask")
        fmap = self.fault_model(target, seed)
        if not isinstance(fmap, FaultMap):
            raise fail("fault_model", "FaultAwareTask", "a callable returning a FaultMap",
                       type(fmap).__name__)
        return fmap

    def backward(self, x, y):
        if self.w_max is not None:
            _clip(clipped_parameters(self.model), self.w_max)  # Algorithm 1, line 6
        if self.dtype == "int8":
            self._quantize_now()
        out: dict[str, float] = {"faulty": 0.0, "skipped": 0.0}
        loss_f = None
        if self.faulty:
            fmap = self._draw()
            target = self._store if self.dtype == "int8" else self.model
            stats = self._norm_stats() if self.norm_stats == "clean" else []
            touched = apply_fault_map(target, fmap, "FaultAwareTask")
            try:
                loss = self.loss_fn(self._forward(x), y)  # scalar, at the faulty weights
                loss_f = loss.item()
                if math.isfinite(loss_f) and loss_f <= self.max_faulty_loss:
                    loss.backward()
            finally:
                restore(touched)  # before the optimiser step: it updates the clean weights
                with torch.no_grad():
                    for buf, saved in stats:
                        buf.copy_(saved)
            out["faulty"] = 1.0
            if not (loss_f <= self.max_faulty_loss and self._grads_finite()):
                for p in self.model.parameters():
                    p.grad = None  # drop this faulty gradient (float32 exponent flips)
                out["skipped"], loss_f = 1.0, None
        loss_c = None
        if self.clean_loss or loss_f is None:
            loss = self.loss_fn(self._forward(x), y)  # scalar, clean (quantised) weights
            loss.backward()
            loss_c = loss.item()
            if loss_c < self.start_loss:
                self.faulty = True
        self.steps += 1
        out["loss"] = loss_c if loss_c is not None else loss_f
        out["loss_faulty"] = loss_f if loss_f is not None else out["loss"]  # no faults: clean
        return out

    def _norm_stats(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(buffer, copy) of every running statistic of the model's normalisation layers."""
        return [(b, b.detach().clone()) for m in self.model.modules()
                if isinstance(m, nn.modules.batchnorm._NormBase)
                for b in m.buffers(recurse=False)]

    def _grads_finite(self) -> bool:
        return all(bool(torch.isfinite(p.grad).all()) for p in self.model.parameters()
                   if p.grad is not None)

    def after_step(self) -> None:
        if self.w_max is not None:
            _clip(clipped_parameters(self.model), self.w_max)

    def predict(self, x):
        if self.dtype == "int8":
            self._quantize_now()
            return self._forward(x, ste=False)
        return self.model(x)

    # -- results -----------------------------------------------------------------------------
    def deployed(self) -> nn.Module:
        """A NEW model as it is stored: ``quantize_int8`` with this task's scheme (int8), or a
        copy of the float model; its int8 words equal the ones the last training step used."""
        if self.dtype == "int8":
            s, g, r = self.quant
            return quantize_int8(self.model, scheme=s, granularity=g, rounding=r)
        import copy

        return copy.deepcopy(self.model)
