"""Result-row schema and validation shared by the SQLite ``Store`` and the ``MemoryStore``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hwlab.errors import check, fail, is_number

# Result columns and their SQLite types, in table order.
_COLUMN_TYPES = {
    "run_id": "TEXT", "key": "TEXT", "module": "TEXT", "method": "TEXT", "model": "TEXT",
    "dataset": "TEXT", "variant": "TEXT", "fault_model": "TEXT", "fault_rate": "REAL",
    "trial": "INTEGER", "seed": "INTEGER", "accuracy": "REAL", "latency_ms": "REAL",
    "memory_bytes": "INTEGER", "timesteps": "REAL", "params": "INTEGER", "extra": "TEXT",
    # schema 2: the number format as its own column, and the fault-injection metrics
    "dtype": "TEXT", "sdc": "REAL", "critical_sdc": "REAL", "top5": "REAL", "loss": "REAL",
}
RESULT_COLUMNS = tuple(_COLUMN_TYPES)
METRIC_COLUMNS = ("accuracy", "sdc", "critical_sdc", "top5", "loss")  # built-in metric columns
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # user metric column names
_RESERVED = frozenset({"study", "rowid", "oid", "_rowid_"})  # names the DataFrame or SQLite use
_INT_COLUMNS = tuple(c for c, t in _COLUMN_TYPES.items() if t == "INTEGER")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # NumPy / torch scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


# One encoder for every row (json.dumps with options builds a new one per call); it holds no state.
_ENCODER = json.JSONEncoder(sort_keys=True, default=_json_default, allow_nan=True)


def _to_json(value: Any, param: str, caller: str) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError):
        raise fail(param, caller, "JSON-serialisable", value) from None


def _cell(column: str, value: Any, caller: str = "Store.add_results") -> Any:
    """Validate and convert one result value to its SQLite type (None stays NULL)."""
    if value is None:
        return None
    kind = _COLUMN_TYPES.get(column, "REAL")  # user metric columns are REAL
    if column == "extra":
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError:
                raise fail("extra", caller, "a dict or a JSON string", value) from None
            return value
        return _to_json(value, "extra", caller)
    if kind == "TEXT":
        check(isinstance(value, str), column, caller, "a str or None", value)
        return value
    check(is_number(value, finite=False, nan=True), column, caller, "a number or None", value)
    if kind == "REAL":
        value = float(value)
        return None if math.isnan(value) else value  # NaN is "missing": NULL
    check(float(value).is_integer(), column, caller, "an integer or None", value)
    return int(value)


def _identify(study: Any, config: Any, fingerprint: Any, caller: str) -> tuple[str, str]:
    """(config JSON, fingerprint) of a run; the fingerprint defaults to a hash of the JSON."""
    check(isinstance(study, str) and bool(study), "study", caller, "a non-empty str", study)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    check(isinstance(config, dict), "config", caller, "a dict or a dataclass", config)
    config_json = _to_json(config, "config", caller)
    if fingerprint is None:
        fingerprint = hashlib.sha256(config_json.encode()).hexdigest()[:16]
    check(isinstance(fingerprint, str) and bool(fingerprint), "fingerprint", caller,
          "a non-empty str or None", fingerprint)
    return config_json, fingerprint




def _check_column_names(names: Any, caller: str) -> list[str]:
    """User metric column names, validated before they can reach SQL."""
    check(not isinstance(names, str) and isinstance(names, Iterable), "names", caller,
          "a list of column names", names)
    names = list(names)
    for n in names:
        ok = isinstance(n, str) and _IDENTIFIER.fullmatch(n) is not None
        check(ok and n not in _RESERVED, "names", caller,
              "column names matching [a-z_][a-z0-9_]* (at most 63 characters, not study, "
              "rowid, oid or _rowid_)", n)
    return names


def _row_values(run_id: str, rows: list, known: tuple, caller: str) -> list[tuple]:
    """Validated value tuples (in ``known`` column order) for result rows; all or none.

    Each row's structure (a dict, known columns, its key and run_id) is checked per row; the
    values are validated column by column for the whole batch (a type test per cell, the
    per-value conversion of :func:`_cell` only where that test fails), so a batch of rows costs
    a few microseconds per row, not one call per cell.
    """
    names = set(known)
    for i, row in enumerate(rows):
        check(isinstance(row, dict), f"rows[{i}]", caller, "a dict", row)
        if not names.issuperset(row):
            unknown = sorted(set(row) - names)
            raise fail(f"column {unknown[0]!r}", caller,
                       f"one of {', '.join(known)} (add metric columns with "
                       "Store.ensure_columns)", row)
        key = row.get("key")
        check(isinstance(key, str) and bool(key), f"key of rows[{i}]", caller,
              "a non-empty str", key)
        check(row.get("run_id", run_id) == run_id, f"run_id of rows[{i}]", caller,
              f"absent or {run_id!r}", row.get("run_id"))
    columns = [_column(c, [row.get(c) for row in rows], caller) for c in known[1:]]
    return [(run_id, *cells) for cells in zip(*columns)] if columns else \
        [(run_id,) for _ in rows]


def _column(column: str, values: list, caller: str) -> list:
    """:func:`_cell` of every value of one column (fast paths for plain str / int / float)."""
    kind = _COLUMN_TYPES.get(column, "REAL")  # user metric columns are REAL
    if column == "extra":
        return [_cell(column, v, caller) for v in values]
    if kind == "TEXT":
        if all(v is None or type(v) is str for v in values):
            return values
    elif kind == "REAL":
        if all(v is None or type(v) is float or type(v) is int for v in values):
            return [None if v is None or math.isnan(v) else float(v) for v in values]  # NaN: NULL
    elif all(v is None or type(v) is int for v in values):  # INTEGER
        return values
    return [_cell(column, v, caller) for v in values]


def _typed(df, columns):
    """Integer columns as pandas Int64 (NULLs kept), REAL ones as float64."""
    for c in _INT_COLUMNS:
        df[c] = df[c].astype("Int64")  # integers with NULLs stay integers
    for c in columns:
        if _COLUMN_TYPES.get(c, "REAL") == "REAL":
            df[c] = df[c].astype("float64")
    return df


def _frame(records: list[tuple], columns: tuple):
    """The ``results()`` DataFrame from value tuples ``(*columns, study)``, built column by
    column: integers as pandas Int64 (NULLs kept, exact beyond 2**53), REAL ones as float64
    (NULL = NaN), text inferred by pandas as ``from_records`` does."""
    import numpy as np
    import pandas as pd

    names = [*columns, "study"]
    values = list(zip(*records)) if records else [()] * len(names)
    data = {}
    for c, vals in zip(names, values):
        kind = "TEXT" if c == "study" else _COLUMN_TYPES.get(c, "REAL")
        if kind == "INTEGER":
            data[c] = pd.array(list(vals), dtype="Int64")
        elif kind == "REAL":
            data[c] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
        else:
            data[c] = list(vals) if vals else np.array([], dtype=object)
    return pd.DataFrame(data, columns=names)


_BER_FAULTS = ("bitflip", "stuck0", "stuck1", "burst", "row", "asym")  # stored-bit faults


def _extra_sql(column: str, key: str) -> str:
    """``json_extract`` of ``extra``'s top-level ``key`` (a validated identifier). extra may
    hold NaN / Infinity (Python's JSON), which SQLite's JSON refuses: such a row is read with
    them as null / 1e999, and a row that is still not JSON reads NULL (never an error)."""
    fixed = (f"replace(replace(replace({column}, '-Infinity', '-1e999'), 'Infinity', '1e999'), "
             f"'NaN', 'null')")
    return (f"(CASE WHEN json_valid({column}) THEN json_extract({column}, '$.{key}') "
            f"WHEN json_valid({fixed}) THEN json_extract({fixed}, '$.{key}') END)")


def _expression(name: Any, columns: tuple, caller: str, table: str = "results") -> str:
    """The SQL expression of a result column, ``study`` or ``extra.KEY``: validated names only
    (never user text), so no name can inject SQL. With ``table="result_sums"`` the columns are
    those of the summary table (``extra.dtype`` is its ``extra_dtype``)."""
    if name == "study":
        return "runs.study"
    if isinstance(name, str) and name.startswith("extra."):
        key = name[len("extra."):]
        check(_IDENTIFIER.fullmatch(key) is not None, "column", caller,
              "extra.KEY with KEY matching [a-z_][a-z0-9_]*", name)
        if table != "results":
            return f'{table}."extra_{key}"'
        return _extra_sql("results.extra", key)
    check(isinstance(name, str) and name in columns, "column", caller,
          f"one of {', '.join(columns)}, study or extra.KEY", name)
    return f'{table}."{name}"'


def _typed_some(df, columns):
    """:func:`_typed` of the result columns among ``columns`` (the others as they came)."""
    for c in columns:
        kind = _COLUMN_TYPES.get(c, "REAL" if c != "study" and not c.startswith("extra.")
                                 else None)
        if kind == "INTEGER":
            df[c] = df[c].astype("Int64")
        elif kind == "REAL":
            df[c] = df[c].astype("float64")
    return df
