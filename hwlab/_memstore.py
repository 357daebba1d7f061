"""``MemoryStore``: the :class:`~hwlab.store.Store` interface kept in memory (``store=None``).

For a run that should not touch the disk (a campaign with ``store=None``, a quick experiment in a
notebook): the same methods ``run_items``, ``run_context`` and the studies use, the same row
validation (unknown columns, wrong types, NaN -> NULL, JSON ``extra``) and the same
``results()`` DataFrame, with no SQLite at all. Nothing survives the process: there is nothing
to resume from after a kill.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

from hwlab.errors import check

__all__ = ["MemoryStore"]

_COUNTER = itertools.count()


class MemoryStore:
    """An in-memory results store with the methods of :class:`hwlab.store.Store`."""

    path = None  # not a file

    def __init__(self):
        self._runs: dict[str, dict] = {}
        self._rows: dict[str, dict[str, tuple]] = {}  # run_id -> key -> row values
        self._extra_columns: list[str] = []

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._runs)} runs)"

    # -- columns -----------------------------------------------------------------------------
    def columns(self) -> tuple[str, ...]:
        from hwlab._rows import RESULT_COLUMNS

        return RESULT_COLUMNS + tuple(self._extra_columns)

    def ensure_columns(self, names: Iterable[str]) -> tuple[str, ...]:
        from hwlab._rows import _check_column_names

        names = _check_column_names(names, "MemoryStore.ensure_columns")
        added = [n for n in dict.fromkeys(names) if n not in self.columns()]
        self._extra_columns += added
        return tuple(added)

    # -- runs --------------------------------------------------------------------------------
    def _find(self, study, fingerprint) -> str | None:
        return next((r for r, v in self._runs.items()
                     if v["study"] == study and v["fingerprint"] == fingerprint), None)

    def find_run(self, study: str, config: Any, fingerprint: str | None = None) -> str | None:
        from hwlab._rows import _identify

        _, fingerprint = _identify(study, config, fingerprint, "MemoryStore.find_run")
        return self._find(study, fingerprint)

    def open_run(self, study: str, config: Any, fingerprint: str | None = None) -> str:
        from hwlab._rows import _identify
        from hwlab.store import _now, code_version

        config_json, fingerprint = _identify(study, config, fingerprint, "MemoryStore.open_run")
        run_id = self._find(study, fingerprint)
        if run_id is not None:
            self._runs[run_id].update(status="running", finished=None)
            return run_id
        run_id = f"{study}-memory-{next(_COUNTER)}"
        self._runs[run_id] = {"study": study, "config": config_json, "fingerprint": fingerprint,
                              "code_version": code_version(), "status": "running",
                              "started": _now(), "finished": None}
        self._rows[run_id] = {}
        return run_id

    def _check_run(self, run_id, caller: str) -> None:
        check(isinstance(run_id, str) and run_id in self._runs, "run_id", caller,
              "the id of a run in this store", run_id)

    def finish_run(self, run_id: str, status: str = "done") -> None:
        from hwlab.store import _now

        check(status in ("done", "failed"), "status", "MemoryStore.finish_run",
              "'done' or 'failed'", status)
        self._check_run(run_id, "MemoryStore.finish_run")
        self._runs[run_id].update(status=status, finished=_now())

    def run_state(self, run_id: str) -> dict:
        self._check_run(run_id, "MemoryStore.run_state")
        r = self._runs[run_id]
        return {"status": r["status"], "finished": r["finished"],
                "n_results": len(self._rows[run_id])}

    def revert_run(self, run_id: str, state: dict | None) -> None:
        self._check_run(run_id, "MemoryStore.revert_run")
        if state is None:
            n = len(self._rows[run_id])
            check(n == 0, "run_id", "MemoryStore.revert_run", "a new run without result rows "
                  "(state=None deletes it)", f"{run_id} ({n} rows)")
            del self._runs[run_id], self._rows[run_id]
            return
        self._runs[run_id].update(status=state["status"], finished=state.get("finished"))

    def config(self, run_id: str) -> dict:
        self._check_run(run_id, "MemoryStore.config")
        return json.loads(self._runs[run_id]["config"])

    # -- results -----------------------------------------------------------------------------
    def done_keys(self, run_id: str) -> set[str]:
        self._check_run(run_id, "MemoryStore.done_keys")
        return set(self._rows[run_id])

    def add_results(self, run_id: str, rows: Iterable[dict]) -> int:
        """Validate like ``Store.add_results`` (all or none); keys already stored are skipped."""
        from hwlab._rows import _row_values

        self._check_run(run_id, "MemoryStore.add_results")
        values = _row_values(run_id, list(rows), self.columns(), "MemoryStore.add_results")
        stored = self._rows[run_id]
        written = 0
        for v in values:
            if v[1] not in stored:  # the first write of a key wins
                stored[v[1]] = v
                written += 1
        return written

    def results(self, study: str | None = None, run_id: str | None = None,
                module: str | None = None):
        from hwlab._rows import _frame

        columns = self.columns()
        records = []
        for rid, rows in self._rows.items():
            s = self._runs[rid]["study"]
            if (study is not None and s != study) or (run_id is not None and rid != run_id):
                continue
            for v in rows.values():
                v = v + (None,) * (len(columns) - len(v))  # columns added after the row
                if module is None or v[columns.index("module")] == module:
                    records.append((*v, s))
        return _frame(records, columns)

    def runs(self):
        import pandas as pd

        cols = ["run_id", "study", "config", "fingerprint", "code_version", "status", "started",
                "finished", "n_results"]
        return pd.DataFrame([{"run_id": r, **v, "n_results": len(self._rows[r])}
                             for r, v in self._runs.items()], columns=cols)
