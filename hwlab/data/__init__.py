"""Datasets as tensors: built-in (``digits``, ``mnist5k``, ``synthetic``, text ``pydoc``) and local
files.

>>> from hwlab.data import load, batches
>>> train = load("mnist5k", "train", seed=0)   # Split: x N x 1 x 28 x 28 in [0, 1], y int64
>>> for x, y in batches(train, 128, shuffle=True, seed=0): ...

Nothing is ever downloaded; file formats are parsed without pickle.
"""

from hwlab.data._iter import as_xy, iter_batches
from hwlab.data._load import DATASETS, check_dataset, load
from hwlab.data._split import SPLITS, Split, batches
from hwlab.data._text import TextSplit

__all__ = ["DATASETS", "SPLITS", "Split", "TextSplit", "as_xy", "batches", "check_dataset", "iter_batches",
           "load"]
