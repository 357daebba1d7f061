"""Choosing the parameters that can be faulty and sampling a :class:`FaultMap` over their bits."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from faultlab import _kernels
from faultlab._faults import FAULT_MODELS, KINDS, BitFlip, FaultMap, StuckAt
from hwlab.errors import check, fail

__all__ = ["WORDS", "Sampler", "eligible_parameters", "layer_of", "sample_faults", "sampler",
           "seed32"]


# Storage dtype -> (bits per word, unsigned NumPy view, signed torch view of the same width).
WORDS = {
    torch.float32: (32, np.uint32, torch.int32),
    torch.float16: (16, np.uint16, torch.int16),
    torch.bfloat16: (16, np.uint16, torch.int16),
    torch.int8: (8, np.uint8, torch.int8),
}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16",
                torch.bfloat16: "bfloat16", torch.int8: "int8"}
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def seed32(seed, caller: str = "sample_faults") -> int:
    """Map any non-negative integer seed to the 32-bit seed a Numba kernel takes (SeedSequence)."""
    ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0
    check(ok, "seed", caller, "an integer >= 0", seed)
    if seed < 2**64:  # the same word, computed in a kernel (no SeedSequence object)
        return int(_kernels.seed_state(np.uint64(seed)))
    return int(np.random.SeedSequence(int(seed)).generate_state(1)[0])


def layer_of(pname: str) -> str:
    """The weight layer a parameter belongs to: its owning module's name, or, for a parameter of
    the model itself (a ViT's ``cls_token``), the parameter's own name (never ``""``, which would
    name the whole model)."""
    owner = pname.rpartition(".")[0]
    return owner or pname


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1].endswith("bias")  # bias, in_proj_bias, ...


def eligible_parameters(model: nn.Module, layers=None, include_bias: bool = False,
                        include_norm: bool = False, caller: str = "sample_faults"):
    """``[(name, tensor)]`` of the parameters faults may hit, in ``named_parameters()`` order.

    Default: every parameter except biases (names ending in ``bias``) and the parameters of
    normalisation layers (BatchNorm, LayerNorm, GroupNorm, RMSNorm), as in the FT-ClipAct
    simulator. ``include_bias`` / ``include_norm`` add them back. ``layers`` restricts the choice to
    the named modules (every eligible parameter below them) or parameters (taken as named, even a
    bias or a norm parameter). An unknown name or an unsupported dtype is an error naming it.
    """
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module", type(model).__name__)
    params = dict(model.named_parameters())
    norm_params = {
        f"{m}.{p}" if m else p
        for m, mod in model.named_modules() if isinstance(mod, _NORMS)
        for p, _ in mod.named_parameters(recurse=False)
    }

    def default_ok(name):
        return (include_bias or not _is_bias(name)) and (include_norm or name not in norm_params)

    if layers is None:
        chosen = [n for n in params if default_ok(n)]
    else:
        if isinstance(layers, str):
            layers = [layers]
        modules = dict(model.named_modules())
        wanted = set()
        for layer in layers:
            if layer in params:
                wanted.add(layer)
            elif isinstance(layer, str) and layer and layer in modules:
                wanted.update(n for n in params if n.startswith(f"{layer}.") and default_ok(n))
            elif layer == "":
                raise fail("layers", caller, "module or parameter names of the model ('' would "
                           "be the whole model: pass layers=None for every layer, or name the "
                           "model's own parameters)", layer)
            else:
                some = ", ".join(list(modules)[1:4] + list(params)[:2])
                raise fail("layers", caller, f"module or parameter names of the model (e.g. {some})",
                           layer)
        chosen = [n for n in params if n in wanted]
    check(len(chosen) > 0, "model", caller,
          "a model with parameters eligible for faults (weights; biases only with include_bias)",
          f"none among {list(params)[:6]}" if params else "a model without parameters")
    for n in chosen:
        t = params[n]
        check(t.dtype in WORDS, "model", caller,
              "a model whose chosen parameters are float32, float16, bfloat16 or int8",
              f"parameter {n!r} of dtype {str(t.dtype).replace('torch.', '')}")
    return [(n, params[n]) for n in chosen]


def _bit_table(fault_model, chosen, caller):
    """Sorted eligible bits and the number eligible per word of each chosen parameter."""
    widths = np.array([WORDS[t.dtype][0] for _, t in chosen], dtype=np.int64)
    if fault_model.bits is None:
        return np.arange(32, dtype=np.int64), widths
    table = np.asarray(fault_model.bits, dtype=np.int64)
    for (name, t), w in zip(chosen, widths):
        check(int(table.max()) < w, "bits", caller,
              f"bit indices below the word width {w} of parameter {name!r} "
              f"({_DTYPE_NAMES[t.dtype]})", fault_model.bits)
    return table, np.full(len(chosen), table.size, dtype=np.int64)


def sample_faults(model: nn.Module, fault_model, seed: int = 0, layers=None,
                  include_bias: bool = False, include_norm: bool = False, nested_rates=None):
    """Draw a :class:`FaultMap` for ``fault_model`` over the eligible bits of ``model``.

    The eligible bits are (element, bit in ``fault_model.bits``) of every parameter chosen by
    ``layers`` / ``include_bias`` / ``include_norm`` (see :func:`eligible_parameters`; biases and
    normalisation parameters are excluded by default), concatenated virtually in parameter order.
    With ``rate`` every eligible bit is faulty independently with that probability (a binomial
    count of distinct, uniform positions, never truncated per layer); with ``count`` exactly that
    many distinct positions are drawn uniformly. The same seed gives the same map. The cost is
    proportional to the number of faults (Numba kernels in ``faultlab._kernels``), not to the
    number of bits. The model is only read.

    Any :class:`~faultlab.FaultModel` is accepted: asymmetric rates and the memory-level models
    of ``faultlab.memory`` (ECC, bursts, row / column / bank faults, chip maps) draw through
    ``faultlab.memory``. With ``nested_rates=[r1, r2, ...]`` a list of maps is returned, one per
    rate (``fault_model.with_rate(r)``), from one draw: every candidate bit has one uniform
    number and is faulty at rate r iff it is below r (Stutz et al.), so the map at a lower rate
    is a subset of the map at a higher one (see ``faultlab.memory.sample_nested``).
    """
    if nested_rates is not None:
        from faultlab.memory._nested import sample_nested

        return sample_nested(model, fault_model, nested_rates, seed, layers, include_bias,
                             include_norm, "sample_faults")
    return _sample_faults(model, fault_model, seed, layers, include_bias, include_norm,
                          "sample_faults")


def _sample_faults(model, fault_model, seed, layers, include_bias, include_norm, caller,
                   views=None):
    """``views``: ``model_views(model)`` when the caller already holds them (a trial)."""
    check(isinstance(fault_model, FAULT_MODELS), "fault_model", caller,
          "a BitFlip, StuckAt or another faultlab.FaultModel", fault_model)
    if fault_model.asymmetric or not isinstance(fault_model, (BitFlip, StuckAt)):
        return fault_model._sample_map(model, seed, layers, include_bias, include_norm, caller)
    ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0
    check(ok, "seed", caller, "an integer >= 0", seed)
    return sampler(model, fault_model, layers, include_bias, include_norm, caller, views).draw(
        fault_model, int(seed), caller)


class Sampler:
    """The prepared form of the BitFlip / StuckAt draw for one model and one choice of bits.

    What does not depend on the rate, the count or the seed is computed once: the eligible
    parameters (``layers`` / ``include_bias`` / ``include_norm``), the bit table of
    ``fault_model.bits`` and the cumulative bit counts; :meth:`draw` then costs the faults only.
    It holds no reference to the model (it lives in the model's ``ModelViews.cache``).
    """

    def __init__(self, model, fault_model, layers, include_bias, include_norm, caller):
        chosen = eligible_parameters(model, layers, include_bias, include_norm, caller)
        self.table, self.per_word = _bit_table(fault_model, chosen, caller)  # reads .bits only
        sizes = np.array([t.numel() for _, t in chosen], dtype=np.int64) * self.per_word
        self.ends = np.cumsum(sizes)  # cumulative eligible bits: the kernel's parameter bounds
        self.total = int(self.ends[-1])
        self.names = tuple(n for n, _ in chosen)
        self.dtypes = tuple(_DTYPE_NAMES[t.dtype] for _, t in chosen)

    def draw(self, fault_model, seed: int, caller: str) -> FaultMap:
        """The map of ``fault_model`` (its rate or count) for ``seed`` (an integer >= 0).

        One kernel call (:func:`faultlab._kernels.draw_bits`) seeded with
        ``SeedSequence(seed).generate_state(1)[0]`` (:func:`seed32`; in the kernel for seeds
        below 2**64).
        """
        if fault_model.rate is not None:
            rate, count = float(fault_model.rate), 0
        else:
            check(fault_model.count <= self.total, "count", caller,
                  f"at most the {self.total} eligible bits of the chosen parameters",
                  fault_model.count)
            rate, count = -1.0, int(fault_model.count)
        big = seed >= 2**64
        param, index, bit = _kernels.draw_bits(
            self.total, rate, count, np.uint64(0 if big else seed),
            seed32(seed) if big else -1, self.ends, self.per_word, self.table)
        kind = np.full(index.shape[0], KINDS.index(fault_model.kind), np.int8)
        return FaultMap(names=self.names, dtypes=self.dtypes, param=param, index=index, bit=bit,
                        kind=kind, eligible_bits=self.total, seed=seed)


def sampler(model, fault_model, layers=None, include_bias=False, include_norm=False,
            caller="sample_faults", views=None) -> Sampler:
    """The :class:`Sampler` of ``model`` for the bits of ``fault_model`` and the parameter
    choice, kept in ``faultlab._inject.model_views(model).cache`` (dropped when the model's
    parameters change) and built there on first use (``views``: those views, if held)."""
    from faultlab._inject import model_views

    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module", type(model).__name__)
    if isinstance(layers, (list, tuple)):
        layers = tuple(layers)
    key = ("sampler", fault_model.bits, layers, bool(include_bias), bool(include_norm))
    try:
        hash(key)
    except TypeError:  # an unhashable layers entry: refused by eligible_parameters, uncached
        return Sampler(model, fault_model, layers, include_bias, include_norm, caller)
    cache = (views or model_views(model)).cache
    if key not in cache:
        cache[key] = Sampler(model, fault_model, layers, include_bias, include_norm, caller)
    return cache[key]
