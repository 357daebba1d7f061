"""Rows kept in memory: what a campaign with ``store=None`` writes to, instead of a temporary file.

:class:`MemoryStore` has the part of :class:`hwlab.store.Store`'s interface that
:func:`hwlab.studies.run_context` and :func:`hwlab.studies.run_items` use, and its ``results``
frame has the same columns and dtypes as the SQLite store's (tested), so a campaign returns the
same table with or without a store. Nothing is written to disk; nothing survives the call.
"""

from __future__ import annotations

import json
import math

from hwlab.errors import check
from hwlab.store import RESULT_COLUMNS

__all__ = ["MemoryStore"]

_INT = ("trial", "seed", "memory_bytes", "params")
_TEXT = ("run_id", "key", "module", "method", "model", "dataset", "variant", "fault_model",
         "extra", "dtype")


class MemoryStore:
    """One run's result rows in a dict (``store=None``); see the module docstring."""

    def __init__(self):
        self.columns_ = list(RESULT_COLUMNS)
        self.rows: dict[str, dict] = {}
        self.run_id, self.study, self.config_, self.status = None, None, None, None

    def __repr__(self) -> str:
        return f"MemoryStore({len(self.rows)} rows)"

    # -- runs (one per store) -------------------------------------------------------------------
    def find_run(self, study, config, fingerprint=None):
        return self.run_id

    def open_run(self, study, config, fingerprint=None) -> str:
        if self.run_id is None:
            self.run_id, self.study, self.config_ = f"{study}-memory", study, config
        self.status = "running"
        return self.run_id

    def run_state(self, run_id) -> dict:
        return {"status": self.status, "finished": None, "n_results": len(self.rows)}

    def revert_run(self, run_id, state) -> None:
        if state is None:
            self.run_id = self.status = None
        else:
            self.status = state["status"]

    def finish_run(self, run_id, status: str = "done") -> None:
        self.status = status

    def config(self, run_id) -> dict:
        return dict(self.config_ or {})

    # -- results --------------------------------------------------------------------------------
    def ensure_columns(self, names) -> tuple[str, ...]:
        added = tuple(n for n in dict.fromkeys(names) if n not in self.columns_)
        self.columns_.extend(added)
        return added

    def columns(self) -> tuple[str, ...]:
        return tuple(self.columns_)

    def done_keys(self, run_id) -> set[str]:
        return set(self.rows)

    def add_results(self, run_id, rows) -> int:
        written = 0
        for row in rows:
            unknown = sorted(set(row) - set(self.columns_))
            check(not unknown, f"column {unknown[0] if unknown else ''!r}",
                  "MemoryStore.add_results", f"one of {', '.join(self.columns_)}", row)
            if row["key"] in self.rows:
                continue
            cells = {c: row.get(c) for c in self.columns_}
            cells["run_id"] = run_id  # extra (a dict) becomes JSON text in results()
            self.rows[row["key"]] = cells
            written += 1
        return written

    def results(self, study=None, run_id=None, module=None):
        """The rows as a DataFrame with the SQLite store's columns and dtypes (plus ``study``)."""
        import numpy as np
        import pandas as pd

        rows = list(self.rows.values())
        data = {}
        for c in self.columns_:
            values = [r[c] for r in rows]
            if c == "extra":
                values = [json.dumps(v, sort_keys=True, allow_nan=True) if isinstance(v, dict)
                          else v for v in values]
            if c in _INT:
                data[c] = pd.array(values, dtype="Int64")
            elif c not in _TEXT:
                data[c] = np.array([math.nan if v is None else v for v in values], dtype=float)
            else:  # pandas infers the dtype as it does for the SQLite store's frame
                data[c] = pd.Series(values, dtype=None if values else object)
        df = pd.DataFrame(data, columns=self.columns_)
        df["study"] = self.study
        return df
