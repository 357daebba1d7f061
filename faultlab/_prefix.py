"""Data helpers kept for faultlab's older importers: use ``hwlab.data.as_xy`` / ``iter_batches``.

faultlab's one prefix cache on ``hwlab.graph`` cut points is :class:`faultlab._evaluator.Evaluator`
(campaigns, vulnerability and FT-ClipAct's threshold search).
"""

from __future__ import annotations

__all__ = ["as_xy", "iter_batches"]


def as_xy(data, caller: str, limit: int | None = None):
    """``hwlab.data.as_xy`` (validated ``(x, y)`` tensors; ``limit``: a stratified subset)."""
    from hwlab.data import as_xy as _as_xy

    return _as_xy(data, caller, limit)


def iter_batches(data, batch_size: int, caller: str):
    """``hwlab.data.iter_batches``: validated ``(x, y)`` batches of ``data``, streamed."""
    from hwlab.data import iter_batches as _iter

    return _iter(data, batch_size, caller)
