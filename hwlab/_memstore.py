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

    def set_study_kinds(self, study: str, latency_kind, memory_kind) -> None:
        self.__dict__.setdefault("_kinds", {})[study] = (latency_kind, memory_kind)

    def study_kinds(self) -> dict:
        return dict(self.__dict__.get("_kinds", {}))

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


def _filtered(store, caller: str, study=None, run_id=None, module=None, where=None, clean=None,
              ber=None, aggregates=True, near=None, contains=None):
    """``store.results()`` rows that pass the filters of :meth:`hwlab.store.Store.aggregate`
    (pandas: the same selections as the SQL ones), with ``extra.KEY`` readers."""
    import numpy as np

    from hwlab._figure_data import ber_rows, clean_rows, is_aggregate

    df = store.results(study=study, run_id=run_id, module=module)
    keep = np.ones(len(df), dtype=bool)
    check(where is None or isinstance(where, dict), "where", caller,
          "a dict of column -> value, None or a list of values", where)
    for column, value in (where or {}).items():
        col = _column(df, column, store.columns(), caller)
        if value is None:
            keep &= col.isna().to_numpy()
        elif isinstance(value, (list, tuple, set, frozenset)):
            keep &= col.isin(list(value)).fillna(False).to_numpy(bool)
        else:
            keep &= (col == value).fillna(False).to_numpy(bool)
    if clean is not None:
        keep &= clean_rows(df).to_numpy(bool) == bool(clean)
    if ber is not None:
        keep &= ber_rows(df).fillna(False).to_numpy(bool) == bool(ber)
    if not aggregates:
        keep &= ~is_aggregate(df).fillna(False).to_numpy(bool)
    for column, value in (near or {}).items():
        col = _column(df, column, store.columns(), caller).astype("float64")
        keep &= np.isclose(col, float(value))
    if contains is not None:
        keep &= df["extra"].astype("string").str.contains(f'"{contains}"', regex=False) \
            .fillna(False).to_numpy(bool)
    return df[keep].reset_index(drop=True)


def _column(df, name, columns, caller):
    """A result column, ``study`` or ``extra.KEY`` of ``df`` (names checked as the Store does)."""
    from hwlab._figure_data import extra_number
    from hwlab._rows import _IDENTIFIER

    if isinstance(name, str) and name.startswith("extra."):
        key = name[len("extra."):]
        check(_IDENTIFIER.fullmatch(key) is not None, "column", caller,
              "extra.KEY with KEY matching [a-z_][a-z0-9_]*", name)
        parsed = [json.loads(e).get(key) if isinstance(e, str) and e.startswith("{") else None
                  for e in df["extra"]]
        import pandas as pd

        out = pd.Series(parsed, index=df.index, dtype="object")
        if all(v is None or isinstance(v, (int, float)) for v in parsed):
            return extra_number(df, key) if len(df) else out.astype("float64")
        return out
    check(isinstance(name, str) and (name in columns or name == "study"), "column", caller,
          f"one of {', '.join(columns)}, study or extra.KEY", name)
    return df[name]


def _aggregate(self, by=(), values=(), *, weight="extra.n_samples", lcm=(), **filters):
    """:meth:`hwlab.store.Store.aggregate` on the rows in memory (pandas)."""
    import pandas as pd

    from hwlab.store import _values_lcm

    caller = "Store.aggregate"
    filters.pop("_rows", None)
    df = _filtered(self, caller, **filters)
    by, values, lcm = list(by), list(values), list(lcm)
    cols = {c: _column(df, c, self.columns(), caller) for c in {*by, *values, *lcm}}
    w = _column(df, weight, self.columns(), caller).astype("float64") if weight else None
    frame = pd.DataFrame({c: s.to_numpy() for c, s in cols.items()}, index=df.index)
    keys = [f"__{i}" for i in range(len(by))]
    for k, c in zip(keys, by):
        frame[k] = cols[c].astype("object").where(cols[c].notna(), "\x00null")
    if not by:
        frame["__all"] = 0
        keys = ["__all"]
    out = []
    for _, g in frame.groupby(keys, sort=False, dropna=False):
        row = {c: (None if pd.isna(g[c].iloc[0]) else g[c].iloc[0]) for c in by}
        row["rows"] = len(g)
        for v in values:
            x = g[v].astype("float64")
            has = x.notna()
            row.update({f"{v}_n": float(has.sum()), f"{v}_sum": x.sum(min_count=1),
                        f"{v}_sumsq": (x * x).sum(min_count=1), f"{v}_min": x.min(),
                        f"{v}_max": x.max()})
            if w is not None:
                wg = w.loc[g.index]
                both = has & wg.notna()
                row.update({f"{v}_wn": float(both.sum()),
                            f"{v}_w": wg[has].sum(min_count=1),
                            f"{v}_wsum": (x * wg).sum(min_count=1)})
        for v in lcm:
            row[f"{v}_lcm"] = _values_lcm(sorted(set(g[v].dropna().tolist())))
        out.append(row)
    if not out and not by:
        out = [{"rows": 0}]
    return pd.DataFrame(out, columns=[*by, "rows"] + [c for c in (out[0] if out else {})
                                                      if c not in by and c != "rows"])


def _select(self, columns=None, *, limit=None, offset=0, **filters):
    """:meth:`hwlab.store.Store.select` on the rows in memory."""
    caller = "Store.select"
    df = _filtered(self, caller, **filters)
    wanted = [*self.columns(), "study"] if columns is None else list(columns)
    out = df.assign(**{c: _column(df, c, self.columns(), caller) for c in wanted
                       if c.startswith("extra.")})[wanted]
    if limit is not None:
        out = out.iloc[offset:offset + limit]
    return out.reset_index(drop=True)


def _count(self, **filters) -> int:
    return len(_filtered(self, "Store.count", **filters))


MemoryStore.aggregate = _aggregate
MemoryStore.select = _select
MemoryStore.count = _count
