"""Tracing a model once with ``torch.fx``: the leaf-module policy and a clear error when it fails.

``torch.fx.symbolic_trace`` records every operation of ``forward`` with proxies. Modules from the
``torch.nn`` namespace are leaves (one ``call_module`` node each); other modules are traced
through, so a researcher's residual block becomes adds, functional ``relu`` calls and the convs
inside it. A module is kept opaque (a leaf) when

* its class is in ``torch.nn`` (fx's default, ``nn.Sequential`` and ``nn.ModuleList`` excepted),
* its class sets ``_hwlab_leaf = True`` (hwlab's own layers: clipped ReLUs, QCFS, quantum layers,
  int8 layers), or
* the caller names it in ``leaf_modules`` (a qualified module name such as ``"layer1.0"`` or a
  module class): the fix for a submodule whose ``forward`` has data-dependent control flow.

A model that cannot be traced raises :class:`~hwlab.errors.HwlabError` naming the innermost module
that was being traced when it failed, the operation fx reported, and the ``leaf_modules`` fix.
"""

from __future__ import annotations

import contextlib
import copy
import io

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from hwlab.errors import check, fail, is_int

__all__ = ["HwlabTracer", "check_leaf_modules", "symbolic_trace"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class HwlabTracer(fx.Tracer):
    """fx tracer with hwlab's leaf policy; remembers the module stack for error messages."""

    def __init__(self, leaf_modules=()):
        super().__init__()
        self.leaf_names = {m for m in leaf_modules if isinstance(m, str)}
        self.leaf_types = tuple(m for m in leaf_modules if isinstance(m, type))
        self.failed_in: tuple[str, str] | None = None  # (qualified name, class) when tracing fails

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if getattr(type(m), "_hwlab_leaf", False) or module_qualified_name in self.leaf_names:
            return True
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        if isinstance(m, _CONTAINERS):
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        name = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module raises first
                self.failed_in = (name or "<root>", type(m).__name__)
            raise


def _leaf_spec(leaf_modules, caller: str) -> tuple:
    if leaf_modules is None:
        return ()
    items = (leaf_modules,) if isinstance(leaf_modules, (str, type)) else tuple(leaf_modules)
    for m in items:
        ok = isinstance(m, str) or (isinstance(m, type) and issubclass(m, nn.Module))
        check(ok, "leaf_modules", caller, "qualified module names or nn.Module classes", m)
    return items


def check_leaf_modules(model: nn.Module, leaf_modules, caller: str) -> tuple:
    """``leaf_modules`` as a tuple, checked against ``model``: qualified names of its submodules
    (as in ``named_modules()``) or ``nn.Module`` classes; None or ``()`` for none."""
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
          type(model).__name__)
    leaves = _leaf_spec(leaf_modules, caller)
    known = dict(model.named_modules())
    for m in leaves:
        if isinstance(m, str):
            check(m in known and m != "", "leaf_modules", caller,
                  "names of submodules of the model (as in named_modules())", m)
    return leaves


def symbolic_trace(model: nn.Module, leaf_modules=(), caller: str = "hwlab.graph.trace"
                   ) -> fx.GraphModule:
    """A ``GraphModule`` over ``model`` (sharing its submodules and parameters)."""
    leaves = check_leaf_modules(model, leaf_modules, caller)
    if isinstance(model, fx.GraphModule) and not leaves:
        return model
    tracer = HwlabTracer(leaves)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        where, cls = tracer.failed_in or ("<root>", type(model).__name__)
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        line = _user_line(exc)
        if line:
            what += f" at {line}"
        fix = (f"traceable by torch.fx; mark the failing submodule as a leaf "
               f"(leaf_modules=[{where!r}], or _hwlab_leaf = True on its class) or remove "
               f"data-dependent control flow from its forward" if where != "<root>" else
               "traceable by torch.fx; the model's own forward failed: remove data-dependent "
               "control flow from it or trace a wrapper whose submodules are leaves")
        raise fail("model", caller, fix, f"{type(model).__name__}, failing in module "
                   f"{where!r} ({cls}): {what}") from exc
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


def _user_line(exc: BaseException) -> str:
    """``file:line `code``` of the innermost frame outside torch (the failing operation)."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename and not f.filename.endswith("hwlab/graph/_trace.py")]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} `{(f.line or '').strip()}`"


def as_sample(sample, caller: str) -> torch.Tensor | None:
    """A sample batch: a tensor as is, or a seeded batch of 2 uniform inputs for a shape tuple."""
    if sample is None or isinstance(sample, torch.Tensor):
        return sample
    ok = isinstance(sample, (tuple, list)) and len(sample) >= 1 and all(
        is_int(s, 1) for s in sample)
    check(ok, "sample", caller, "None, an input batch tensor or an input shape tuple (C, H, W)",
          sample)
    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, *map(int, sample), generator=gen)  # 2 x C x H x W


@torch.no_grad()
def propagate_shapes(gm: fx.GraphModule, sample: torch.Tensor, caller: str) -> None:
    """Record ``tensor_meta`` (shape, dtype) on every node by running ``sample`` once.

    Runs on a deep copy in eval mode, so BatchNorm statistics of the model never move. A sample
    whose shape the model rejects is an error naming both shapes.
    """
    probe = copy.deepcopy(gm).eval()
    device = next((p.device for p in probe.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in probe.parameters() if p.is_floating_point()), torch.float32)
    x = sample.to(device=device, dtype=dtype if sample.is_floating_point() else sample.dtype)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints the traceback
            ShapeProp(probe).propagate(x)
    except Exception as exc:
        cause = exc.__cause__ or exc  # ShapeProp wraps the torch error in its own
        raise fail("sample", caller, "an input the model accepts (check in_shape against the "
                   "model's first layer)", f"shape {tuple(sample.shape)}: {type(cause).__name__}: "
                   f"{str(cause).splitlines()[0] if str(cause) else ''}") from exc
    for src, dst in zip(probe.graph.nodes, gm.graph.nodes):
        if "tensor_meta" in src.meta:
            dst.meta["tensor_meta"] = src.meta["tensor_meta"]
