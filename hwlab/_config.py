"""Study configs that validate themselves from declared constraints (one study contract).

A study's ``Config`` is a frozen dataclass deriving from :class:`StudyConfig`; each field is
declared with :func:`param` (or ``dataclasses.field(metadata={...})`` with the same keys)::

    @dataclass(frozen=True)
    class Config(StudyConfig):
        study: ClassVar[str] = "faultlab.demo"       # names the study in error messages
        model: str = param("lenet5", "model to test (zoo name, module:callable, entry point)",
                           kind="model")
        rates: tuple[float, ...] = param((1e-6, 1e-5), "per-bit fault rates",
                                         range=(0, 1), inclusive=(False, True), nonempty=True)
        fault: str = param("bitflip", "fault model", choices=("bitflip", "stuck0", "stuck1"))

``__post_init__`` checks every field against its type hint (strings are not converted here: that
is ``Study.make_config``'s job for CLI text) and its constraint, and normalises lists to tuples
and NumPy scalars to Python numbers. Floats must be finite (NaN never passes). The CLI flags and
the dashboard form read the same :func:`constraints`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from hwlab.errors import check, check_bool, fail, is_int, is_number

__all__ = ["Constraint", "StudyConfig", "constraints", "convert", "describe", "param",
           "validate_config"]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_NUMBERS = {int: "an integer", float: "a number"}  # type -> words


@dataclass(frozen=True)
class Constraint:
    """What a config field accepts, besides its type (elementwise for a ``tuple[T, ...]``)."""

    help: str = ""  # one line for `hwlab run STUDY --help` and the dashboard form
    choices: tuple | None = None  # allowed values
    range: tuple | None = None  # (lo, hi) of a number; None on a side = unbounded
    inclusive: tuple[bool, bool] = (True, True)  # whether lo / hi themselves are allowed
    nonempty: bool = False  # a tuple must have at least one element
    kind: str | None = None  # "model" (hwlab.models.check_spec), "dataset" (check_dataset),
    # "path" (an existing file, "" for none)
    validate: Callable | None = None  # extra check: validate(value, name, caller) -> value

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "validate"}


def param(default: Any, help: str = "", *, choices=None, range=None,  # the declared words
          inclusive: tuple[bool, bool] = (True, True), nonempty: bool = False,
          kind: str | None = None, validate: Callable | None = None):
    """A dataclass field with a default and a declared :class:`Constraint`."""
    c = Constraint(help, None if choices is None else tuple(choices),
                   None if range is None else tuple(range), tuple(inclusive), nonempty, kind,
                   validate)
    return dataclasses.field(default=default, metadata={"hwlab": c})


def _constraint(f: dataclasses.Field) -> Constraint:
    meta = f.metadata or {}
    if isinstance(meta.get("hwlab"), Constraint):
        return meta["hwlab"]
    keys = {k: meta[k] for k in ("help", "choices", "range", "inclusive", "nonempty", "kind",
                                 "validate") if k in meta}
    for k in ("choices", "range", "inclusive"):
        if keys.get(k) is not None:
            keys[k] = tuple(keys[k])
    return Constraint(**keys)


def _element(tp: Any) -> tuple[Any, bool]:
    """(element type, is_tuple) of ``tuple[T, ...]``; (tp, False) for anything else."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0], True
    return tp, False


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe(tp: Any, c: Constraint) -> str:
    """The constraint text of the error template, e.g. ``a non-empty tuple of numbers in (0, 1]``."""
    elem, is_tuple = _element(tp)
    words = {int: "integers", float: "numbers", str: "strings", bool: "bools"}.get(elem, "values")
    one = {int: "an integer", float: "a number", str: "a str", bool: "a bool"}.get(elem, "a value")
    if c.choices is not None:
        listed = ", ".join(map(str, c.choices))
        text = f"one of {listed}"
        if is_tuple:
            text = f"a {'non-empty ' if c.nonempty else ''}tuple from {listed}"
        return text
    if c.kind == "path":
        return "an existing file or '' (none)"
    if c.kind == "dataset":
        return "a dataset spec (see hwlab.data.load)"
    if c.kind == "model":
        if is_tuple:
            return (f"a {'non-empty ' if c.nonempty else ''}tuple of model specs (zoo names, "
                    "'module:callable' or hwlab.models entry points)")
        return "a model spec (a zoo name, 'module:callable' or a hwlab.models entry point)"
    bounds = ""
    if c.range is not None:
        lo, hi = c.range
        (lo_in, hi_in) = c.inclusive
        if lo is not None and hi is not None:
            bounds = f" in {'[' if lo_in else '('}{_fmt(lo)}, {_fmt(hi)}{']' if hi_in else ')'}"
        elif lo is not None:
            bounds = f" {'>=' if lo_in else '>'} {_fmt(lo)}"
        elif hi is not None:
            bounds = f" {'<=' if hi_in else '<'} {_fmt(hi)}"
    if elem is float and c.range is None:
        one, words = "a finite number", "finite numbers"
    if is_tuple:
        return f"a {'non-empty ' if c.nonempty else ''}tuple of {words}{bounds}"
    return f"{one}{bounds}"


