"""Word facts of a model's parameters: storage words per dtype, the eligible parameters, seeds,
and the per-model views that drawing and injection share.

The bottom of faultlab's sampling layer: it imports nothing of faultlab but ``_kernels``, so the
plain draw (:mod:`faultlab._plain`), the memory models (:mod:`faultlab.memory`), injection and
the dispatch of :func:`faultlab.sample_faults` (:mod:`faultlab._sample`) all build on it.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from faultlab import _kernels
from hwlab.errors import check, check_int, fail

__all__ = ["WORDS", "ModelViews", "eligible_parameters", "layer_of", "model_views", "seed32"]


# Storage dtype -> (bits per word, unsigned NumPy view, signed torch view of the same width).
WORDS = {
    torch.float32: (32, np.uint32, torch.int32),
    torch.float16: (16, np.uint16, torch.int16),
    torch.bfloat16: (16, np.uint16, torch.int16),
    torch.int8: (8, np.uint8, torch.int8),
    torch.uint8: (8, np.uint8, torch.int8),  # packed codes of faultlab.quantize (formats)
}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16",
                torch.bfloat16: "bfloat16", torch.int8: "int8", torch.uint8: "uint8"}
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def seed32(seed, caller: str = "sample_faults") -> int:
    """Map any non-negative integer seed to the 32-bit seed a Numba kernel takes (SeedSequence)."""
    seed = check_int(seed, "seed", caller, 0)
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


# Prepared views per live model (weak keys: a collected model drops its entry). A cache only: every
# use compares the model's current parameters with the entry's signature and rebuilds on change.
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_data_ptr = torch.Tensor.data_ptr


def _members(modules) -> list | None:
    """Every child module and parameter (None included) of the live ``modules`` (weak
    references), module by module in dict order; None once one of the modules is gone."""
    out: list = []
    add = out.extend
    for r in modules:
        m = r()
        if m is None:
            return None
        add(m._modules.values())
        add(m._parameters.values())
    return out


class ModelViews:
    """What injection needs of one model, prepared once: parameter slots, addresses, widths.

    Slots follow ``model.named_parameters()``. ``fast[s]`` marks CPU contiguous parameters of a
    supported dtype, reached by address in the one-call kernel; the others use the indexed path.
    ``keep`` holds a detached alias of every parameter so the memory the addresses point to stays
    alive as long as these views (or a restore record) do. ``cache`` is for other per-model
    set-up that must be dropped when the model changes (e.g. a sampler's eligible parameters).
    """

    def __init__(self, model: nn.Module):
        named = list(model.named_parameters())
        # weak: the views live in a WeakKeyDictionary keyed by the model and must not keep it alive
        self.modules = [weakref.ref(m) for m in model.modules()]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.slot_of = {n: i for i, n in enumerate(self.names)}
        self.keep = [p.detach() for p in self.params]
        # The staleness check of current(): the identities of every child module and parameter
        # (module by module), and the data pointers of the parameters among them. The parameters
        # are held (self.params / self.keep), so an equal identity is the same parameter object.
        members = _members(self.modules)
        self._ids = list(map(id, members))
        self._held = [p for p in members if isinstance(p, torch.Tensor)]
        self._ptrs = list(map(_data_ptr, self._held))
        self.width = np.array([WORDS[p.dtype][0] if p.dtype in WORDS else 0 for p in self.params],
                              dtype=np.int64)
        self.numel = np.array([p.numel() for p in self.params], dtype=np.int64)
        self.fast = np.array([p.dtype in WORDS and p.device.type == "cpu" and p.is_contiguous()
                              for p in self.params], dtype=bool)
        self.addr = np.array([k.data_ptr() if f else 0 for k, f in zip(self.keep, self.fast)],
                             dtype=np.int64)
        self.fast8 = self.fast.astype(np.uint8)
        # addr / width / numel / fast as the rows of one array (faultlab._kernels.draw_inject)
        self.tab = np.stack([self.addr, self.width, self.numel, self.fast.astype(np.int64)])
        self._plans: dict[tuple, np.ndarray] = {}
        self.cache: dict = {}

    def current(self, model: nn.Module) -> bool:
        """True while ``model``'s parameters are still the ones these views were built from."""
        refs = self.modules
        if refs[0]() is not model:
            return False
        members = _members(refs)
        if members is None:
            return False
        return list(map(id, members)) == self._ids and \
            list(map(_data_ptr, self._held)) == self._ptrs

    def slots(self, fmap, caller: str) -> np.ndarray:
        """Slot of each of ``fmap.names`` (a :class:`~faultlab.FaultMap`; validated once per
        names and dtypes)."""
        key = (fmap.names, fmap.dtypes)
        slots = self._plans.get(key)
        if slots is None:
            out = []
            for name, dtype in zip(fmap.names, fmap.dtypes):
                check(name in self.slot_of, "fault_model_or_map", caller,
                      "a FaultMap of this model's parameters",
                      f"a map naming unknown parameter {name!r}")
                t = self.params[self.slot_of[name]]
                check(t.dtype in WORDS and _DTYPE_NAMES[t.dtype] == dtype, "fault_model_or_map",
                      caller, "a FaultMap drawn for parameters of the same dtype",
                      f"{dtype} for parameter {name!r} of dtype "
                      f"{str(t.dtype).replace('torch.', '')}")
                out.append(self.slot_of[name])
            slots = self._plans[key] = np.array(out, dtype=np.int64)
        return slots


def model_views(model: nn.Module) -> ModelViews:
    """The prepared :class:`ModelViews` of ``model`` (built on first use or after a change)."""
    views = _VIEWS.get(model)
    if views is None or not views.current(model):
        views = _VIEWS[model] = ModelViews(model)
    return views
