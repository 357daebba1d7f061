"""hwlab: the shared core of the hardware-aware DNN reliability and efficiency lab.

Submodules are imported lazily (``hwlab.data``, ``hwlab.models``, ``hwlab.train``, ``hwlab.zoo``,
``hwlab.meters``, ``hwlab.store``, ``hwlab.executors``, ``hwlab.studies``) so that ``import hwlab``
stays cheap for the CLI.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "models", "train", "zoo", "meters", "store", "executors", "studies", "errors",
               "graph", "seeds")
__all__ = [  # noqa: RUF022 - the submodules, then the version
    "data", "models", "train", "zoo", "meters", "store", "executors", "studies", "errors",
    "graph", "seeds", "__version__",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"hwlab.{name}")
    raise AttributeError(f"module 'hwlab' has no attribute {name!r}")
