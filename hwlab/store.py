"""The results store: one SQLite file (WAL mode) with a row per study run and a row per measurement.

A measurement is keyed by ``(run_id, key)``; writing a key that is already stored is a no-op, so an
interrupted study that is started again with the same config resumes where it stopped
(:meth:`Store.open_run` reuses the run with the same study and config fingerprint).

Safety: before SQLite ever opens a file, its 100-byte header is read as plain bytes and checked for
the hwlab application id and schema version (``PRAGMA application_id`` / ``user_version``), so a
foreign file, another program's SQLite database or a store written by a newer hwlab is refused with
a clear error and left byte-for-byte untouched (even opening SQLite in WAL mode would create
``-wal``/``-shm`` files and may rewrite the header). Every write runs in its own ``BEGIN IMMEDIATE``
transaction on a short-lived connection with a busy timeout, so several processes can write to one
store at once. All SQL is parameterised.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from hwlab._memstore import MemoryStore
from hwlab._rows import (
    _BER_FAULTS,
    _COLUMN_TYPES,
    _IDENTIFIER,
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    _check_column_names,
    _expression,
    _extra_sql,
    _identify,
    _row_values,
    _typed,
    _typed_some,
)
from hwlab.errors import check, check_int, fail, is_number

__all__ = ["APPLICATION_ID", "METRIC_COLUMNS", "RESULT_COLUMNS", "SCHEMA_VERSION", "MemoryStore",
           "Store",
           "default_store_path"]

log = logging.getLogger(__name__)

APPLICATION_ID = 0x48574C42  # "HWLB": marks the file as an hwlab store (SQLite header offset 68)
SCHEMA_VERSION = 2  # bumped on every schema change (SQLite header offset 60); see _MIGRATIONS
BUSY_TIMEOUT_MS = 30_000  # writers from several processes wait this long for the write lock

# Each migration takes a store from version k to k + 1: ALTER TABLE statements only (the rows
# are kept as they are; the new columns are NULL in old rows, never filled in by guessing).
_MIGRATIONS = {
    1: [f"ALTER TABLE results ADD COLUMN {c} {_COLUMN_TYPES[c]}"
        for c in ("dtype", "sdc", "critical_sdc", "top5", "loss")],
}
_RUN_STATUSES = ("running", "done", "failed")

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, study TEXT NOT NULL, config TEXT NOT NULL,
        fingerprint TEXT NOT NULL, code_version TEXT, status TEXT NOT NULL,
        started TEXT NOT NULL, finished TEXT, UNIQUE (study, fingerprint))""",
    "CREATE TABLE IF NOT EXISTS results (\n"
    + ",\n".join(
        f"{c} {t} NOT NULL" if c in ("run_id", "key") else f"{c} {t}"
        for c, t in _COLUMN_TYPES.items()
    )
    + ",\nFOREIGN KEY (run_id) REFERENCES runs (run_id), UNIQUE (run_id, key))",
    # The UNIQUE (run_id, key) index also serves every lookup by run_id (it is its prefix).
    "CREATE INDEX IF NOT EXISTS results_module ON results (module)",
]
_SQLITE_MAGIC = b"SQLite format 3\x00"
_DAMAGE = ("malformed", "not a database", "disk i/o error", "file is encrypted",
           "database corrupt")  # SQLite messages of a damaged file (not of a busy one)


