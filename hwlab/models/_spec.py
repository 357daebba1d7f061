"""Models from anywhere: one resolver for a zoo name, ``module.path:callable`` or an entry point.

A *model spec* is one of

* a registered zoo name (``lenet5``, ``resnet20``, ... see :func:`list_models`);
* ``module.path:callable`` (``mymodels:tiny_resnet``, ``pkg.nets:Net``): the module is imported
  from the installed environment, or else from the current directory; the callable (a function
  or an ``nn.Module`` class, dotted attributes allowed) is called with the keyword arguments
  ``in_shape=(C, H, W)`` and ``num_classes=K``, those of them its signature accepts;
* a name registered by another package in the ``hwlab.models`` entry-point group
  (``[project.entry-points."hwlab.models"] tinynet = "mypkg.nets:tinynet"``), called the same
  way. An entry point that fails to load is skipped with a logged warning when listing.

:func:`resolve` builds the model (and loads ``weights`` when given: a ``.safetensors`` file, or
anything else through ``torch.load(weights_only=True)``; missing or unexpected keys and shape
mismatches are one clear error). The model can be any ``nn.Module``: residual adds, functional
activations, no ``nn.Sequential`` needed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from torch import nn

from hwlab.errors import check, check_int, fail, is_int
from hwlab.models._registry import _MODELS, create_model, list_models

__all__ = ["ENTRY_POINT_GROUP", "check_fits", "check_spec", "load_weights", "model_names",
           "resolve", "spec_digest"]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "hwlab.models"
_CALLABLE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def _allowed() -> str:
    return (f"a model spec: a zoo name ({', '.join(list_models())}), 'module.path:callable' or "
            "a hwlab.models entry point")


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed ``hwlab.models`` entry points by name (discovered once per process)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def model_names() -> list[str]:
    """Zoo names plus the ``hwlab.models`` entry points that load (others: a warning)."""
    names = set(list_models())
    for name, ep in _entry_points().items():
        try:
            fn = ep.load()
            if not callable(fn):
                raise TypeError(f"{type(fn).__name__} is not callable")
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break the lab
            log.warning("skipping model entry point %s: %s: %s", name, type(exc).__name__, exc)
            continue
        names.add(name)
    return sorted(names)


def _import(module: str, spec: str, param: str, caller: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        cwd = os.getcwd()
        if exc.name not in (top, module) or cwd in sys.path:
            raise fail(param, caller, _allowed(), f"{spec} (import failed: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module itself is broken (syntax, ...)
        raise fail(param, caller, _allowed(),
                   f"{spec} (import failed: {type(exc).__name__}: {exc})") from None
    # Not installed: look in the current directory (kept on sys.path, so that spawned worker
    # processes, which copy sys.path, import it too).
    sys.path.append(cwd)
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - anything the user's module raises on import
        raise fail(param, caller, _allowed(),
                   f"{spec} (import failed: {type(exc).__name__}: {exc})") from None


def _factory(spec, param: str, caller: str) -> Callable[..., nn.Module]:
    check(isinstance(spec, str) and spec != "", param, caller, _allowed(), spec)
    if spec in _MODELS:
        return lambda in_shape, num_classes: create_model(spec, in_shape, num_classes)
    if _CALLABLE.fullmatch(spec):
        module, _, attr = spec.partition(":")
        obj = _import(module, spec, param, caller)
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise fail(param, caller, _allowed(),
                           f"{spec} (module {module} has no attribute {attr})")
            obj = getattr(obj, part)
        check(callable(obj), param, caller, _allowed(), f"{spec} (not callable)")
        return obj
    eps = _entry_points()
    if spec in eps:
        try:
            obj = eps[spec].load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in, named in the error
            raise fail(param, caller, _allowed(), f"{spec} (entry point failed to load: "
                       f"{type(exc).__name__}: {exc})") from None
        check(callable(obj), param, caller, _allowed(), f"{spec} (entry point not callable)")
        return obj
    raise fail(param, caller, _allowed(), spec)


def check_spec(spec, param: str = "model", caller: str = "resolve") -> str:
    """``spec`` if it names a model (a zoo name, an importable ``module:callable`` or a loading
    entry point), else an error in the hwlab template for ``param`` of ``caller``."""
    _factory(spec, param, caller)
    return spec


def _call(fn, spec: str, in_shape: tuple, num_classes: int, caller: str) -> nn.Module:
    kwargs = {"in_shape": tuple(in_shape), "num_classes": num_classes}
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in sig.parameters}
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise fail("spec", caller, "a factory callable as factory(in_shape=(C, H, W), "
                   "num_classes=K)", f"{spec} ({exc})") from None
    check(isinstance(model, nn.Module), "spec", caller, "a factory returning an nn.Module",
          f"{spec} (returned {type(model).__name__})")
    return model


def resolve(spec: str, in_shape=(1, 28, 28), num_classes: int = 10,
            weights: str | os.PathLike | None = None) -> nn.Module:
    """A fresh model for ``spec`` (train mode; weights from the global torch RNG unless
    ``weights`` is given, then loaded strictly with :func:`load_weights`)."""
    fn = _factory(spec, "spec", "resolve")
    ok = isinstance(in_shape, (tuple, list)) and len(in_shape) >= 1
    ok = ok and all(is_int(s, 1) for s in in_shape)
    check(ok, "in_shape", "resolve", "a tuple of positive integers such as (C, H, W)", in_shape)
    num_classes = check_int(num_classes, "num_classes", "resolve", 1)
    model = _call(fn, spec, tuple(map(int, in_shape)), num_classes, "resolve")
    if weights is not None:
        _load_weights(model, weights, "resolve")
    return model


def _read_state(path: Path, caller: str) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise fail("weights", caller, "a readable .safetensors file",
                       f"{path} ({type(exc).__name__}: {exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler raises many types
        raise fail("weights", caller, "a state dict saved with torch.save (loaded with "
                   "weights_only=True) or a .safetensors file",
                   f"{path} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint that wraps the state dict
    return state


def load_weights(model: nn.Module, weights: str | os.PathLike) -> nn.Module:
    """Load a state dict file into ``model`` strictly (in place) and return it.

    Missing keys, unexpected keys and shape mismatches are one error naming them (the model is
    left unchanged then: the check runs before anything is copied).
    """
    return _load_weights(model, weights, "load_weights")


def _load_weights(model: nn.Module, weights, caller: str) -> nn.Module:
    import torch

    check(isinstance(model, nn.Module), "model", caller, "an nn.Module",
          type(model).__name__)
    check(isinstance(weights, (str, os.PathLike)), "weights", caller,
          "a path to a state dict file", weights)
    path = Path(weights).expanduser()
    check(path.is_file(), "weights", caller, "an existing file", str(path))
    state = _read_state(path, caller)
    ok = isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    check(ok, "weights", caller, "a state dict (names -> tensors)",
          f"{path} ({type(state).__name__})")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    check(not missing and not unexpected, "weights", caller,
          "a state dict with exactly the model's keys",
          f"{path} (missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}; unexpected: "
          f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''})")
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    check(not wrong, "weights", caller, "a state dict whose shapes match the model",
          f"{path} ({'; '.join(wrong[:3])})")
    model.load_state_dict(state, strict=True)
    return model


def check_fits(model: nn.Module, in_shape, num_classes: int, caller: str,
               param: str = "model") -> None:
    """Run two zero inputs of ``in_shape`` through ``model`` (eval mode, no grad, modes and RNG
    untouched); an exception or an output that is not ``2 x num_classes`` is one error naming
    the mismatch, before any run opens (#13: a model/data mismatch found up front)."""
    import torch

    check(isinstance(model, nn.Module), param, caller, "an nn.Module", type(model).__name__)
    p = next(model.parameters(), None)
    x = torch.zeros(2, *in_shape, dtype=p.dtype if p is not None and p.is_floating_point()
                    else torch.float32, device=p.device if p is not None else "cpu")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - any failure here is the user's mismatch
        raise fail(param, caller, f"a model that accepts inputs of shape (N, "
                   f"{', '.join(map(str, in_shape))}) (the data's)",
                   f"{type(model).__name__} ({type(exc).__name__}: "
                   f"{' '.join(str(exc).split())[:200]})") from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    shape = tuple(getattr(out, "shape", ()))
    check(shape == (2, num_classes), param, caller, f"a model with {num_classes} outputs per "
          "sample (the data's classes)", f"{type(model).__name__} (output shape {shape} for "
          "2 inputs)")


def spec_digest(spec: str) -> str:
    """A short hash that changes when the model's definition changes (for cache keys).

    A zoo name hashes the name (the zoo's own format version covers its code); a
    ``module:callable`` or entry point hashes the spec and the source file of its module.
    """
    fn = _factory(spec, "model", "spec_digest")
    h = hashlib.sha256(spec.encode())
    if spec not in _MODELS:
        source = inspect.getsourcefile(inspect.unwrap(fn)) if _has_source(fn) else None
        if source and Path(source).is_file():
            h.update(Path(source).read_bytes())
    return h.hexdigest()[:16]


def _has_source(fn) -> bool:
    try:
        return inspect.getsourcefile(inspect.unwrap(fn)) is not None
    except TypeError:
        return False