def convert(value: Any, tp: Any, name: str, caller: str, strings: bool = True) -> Any:
    """Check ``value`` against the type hint ``tp``; with ``strings``, CLI text is converted."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (strings and isinstance(value, str)
                             and value.lower() in ("none", "") and type(None) in args):
            check(type(None) in args, name, caller, f"a {tp}", value)
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return convert(value, inner[0], name, caller, strings)
        for a in inner:  # first alternative that accepts the value
            try:
                return convert(value, a, name, caller, strings)
            except ValueError:
                continue
        raise fail(name, caller, f"a {tp}", value)
    if origin is tuple:
        if strings and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        check(isinstance(value, (tuple, list)), name, caller,
              "a tuple (comma-separated on the command line)", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], name, caller, strings) for v in value)
        if args:
            check(len(value) == len(args), name, caller, f"a tuple of {len(args)} values", value)
            return tuple(convert(v, a, name, caller, strings) for v, a in zip(value, args))
        return tuple(value)
    if tp is bool:
        if strings and isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        return check_bool(value, name, caller, "a bool (true or false)")
    if tp in _NUMBERS:  # int or float: parse CLI strings, accept Python and NumPy numbers
        what = _NUMBERS[tp]
        if strings and isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                raise fail(name, caller, what, value) from None
        if isinstance(value, (np.generic, np.ndarray)) and value.ndim == 0:
            value = value.item()  # a NumPy scalar or 0-d array: the Python value it stands for
        # NaN and infinities pass here: _check_value refuses them with the constraint in words
        ok = is_int(value) if tp is int else is_number(value, finite=False, nan=True)
        check(ok, name, caller, what, value)
        return tp(value)
    if tp is str:
        check(isinstance(value, str), name, caller, "a str", value)
        return value
    if origin is typing.Literal:
        check(value in args, name, caller, f"one of {', '.join(map(repr, args))}", value)
        return value
    if isinstance(tp, type):
        check(isinstance(value, tp), name, caller, f"a {tp.__name__}", value)
    return value


def _check_value(v: Any, elem: Any, c: Constraint, name: str, caller: str, text: str,
                 shown: Any) -> None:
    if isinstance(v, float):
        check(math.isfinite(v), name, caller, text, shown)
    if c.choices is not None:
        check(v in c.choices, name, caller, text, shown)
    if c.range is not None and is_number(v, finite=False):
        lo, hi = c.range
        lo_in, hi_in = c.inclusive
        ok = (lo is None or (v >= lo if lo_in else v > lo)) and \
             (hi is None or (v <= hi if hi_in else v < hi))
        check(ok, name, caller, text, shown)
    if c.kind == "model" and v is not None:
        from hwlab.models import check_spec

        check_spec(v, name, caller)
    if c.kind == "path" and v:
        from pathlib import Path

        check(Path(v).expanduser().is_file(), name, caller, describe(str, c), v)
    if c.kind == "dataset" and v is not None:
        from hwlab.data import check_dataset

        check_dataset(v, name, caller)


def check_field(value: Any, tp: Any, c: Constraint, name: str, caller: str) -> Any:
    """Type-check (no string conversion), normalise and constraint-check one field value."""
    value = convert(value, tp, name, caller, strings=False)
    text = describe(tp, c)
    elem, is_tuple = _element(tp)
    if is_tuple:
        check(not c.nonempty or len(value) > 0, name, caller, text, value)
        for v in value:
            _check_value(v, elem, c, name, caller, text, v if c.kind == "model" else value)
    elif value is not None:
        _check_value(value, elem, c, name, caller, text, value)
    if c.validate is not None:
        value = c.validate(value, name, caller)
    return value


def validate_config(cfg: Any) -> None:
    """Check and normalise every field of the dataclass instance ``cfg`` (in place)."""
    cls = type(cfg)
    study = getattr(cls, "study", "")
    caller = f"study {study}" if study else cls.__name__
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = check_field(getattr(cfg, f.name), hints[f.name], _constraint(f), f.name, caller)
        object.__setattr__(cfg, f.name, value)  # frozen: normalised list -> tuple, np -> int


class StudyConfig:
    """Base of a study's frozen Config: ``__post_init__`` validates from the constraints.

    A subclass with cross-field rules defines ``__post_init__``, calls
    ``super().__post_init__()`` first and then checks with :func:`hwlab.errors.check`.
    """

    study: ClassVar[str] = ""  # the study's registry name, for "PARAM of study NAME ..."

    def __post_init__(self) -> None:
        validate_config(self)


def constraints(config_cls: type) -> dict[str, dict]:
    """Field name -> ``{"type", "default", "help", "choices", "range", "inclusive",
    "nonempty", "kind", "element", "is_tuple", "text"}`` for a Config dataclass.

    The CLI builds its flags from this, the dashboard its form (choices -> select boxes,
    ranges -> number inputs).
    """
    hints = typing.get_type_hints(config_cls)
    out = {}
    for f in dataclasses.fields(config_cls):
        c = _constraint(f)
        elem, is_tuple = _element(hints[f.name])
        out[f.name] = {"type": hints[f.name], "default": f.default, **c.as_dict(),
                       "element": elem, "is_tuple": is_tuple,
                       "text": describe(hints[f.name], c)}
    return out
