"""Model registry and factory (timm style): ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from hwlab.errors import check, check_positive_int, is_int

_MODELS: dict[str, Callable[..., nn.Module]] = {}  # name -> factory, filled by @register_model


def register_model(name: str):
    """Decorator: register ``fn(in_shape=(C, H, W), num_classes=10, **kw) -> nn.Module``."""
    check(isinstance(name, str) and name != "", "name", "register_model", "a non-empty string",
          name)

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        check(name not in _MODELS or _MODELS[name] is fn, "name", "register_model",
              "a name not registered yet", name)
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def create_model(name: str, in_shape=(1, 28, 28), num_classes: int = 10, **kw) -> nn.Module:
    """Build a fresh model (train mode, weights from the global torch RNG; seed it to reproduce)."""
    check(name in _MODELS, "name", "create_model", f"one of {', '.join(list_models())}", name)
    ok = isinstance(in_shape, (tuple, list)) and len(in_shape) == 3
    ok = ok and all(is_int(s, 1) for s in in_shape)
    check(ok, "in_shape", "create_model", "a (C, H, W) tuple of positive integers", in_shape)
    num_classes = check_positive_int(num_classes, "num_classes", "create_model", minimum=2)
    fn = _MODELS[name]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("in_shape", "num_classes")]
    unknown = sorted(set(kw) - set(allowed))
    check(not unknown, "keyword arguments", "create_model",
          f"options of {name} ({', '.join(allowed) or 'none'})", unknown)
    model = fn(in_shape=tuple(map(int, in_shape)), num_classes=num_classes, **kw)
    check(isinstance(model, nn.Module), "factory", "create_model",
          "a function returning an nn.Module", type(model).__name__)
    return model.train()