def _is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` (sqlite3, or pandas wrapping it) says the database file is damaged."""
    while exc is not None:
        if isinstance(exc, sqlite3.DatabaseError) and (
                type(exc) is sqlite3.DatabaseError
                or any(m in str(exc).lower() for m in _DAMAGE)):
            return True
        if type(exc).__name__ == "DatabaseError" and any(m in str(exc).lower() for m in _DAMAGE):
            return True  # pandas.errors.DatabaseError
        exc = exc.__cause__ or exc.__context__
    return False


def _damaged(path: Path, exc: BaseException):
    detail = " ".join(str(exc).split())[-160:]
    return fail("path", "Store", "an undamaged hwlab store (restore it from a backup or use "
                "another --store)", f"{path} (SQLite: {detail})")


def default_store_path() -> Path:
    """``$HWLAB_HOME/hwlab.sqlite`` (``HWLAB_HOME`` read now; default ``./hwlab-runs``)."""
    return Path(os.environ.get("HWLAB_HOME") or "hwlab-runs") / "hwlab.sqlite"


@lru_cache(maxsize=1)
def code_version() -> str:
    """``hwlab.__version__`` plus ``+g<short hash>`` when git answers quickly (never fails)."""
    import hwlab

    version = hwlab.__version__
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=2, check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            version += f"+g{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _check_header(path: Path) -> None:
    """Refuse anything but a missing/empty file or an hwlab store of a known schema version.

    Reads the SQLite header as plain bytes, so a refused file is never touched by SQLite.
    """
    if not path.exists():
        return
    check(path.is_file(), "path", "Store", "a file path (not a directory)", str(path))
    with open(path, "rb") as f:
        head = f.read(100)
    if not head:
        return  # an empty file is an empty SQLite database
    what = f"an hwlab store (SQLite application id {APPLICATION_ID:#x})"
    check(len(head) == 100 and head.startswith(_SQLITE_MAGIC), "path", "Store", what,
          f"{path} (not an SQLite database)")
    app_id = int.from_bytes(head[68:72], "big")
    version = int.from_bytes(head[60:64], "big")
    check(app_id == APPLICATION_ID, "path", "Store", what,
          f"{path} (an SQLite database with application id {app_id:#x})")
    check(version <= SCHEMA_VERSION, "path", "Store",
          f"a store of schema version <= {SCHEMA_VERSION} (upgrade hwlab to read it)",
          f"{path} (schema version {version})")


class Store:
    """An SQLite results store (WAL mode); see the module docstring.

    Parameters
    ----------
    path : path-like or None
        The store file; ``None`` means ``$HWLAB_HOME/hwlab.sqlite`` (``HWLAB_HOME`` read at call
        time, default ``./hwlab-runs``). Missing folders are created.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_store_path()
        self._columns_cache: tuple[str, ...] | None = None
        _check_header(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._initialise()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @staticmethod
    def memory():
        """A :class:`~hwlab._memstore.MemoryStore`: the same interface, rows kept in memory."""
        return MemoryStore()

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection; a damaged file becomes one error naming the path."""
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None)
            with closing(conn):
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")  # safe in WAL mode, much faster
                yield conn
        except Exception as exc:
            if _is_damage(exc):
                raise _damaged(self.path, exc) from None
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front (no deadlocks)."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _initialise(self) -> None:
        # The header was checked above; re-check under the write lock, since another process may
        # have created the file in between. Tables and ids are written in one rollback-journal
        # transaction, and WAL mode is switched on only afterwards, so no reader ever sees a
        # half-made store.
        with self._write() as conn:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            n_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id == 0 and n_tables == 0:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("application", "hwlab"), ("schema_version", str(SCHEMA_VERSION)),
                     ("created", _now()), ("code_version", code_version())],
                )
                log.info("created hwlab store %s", self.path)
            else:
                what = f"an hwlab store (SQLite application id {APPLICATION_ID:#x})"
                check(app_id == APPLICATION_ID, "path", "Store", what, str(self.path))
                check(version <= SCHEMA_VERSION, "path", "Store",
                      f"a store of schema version <= {SCHEMA_VERSION}", str(self.path))
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                check({"meta", "runs", "results"} <= tables, "path", "Store",
                      "an hwlab store with tables meta, runs and results",
                      f"{self.path} (tables {sorted(tables)})")
                if version < SCHEMA_VERSION:
                    self._migrate(conn, version)
        # Switching to WAL needs the database to itself and does not wait on the busy handler,
        # so retry while another process (also opening this store) holds a lock.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        with self._connect() as conn:
            while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Bring an older store up to :data:`SCHEMA_VERSION` inside the open write transaction.

        Only ALTER TABLE ... ADD COLUMN: every stored row keeps its values, the new columns are
        NULL in rows written before (a v1 campaign's number format stays in ``variant``; it is
        not copied into ``dtype`` by guessing).
        """
        before = self._table_columns(conn)
        for v in range(version, SCHEMA_VERSION):
            check(v in _MIGRATIONS, "path", "Store", f"a store of schema version "
                  f"{', '.join(map(str, sorted(_MIGRATIONS)))} or {SCHEMA_VERSION}",
                  f"{self.path} (schema version {v})")
            for statement in _MIGRATIONS[v]:
                column = statement.split()[5]
                if column not in before:  # a half-done earlier attempt cannot exist (one
                    conn.execute(statement)  # transaction), but never add a column twice
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     ("schema_version", str(SCHEMA_VERSION)))
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     (f"migrated_from_{version}", _now()))
        log.warning("migrated hwlab store %s from schema version %d to %d (new columns are "
                    "NULL in the %d stored rows)", self.path, version, SCHEMA_VERSION,
                    conn.execute("SELECT count(*) FROM results").fetchone()[0])

    @staticmethod
    def _table_columns(conn: sqlite3.Connection) -> tuple[str, ...]:
        return tuple(r[1] for r in conn.execute("PRAGMA table_info(results)"))

    def columns(self) -> tuple[str, ...]:
        """Every result column: :data:`RESULT_COLUMNS` then the user metric columns (REAL)."""
        with self._connect() as conn:
            return self._table_columns(conn)

    def ensure_columns(self, names: Iterable[str]) -> tuple[str, ...]:
        """Add REAL result columns for user metrics (``names`` already present are kept).

        A name must match ``[a-z_][a-z0-9_]*`` (at most 63 characters) and not be ``study`` or
        an SQLite row-id alias; built-in columns are accepted as they are (nothing to add).
        Returns the names that were added. Identifiers are validated before they reach SQL, so
        no name can inject SQL.
        """
        names = _check_column_names(names, "Store.ensure_columns")
        added = []
        with self._write() as conn:
            present = set(self._table_columns(conn))
            for n in dict.fromkeys(names):
                if n not in present:
                    conn.execute(f'ALTER TABLE results ADD COLUMN "{n}" REAL')  # n validated
                    added.append(n)
        return tuple(added)

    # -- runs --------------------------------------------------------------------------------
    def open_run(self, study: str, config: Any, fingerprint: str | None = None) -> str:
        """Start a run of ``study`` with ``config`` (a dict or a dataclass) and return its id.

        ``fingerprint`` defaults to a SHA-256 of the config JSON. An existing run with the same
        study and fingerprint is reused (resume): its status goes back to ``"running"``.
        """
        config_json, fingerprint = _identify(study, config, fingerprint, "Store.open_run")
        with self._write() as conn:
            row = conn.execute("SELECT run_id FROM runs WHERE study = ? AND fingerprint = ?",
                               (study, fingerprint)).fetchone()
            if row is not None:
                conn.execute("UPDATE runs SET status = 'running', finished = NULL, "
                             "code_version = ? WHERE run_id = ?", (code_version(), row[0]))
                log.info("resuming run %s of %s", row[0], study)
                return row[0]
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            run_id = f"{study}-{stamp}-{uuid.uuid4().hex[:6]}"
            conn.execute(
                "INSERT INTO runs (run_id, study, config, fingerprint, code_version, status, "
                "started, finished) VALUES (?, ?, ?, ?, ?, 'running', ?, NULL)",
                (run_id, study, config_json, fingerprint, code_version(), _now()),
            )
        return run_id

    def set_study_kinds(self, study: str, latency_kind: str | None,
                        memory_kind: str | None) -> None:
        """Record what ``study``'s ``latency_ms`` / ``memory_bytes`` mean (``Study`` does it when
        it opens a run), so readers of the store need not import the study to know it."""
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS study_kinds (study TEXT PRIMARY KEY, "
                         "latency_kind TEXT, memory_kind TEXT)")
            conn.execute("INSERT OR REPLACE INTO study_kinds VALUES (?, ?, ?)",
                         (study, latency_kind, memory_kind))

    def study_kinds(self) -> dict[str, tuple[str | None, str | None]]:
        """``{study: (latency kind, memory kind)}`` recorded by :meth:`set_study_kinds`."""
        with self._connect() as conn:
            known = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                 "name = 'study_kinds'").fetchone()
            if known is None:  # a store written before the kinds were recorded
                return {}
            rows = conn.execute("SELECT study, latency_kind, memory_kind FROM study_kinds")
            return {s: (lat, mem) for s, lat, mem in rows.fetchall()}

    def find_run(self, study: str, config: Any, fingerprint: str | None = None) -> str | None:
        """The id of the run ``open_run(study, config, fingerprint)`` would resume, or None."""
        _, fingerprint = _identify(study, config, fingerprint, "Store.find_run")
        with self._connect() as conn:
            row = conn.execute("SELECT run_id FROM runs WHERE study = ? AND fingerprint = ?",
                               (study, fingerprint)).fetchone()
        return None if row is None else row[0]

    def run_state(self, run_id: str) -> dict:
        """``{"status", "finished", "n_results"}`` of a run (to put it back with revert_run)."""
        with self._connect() as conn:
            self._check_run(conn, run_id, "Store.run_state")
            status, finished = conn.execute(
                "SELECT status, finished FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            n = conn.execute("SELECT count(*) FROM results WHERE run_id = ?",
                             (run_id,)).fetchone()[0]
        return {"status": status, "finished": finished, "n_results": n}

    def revert_run(self, run_id: str, state: dict | None) -> None:
        """Undo an ``open_run`` that did no work: put back the earlier ``run_state``.

        ``state=None`` means the run did not exist before: it is deleted, which is allowed only
        while it has no result rows. A resumed run gets its earlier status and finish time back
        (a refused resume leaves a finished run ``done``).
        """
        with self._write() as conn:
            self._check_run(conn, run_id, "Store.revert_run")
            n = conn.execute("SELECT count(*) FROM results WHERE run_id = ?",
                             (run_id,)).fetchone()[0]
            if state is None:
                check(n == 0, "run_id", "Store.revert_run", "a new run without result rows "
                      "(state=None deletes it)", f"{run_id} ({n} rows)")
                conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                return
            ok = isinstance(state, dict) and state.get("status") in _RUN_STATUSES
            check(ok, "state", "Store.revert_run", "a dict from Store.run_state or None", state)
            conn.execute("UPDATE runs SET status = ?, finished = ? WHERE run_id = ?",
                         (state["status"], state.get("finished"), run_id))

    def _check_run(self, conn: sqlite3.Connection, run_id: Any, caller: str) -> None:
        found = isinstance(run_id, str) and conn.execute(
            "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None
        check(found, "run_id", caller, "the id of a run in this store", run_id)

    def finish_run(self, run_id: str, status: str = "done") -> None:
        """Mark a run ``"done"`` or ``"failed"`` and record the finish time."""
        check(status in ("done", "failed"), "status", "Store.finish_run", "'done' or 'failed'",
              status)
        with self._write() as conn:
            self._check_run(conn, run_id, "Store.finish_run")
            conn.execute("UPDATE runs SET status = ?, finished = ? WHERE run_id = ?",
                         (status, _now(), run_id))

    def config(self, run_id: str) -> dict:
        """The config dict stored with a run."""
        with self._connect() as conn:
            row = conn.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        check(row is not None, "run_id", "Store.config", "the id of a run in this store", run_id)
        return json.loads(row[0])

    # -- results -----------------------------------------------------------------------------
    def done_keys(self, run_id: str) -> set[str]:
        """The keys already stored for a run (a re-run skips them)."""
        with self._connect() as conn:
            self._check_run(conn, run_id, "Store.done_keys")
            return {r[0] for r in conn.execute("SELECT key FROM results WHERE run_id = ?",
                                               (run_id,))}

    def add_results(self, run_id: str, rows: Iterable[dict]) -> int:
        """Write result rows of a run; keys already stored are skipped. Returns rows written.

        Each row is a dict with a ``"key"`` and any of :data:`RESULT_COLUMNS` (missing ones are
        NULL, never 0; a dict ``"extra"`` is stored as JSON). An unknown column is an error. All
        rows are written in one transaction (all or none).
        """
        rows = list(rows)
        known = self._known_columns(rows)
        values = _row_values(run_id, rows, known, "Store.add_results")
        if not values:
            return 0
        columns = ", ".join(f'"{c}"' for c in known)  # validated identifiers, quoted
        marks = ", ".join("?" * len(known))
        with self._write() as conn:
            self._check_run(conn, run_id, "Store.add_results")
            before = conn.total_changes
            # ON CONFLICT DO NOTHING: INSERT OR IGNORE restricted to the (run_id, key) constraint.
            conn.executemany(f"INSERT INTO results ({columns}) VALUES ({marks}) "
                             "ON CONFLICT (run_id, key) DO NOTHING", values)
            return conn.total_changes - before

    def _known_columns(self, rows: list) -> tuple[str, ...]:
        """The table's columns; read again when a row names one this object has not seen."""
        named = set().union(*(r for r in rows if isinstance(r, dict))) if rows else set()
        cached = self._columns_cache
        if cached is None or not named <= set(cached):
            cached = self.columns()  # another process may have added metric columns
            self._columns_cache = cached
        return cached

    def results(self, study: str | None = None, run_id: str | None = None,
                module: str | None = None):
        """Result rows as a pandas DataFrame: every result column (``columns()``) plus ``study``."""
        import pandas as pd

        where, params = [], []
        for column, value in (("runs.study", study), ("results.run_id", run_id),
                              ("results.module", module)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        columns = self.columns()
        sql = (f"SELECT {', '.join(f'results.{chr(34)}{c}{chr(34)}' for c in columns)}, "
               "runs.study "
               "FROM results JOIN runs ON runs.run_id = results.run_id"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY runs.started, results.rowid")
        with self._connect() as conn:
            df = pd.read_sql_query(sql, conn, params=params)
        return _typed(df, columns)

    # -- grouped and selected reads (the dashboard, `hwlab results`, `hwlab figure`) --------
    def _where(self, columns: tuple, caller: str, study=None, run_id=None, module=None,
               where=None, clean=None, ber=None, aggregates=True, near=None,
               contains=None, table: str = "results") -> tuple[str, list]:
        """The WHERE clause (and its parameters) of :meth:`aggregate` / :meth:`select`."""
        sql, params = [], []
        for column, value in (("study", study), ("run_id", run_id), ("module", module)):
            if value is not None:
                where = {**(where or {}), column: value}
        check(where is None or isinstance(where, dict), "where", caller,
              "a dict of column -> value, None or a list of values", where)
        for column, value in (where or {}).items():
            expr = _expression(column, columns, caller, table)
            if value is None:
                sql.append(f"{expr} IS NULL")
            elif isinstance(value, (list, tuple, set, frozenset)):
                values = list(value)
                sql.append(f"{expr} IN ({', '.join('?' * len(values))})" if values else "0")
                params += values
            else:
                sql.append(f"{expr} = ?")
                params.append(value)
        t = table
        if clean is not None:  # hwlab._figure_data.clean_rows: no fault rate, or rate 0
            sql.append(("" if clean else "NOT ")
                       + f"({t}.fault_rate IS NULL OR {t}.fault_rate = 0)")
        if ber is not None:  # hwlab._figure_data.ber_rows: stored-bit faults at a rate > 0
            test = " OR ".join(f"{t}.fault_model GLOB '{f}*'" for f in _BER_FAULTS)
            sql.append(("" if ber else "NOT ") + f"(coalesce({test}, 0) AND {t}.fault_rate > 0)")
        if not aggregates:  # hwlab._figure_data.is_aggregate: *-mean methods or variants
            sql.append(f"NOT (coalesce({t}.method, '') GLOB '*-mean' "
                       f"OR coalesce({t}.variant, '') GLOB '*-mean')")
        check(near is None or isinstance(near, dict), "near", caller,
              "a dict of column -> number", near)
        for column, value in (near or {}).items():  # numpy.isclose(column, value)
            expr = _expression(column, columns, caller, table)
            check(is_number(value, finite=False, nan=True), "near", caller,
                  "a dict of column -> number", near)
            sql.append(f"abs({expr} - ?) <= 1e-8 + 1e-5 * abs(?)")
            params += [float(value), float(value)]
        if contains is not None:  # rows whose extra JSON names this key (a cheap substring)
            check(isinstance(contains, str) and _IDENTIFIER.fullmatch(contains) is not None,
                  "contains", caller, "an extra key matching [a-z_][a-z0-9_]*", contains)
            sql.append(f"instr({t}.extra, ?) > 0")
            params.append(f'"{contains}"')
        return (" WHERE " + " AND ".join(sql)) if sql else "", params

    def _sums_serve(self, by, values, weight, lcm, filters) -> bool:
        """Whether the summary table can answer this :meth:`aggregate` call."""
        keys = set(_SUM_KEYS) | {"study"} | {f"extra.{k}" for k in _SUM_EXTRA}
        named = set(by) | set(filters.get("where") or {}) | set(filters.get("near") or {})
        return (named <= keys and set(values) <= set(_SUM_VALUES) and set(lcm) <= set(values)
                and weight == "extra.n_samples" and filters.get("contains") is None)

    def _refresh_sums(self) -> bool:
        """Bring the summary table up to the last result row; False where the file cannot be
        written (then :meth:`aggregate` reads the rows themselves)."""
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'result_sums'").fetchone():
                top, n = conn.execute("SELECT max(rowid), count(*) FROM results").fetchone()
                mark = dict(conn.execute("SELECT key, value FROM meta WHERE key IN "
                                         "('sums_rowid', 'sums_rows')").fetchall())
                if (mark.get("sums_rowid") is not None and int(mark["sums_rowid"]) >= (top or 0)
                        and int(mark.get("sums_rows", -1)) == n):
                    return True
        try:
            with self._write() as conn:
                _update_sums(conn, self._table_columns(conn))
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc).lower() and "read-only" not in str(exc).lower():
                raise
            log.info("store %s is read-only: grouped reads scan the rows", self.path)
            return False
        return True

    def aggregate(self, by: Iterable[str] = (), values: Iterable[str] = (), *,
                  weight: str | None = "extra.n_samples", lcm: Iterable[str] = (),
                  **filters):
        """Sums and counts per group, computed by SQLite: one row per distinct ``by``.

        ``by``: result columns, ``study`` or ``extra.KEY`` (a number or text read from the
        row's extra JSON). For each column ``v`` of ``values`` the frame has ``v_n`` (rows
        where ``v`` is not NULL), ``v_sum``, ``v_sumsq``, ``v_min``, ``v_max`` and, with a
        ``weight`` (default ``extra.n_samples``, the denominator of a proportion),
        ``v_wn`` (rows where both are present), ``v_w`` (the sum of their weights) and
        ``v_wsum`` (the sum of ``v * weight``); every interval of :mod:`hwlab.stats` follows
        from these (:func:`hwlab._figure_data.summarize_sums`). ``rows`` counts each group's
        rows. ``lcm`` columns get ``v_lcm``: the smallest count consistent with every value
        being ``k / count`` (:func:`hwlab._figure_data.implied_count`; NaN where there is none).

        Filters (all optional, combined with AND): ``study``, ``run_id``, ``module``;
        ``where={column: value | None | [values]}``; ``clean=True/False`` (fault-free rows as
        :func:`~hwlab._figure_data.clean_rows`, or the others); ``ber=True`` (rows of
        :func:`~hwlab._figure_data.ber_rows`); ``aggregates=False`` (leave out ``*-mean``
        rows); ``near={column: number}`` (``numpy.isclose``); ``contains="key"`` (rows whose
        extra names ``key``). Names are validated before they reach SQL, values are parameters.

        Speed: groups of the point columns (run, module, method, model, dataset, variant,
        dtype, fault model and rate, time steps, ``extra.dtype``, ``extra.memory_kind``) over
        the built-in metrics
        are read from a summary table (``result_sums``: the same sums per point, brought up to
        the newest row on each call, so a million rows cost a read of their few hundred
        points); anything else scans the rows.
        """
        import pandas as pd

        columns = self.columns()
        caller = "Store.aggregate"
        for name, v in (("by", by), ("values", values), ("lcm", lcm)):
            check(not isinstance(v, str) and isinstance(v, Iterable), name, caller,
                  "a list of column names", v)
        by, values, lcm = list(by), list(values), list(lcm)
        table = "results"
        if (filters.pop("_rows", False) is False and self._sums_serve(by, values, weight, lcm,
                                                                       filters)
                and self._refresh_sums()):
            table = "result_sums"
        keys = [_expression(c, columns, caller, table) for c in by]
        parts = [f"{k} AS \"{c}\"" for k, c in zip(keys, by)]
        if table == "results":
            parts.append("count(*) AS rows")
            w = None if weight is None else _expression(weight, columns, caller)
            for v in values:
                e = _expression(v, columns, caller)
                parts += [f"count({e}) AS \"{v}_n\"", f"sum({e}) AS \"{v}_sum\"",
                          f"sum({e} * {e}) AS \"{v}_sumsq\"", f"min({e}) AS \"{v}_min\"",
                          f"max({e}) AS \"{v}_max\""]
                if w is not None:
                    parts += [f"count({e} + {w}) AS \"{v}_wn\"",
                              f"sum(CASE WHEN {e} IS NOT NULL THEN {w} END) AS \"{v}_w\"",
                              f"sum({e} * {w}) AS \"{v}_wsum\""]
            for v in lcm:
                e = _expression(v, columns, caller)
                parts.append(f"json_group_array(DISTINCT {e}) AS \"{v}_lcm\"")
        else:
            parts.append("sum(rows) AS rows")
            for v in values:
                parts += [f"sum(\"{v}_{k}\") AS \"{v}_{k}\"" for k in ("n", "sum", "sumsq")]
                parts += [f"min(\"{v}_min\") AS \"{v}_min\"", f"max(\"{v}_max\") AS \"{v}_max\""]
                parts += [f"sum(\"{v}_{k}\") AS \"{v}_{k}\"" for k in ("wn", "w", "wsum")]
            for v in lcm:
                parts.append(f"json_group_array(\"{v}_lcm\") AS \"{v}_lcm\"")
        where, params = self._where(columns, caller, table=table, **filters)
        sql = (f"SELECT {', '.join(parts)} FROM {table} JOIN runs ON runs.run_id = "
               f"{table}.run_id{where}" + (f" GROUP BY {', '.join(keys)}" if keys else ""))
        with self._connect() as conn:
            cur = conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            df = pd.DataFrame.from_records(cur.fetchall(), columns=names)
        for v in lcm:
            merge = _merge_lcm if table == "result_sums" else _values_lcm
            df[f"{v}_lcm"] = [merge(json.loads(s)) for s in df[f"{v}_lcm"]]
        for c in df.columns:
            if c not in by and c != "rows":
                df[c] = df[c].astype("float64")
        if df.empty or "rows" not in df:
            return df
        df["rows"] = df["rows"].fillna(0).astype("int64")
        return df

    def select(self, columns: Iterable[str] | None = None, *, limit: int | None = None,
               offset: int = 0, **filters):
        """Result rows (of ``columns``, default every column plus ``study``) that pass the
        filters of :meth:`aggregate`, in :meth:`results` order; ``limit`` / ``offset`` page
        through them. Typed like :meth:`results` (integers Int64, REAL float64)."""
        import pandas as pd

        present = self.columns()
        caller = "Store.select"
        check(not isinstance(columns, str), "columns", caller, "a list of column names", columns)
        wanted = [*present, "study"] if columns is None else list(columns)
        exprs = [_expression(c, present, caller) for c in wanted]
        where, params = self._where(present, caller, **filters)
        # one run: its rows in rowid order (the same order; SQLite then sorts no more than it
        # must for a page of a million-row run)
        order = ("results.rowid" if isinstance(filters.get("run_id"), str)
                 else "runs.started, results.rowid")
        sql = (f"SELECT {', '.join(f'{e} AS {chr(34)}{c}{chr(34)}' for e, c in zip(exprs, wanted))}"
               f" FROM results JOIN runs ON runs.run_id = results.run_id{where} ORDER BY {order}")
        if limit is not None:
            limit = check_int(limit, "limit", caller, 0, constraint="a non-negative int or None")
            offset = check_int(offset, "offset", caller, 0, constraint="a non-negative int")
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        with self._connect() as conn:
            cur = conn.execute(sql, params)
            df = pd.DataFrame.from_records(cur.fetchall(), columns=wanted)
        return _typed_some(df, wanted)

    def count(self, **filters) -> int:
        """How many result rows pass the filters of :meth:`aggregate`."""
        df = self.aggregate(**filters)
        return int(df["rows"].iloc[0]) if len(df) else 0

    def runs(self):
        """The runs as a pandas DataFrame (config as JSON text, plus ``n_results``)."""
        import pandas as pd

        sql = ("SELECT runs.run_id, study, config, fingerprint, code_version, status, started, "
               "finished, (SELECT count(*) FROM results WHERE results.run_id = runs.run_id) "
               "AS n_results FROM runs ORDER BY started")
        with self._connect() as conn:
            return pd.read_sql_query(sql, conn)

    def export(self, path: str | os.PathLike, study: str | None = None) -> Path:
        """Write the results (of one study, or all) to ``.csv`` or ``.parquet`` by suffix."""
        path = Path(path)
        suffix = path.suffix.lower()
        check(suffix in (".csv", ".parquet"), "path", "Store.export",
              "a file name ending in .csv or .parquet", str(path))
        df = self.results(study=study)
        if suffix == ".csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        return path


# -- the summary table: sums per measured point, kept up to the newest result row ------------
_SUM_KEYS = ("run_id", "module", "method", "model", "dataset", "variant", "dtype", "fault_model",
             "fault_rate", "timesteps")
# extra fields that tell points apart: a campaign's number format, what memory_bytes means
_SUM_EXTRA = ("dtype", "memory_kind")
_SUM_VALUES = ("accuracy", "sdc", "critical_sdc", "top5", "loss", "latency_ms", "memory_bytes",
               "params")
_LCM_LIMIT = 10**5  # hwlab._figure_data.implied_count's default limit
_SUMS_ADD = ("n", "sum", "sumsq", "wn", "w", "wsum")  # added up when groups merge
_SUMS_SCHEMA = ("CREATE TABLE IF NOT EXISTS result_sums ("
                + ", ".join(f'"{c}" {_COLUMN_TYPES[c]}' for c in _SUM_KEYS)
                + "".join(f", extra_{k} TEXT" for k in _SUM_EXTRA) + ", rows INTEGER NOT NULL, "
                + ", ".join(f'"{v}_{k}" REAL' for v in _SUM_VALUES
                            for k in (*_SUMS_ADD, "min", "max", "lcm")) + ")")


def _values_lcm(values) -> float:
    """implied_count of distinct values (1.0 for none: the identity of lcm; NaN: none exists)."""
    from hwlab._figure_data import implied_count

    vals = [v for v in values if v is not None]
    if not vals:
        return 1.0
    n = implied_count(vals)
    return math.nan if n is None else float(n)


def _merge_lcm(parts) -> float:
    """The lcm of per-point lcms (NaN, or beyond the implied_count limit: NaN)."""
    n = 1
    for p in parts:
        if p is None or (isinstance(p, float) and math.isnan(p)):
            return math.nan
        n = math.lcm(n, int(p))
    return float(n) if n <= _LCM_LIMIT else math.nan


def _sum_or_null(values):
    """SQLite's sum: NULL (NaN) over no values, never 0."""
    return values.sum(min_count=1)


def _update_sums(conn: sqlite3.Connection, columns: tuple) -> None:
    """Add the result rows past the ``sums_rowid`` mark to ``result_sums`` (inside the caller's
    write transaction). Result rows are insert-only, so the rows past the mark are exactly the
    ones not yet counted; a run's points are merged in Python and written back. ``sums_rows``
    (the rows counted) guards the mark: if the rows up to it are no longer that many (a VACUUM
    renumbered them, a tool deleted some), the table is rebuilt from every row."""
    import pandas as pd

    conn.execute(_SUMS_SCHEMA)
    conn.execute("CREATE INDEX IF NOT EXISTS result_sums_run ON result_sums (run_id)")
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('sums_rowid', "
                             "'sums_rows')").fetchall())
    mark = int(meta.get("sums_rowid", 0))
    top, total = conn.execute("SELECT max(rowid), count(*) FROM results").fetchone()
    top = top or 0
    counted = conn.execute("SELECT count(*) FROM results WHERE rowid <= ?", (mark,)).fetchone()[0]
    if counted != int(meta.get("sums_rows", 0)):  # rows renumbered (VACUUM) or removed: rebuild
        log.info("rebuilding the summary table of the results")
        conn.execute("DELETE FROM result_sums")
        mark = 0
    if top <= mark:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sums_rows', ?)",
                     (str(total),))
        return
    keys = [*_SUM_KEYS, *(f"extra_{k}" for k in _SUM_EXTRA)]
    exprs = [f'"{c}"' for c in _SUM_KEYS] + [_extra_sql("extra", k) for k in _SUM_EXTRA]
    w = _extra_sql("extra", "n_samples")
    parts = [*exprs, "count(*)"]
    for v in _SUM_VALUES:
        e = f'"{v}"'
        parts += [f"count({e})", f"sum({e})", f"sum({e} * {e})", f"count({e} + {w})",
                  f"sum(CASE WHEN {e} IS NOT NULL THEN {w} END)", f"sum({e} * {w})",
                  f"min({e})", f"max({e})",
                  f"json_group_array(DISTINCT {e})" if v in METRIC_COLUMNS[:4] else "'[]'"]
    names = [*keys, "rows"] + [f"{v}_{k}" for v in _SUM_VALUES
                               for k in (*_SUMS_ADD, "min", "max", "lcm")]
    new = pd.DataFrame.from_records(conn.execute(
        f"SELECT {', '.join(parts)} FROM results WHERE rowid > ? AND rowid <= ? "
        f"GROUP BY {', '.join(exprs)}", (mark, top)).fetchall(), columns=names)
    for v in _SUM_VALUES:
        new[f"{v}_lcm"] = [_values_lcm(json.loads(s)) for s in new[f"{v}_lcm"]]
    runs = sorted(set(new["run_id"]))
    marks = ", ".join("?" * len(runs))
    old = pd.DataFrame.from_records(conn.execute(
        f"SELECT {', '.join(chr(34) + c + chr(34) for c in names)} FROM result_sums "
        f"WHERE run_id IN ({marks})", runs).fetchall(), columns=names)
    both = pd.concat([old, new], ignore_index=True) if len(old) else new
    if len(old):
        agg = {"rows": "sum"}
        for v in _SUM_VALUES:
            agg.update({f"{v}_{k}": _sum_or_null for k in _SUMS_ADD})
            agg.update({f"{v}_min": "min", f"{v}_max": "max", f"{v}_lcm": _merge_lcm})
        key = both[keys].astype("object").where(both[keys].notna(), "\x00null")
        both = both.assign(**{f"__{c}": key[c] for c in keys})
        g = both.groupby([f"__{c}" for c in keys], sort=False, dropna=False)
        first = g[keys].first()
        both = pd.concat([first, g.agg(agg)], axis=1).reset_index(drop=True)
    conn.execute(f"DELETE FROM result_sums WHERE run_id IN ({marks})", runs)
    records = [tuple(None if isinstance(x, float) and math.isnan(x) else x for x in r)
               for r in both[names].astype("object").itertuples(index=False, name=None)]
    conn.executemany(f"INSERT INTO result_sums ({', '.join(chr(34) + c + chr(34) for c in names)}) "
                     f"VALUES ({', '.join('?' * len(names))})", records)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sums_rowid', ?)", (str(top),))
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sums_rows', ?)", (str(total),))
