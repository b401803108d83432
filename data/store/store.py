"""The DuckDB store: one file holds everything a run produces, and is the single source of truth.

DuckDB allows one process to open a file at a time (even a reader blocks a writer). Within that
process the store serialises access through one lock, so LangGraph's worker threads and async
tasks can share it. A second process gets :class:`StoreLockedError`, which names the process that
holds the file instead of DuckDB's raw ``Could not set lock`` message.

Writes are batched through pandas DataFrames (``INSERT ... BY NAME SELECT * FROM df``): DuckDB
ingests a frame in one vectorised step, where ``executemany`` costs a round trip per row.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
import pyarrow as pa

from data.redaction import known_secrets, redact, redact_value, redactor
from data.store.schema import LATEST_VERSION, MIGRATIONS

DEFAULT_DB_PATH = Path("runs") / "icm.duckdb"

OnConflict = Literal["error", "ignore", "replace"]

_LOCK_PID = re.compile(r"\(PID (\d+)\)")
_ORIGINAL_ERROR = re.compile(r'Original error: "(.*)"')


class StoreError(RuntimeError):
    """Base class of the store's own errors."""


class StoreLockedError(StoreError):
    """Another process holds the database file (DuckDB permits one process per file)."""

    def __init__(self, path: Path, pid: int | None, command: str | None) -> None:
        self.path = path
        self.pid = pid
        self.command = command
        holder = f"process {pid}" if pid else "another process"
        if command:
            holder += f" ({command})"
        super().__init__(
            f"{path} is in use by {holder}. DuckDB lets one process open a database file at a "
            "time: wait for that process to finish, stop it, or pass another --db path."
        )


class StoreVersionError(StoreError):
    """The file was written by a newer version of this tool than the one running."""


class StoreWriteError(StoreError):
    """A write the file system or DuckDB could not make (disk full, I/O error, a database
    DuckDB invalidated after such an error): nothing more can be written by this process.

    One line, naming the file and the cause; what was committed before stays in the file, and
    a rerun resumes from it once the cause is fixed.
    """

    def __init__(self, path: Path | str, cause: BaseException) -> None:
        self.path = path
        self.cause = cause
        reason = " ".join(str(cause).split()) or type(cause).__name__
        # DuckDB repeats the first fatal error inside every later one: name that cause alone
        original = _ORIGINAL_ERROR.search(reason)
        if original:
            reason = original.group(1)
        self.reason = reason
        super().__init__(
            f"cannot write the store {path}: {reason}. The run stopped; what was committed is "
            "kept: free space (or fix the cause) and rerun the same command to resume"
        )


def is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the store cannot be written at all (as opposed to one bad row).

    DuckDB raises ``IOException`` for a failed write or sync, and ``FatalException`` (or an
    error saying the database "has been invalidated") for every statement after one; an
    ``OSError`` from our own file handling means the same.
    """
    if isinstance(exc, StoreWriteError | duckdb.IOException | duckdb.FatalException | OSError):
        return True
    return isinstance(exc, duckdb.Error) and "invalidated" in str(exc)


def utcnow() -> datetime:
    """Timestamps are stored as naive UTC, the form DuckDB's TIMESTAMP keeps."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces) so equal objects hash and compare equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def from_json(raw: str | None) -> Any:
    """A stored JSON column's value, or the raw text where it does not parse (shown, never
    hidden); None stays None."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def batch_frame(
    rows: Sequence[Mapping[str, Any]], clean: Callable[[str], str] | None = None
) -> pa.Table | pd.DataFrame:
    """Rows (dicts; a key missing from a row is NULL there) as an Arrow table for DuckDB, with
    ``clean`` applied to every string value where given.

    Why Arrow: DuckDB reads an Arrow table's buffers directly, where a DataFrame of Python
    strings is read object by object while holding the GIL, which stalls a generation run's
    event loop during every batch commit. A column Arrow cannot type (mixed kinds of values)
    falls back to pandas, which stores it as objects.
    """
    names = list(dict.fromkeys(key for row in rows for key in row))
    if clean is None:
        columns = {name: [row.get(name) for row in rows] for name in names}
    else:  # column by column, without a cleaned copy of every row first
        columns = {
            name: [clean(v) if isinstance(v, str) else v for v in (row.get(name) for row in rows)]
            for name in names
        }
    try:
        return pa.table({name: pa.array(values) for name, values in columns.items()})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        if clean is None:
            return pd.DataFrame(list(rows))
        return pd.DataFrame(
            [{k: clean(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
        )


def redacted_frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pa.Table | pd.DataFrame:
    """``rows`` as a frame for DuckDB with every string passed through ``data.redaction``: the
    store is a boundary every text crosses, so no key reaches the file whatever wrote it."""
    secrets = tuple(known_secrets())
    if isinstance(rows, pd.DataFrame):
        frame = rows.copy()
        for name in frame.columns:
            if frame[name].dtype == object:
                frame[name] = [redact(v, secrets) if isinstance(v, str) else v for v in frame[name]]
        return frame
    return batch_frame(rows if isinstance(rows, list | tuple) else list(rows), redactor(secrets))


def _process_command(pid: int) -> str | None:
    """The command line of ``pid`` from /proc, or None where it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    return " ".join(parts) or None


class Store:
    """A handle on one database file, migrated to the latest schema on open.

    Use :meth:`open` (or ``with Store.open(path) as store``) rather than the constructor.
    """

    def __init__(self, path: Path, connection: duckdb.DuckDBPyConnection, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self._conn = connection
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- opening and closing
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool = False,
        wait_s: float = 0.0,
    ) -> Store:
        """Open (creating and migrating if needed) the database at ``path``.

        ``wait_s``: keep trying this long while another process holds the file (a viewer's
        brief read, say) before giving up with :class:`StoreLockedError`.

        Raises:
            StoreLockedError: another process holds the file.
            StoreVersionError: the file's schema is newer than this code knows.
            FileNotFoundError: ``read_only`` and the file does not exist.
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return cls._open_once(path, read_only=read_only)
            except StoreLockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    @classmethod
    def _open_once(cls, path: str | os.PathLike[str] | None, *, read_only: bool) -> Store:
        db_path = Path(path) if path is not None else DEFAULT_DB_PATH
        if read_only and not db_path.exists():
            raise FileNotFoundError(f"no database at {db_path}")
        if not read_only:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = duckdb.connect(str(db_path), read_only=read_only)
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" in message.lower():
                match = _LOCK_PID.search(message)
                pid = int(match.group(1)) if match else None
                command = _process_command(pid) if pid else None
                raise StoreLockedError(db_path, pid, command) from exc
            raise StoreError(f"cannot open {db_path}: {message}") from exc
        store = cls(db_path, conn, read_only)
        try:
            store._migrate()
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- schema
    def schema_version(self) -> int:
        """The highest applied migration, 0 for an empty file."""
        with self._lock:
            exists = self.scalar(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_name = 'schema_migrations' AND table_schema = 'main'"
            )
            if not exists:
                return 0
            return int(self.scalar("SELECT max(version) FROM schema_migrations") or 0)

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > LATEST_VERSION:
            raise StoreVersionError(
                f"{self.path} has schema version {current}, but this version of icm knows "
                f"versions up to {LATEST_VERSION}: upgrade icm to read it"
            )
        pending = [m for m in MIGRATIONS if m.version > current]
        if not pending:
            return
        if self.read_only:
            raise StoreVersionError(
                f"{self.path} has schema version {current} < {LATEST_VERSION}; open it once "
                "for writing (any icm command that writes) to migrate it"
            )
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            for migration in pending:
                self._conn.execute("BEGIN TRANSACTION")
                try:
                    self._conn.execute(migration.sql)
                    self._conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        [migration.version, migration.name, utcnow()],
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    # ----------------------------------------------------------------- reads
    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run a read query and return a DataFrame."""
        with self._lock:
            return self._conn.execute(sql, params or []).df()

    def rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[dict]:
        """Run a read query and return its rows as dicts."""
        with self._lock:
            cursor = self._conn.execute(sql, params or [])
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        with self._lock:
            # fetchall, not fetchone: DuckDB 2 keeps a half-read result open, and then refuses
            # register() on the connection until it is drained.
            rows = self._conn.execute(sql, params or []).fetchall()
        return rows[0][0] if rows else None

    def tables(self) -> list[str]:
        """Names of the tables in the file, the migration ledger included."""
        with self._lock:
            return [
                r[0]
                for r in self._conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'main' ORDER BY table_name"
                ).fetchall()
            ]

    def table_counts(self) -> dict[str, int]:
        """Row count of each table."""
        with self._lock:
            return {t: int(self.scalar(f'SELECT count(*) FROM "{t}"')) for t in self.tables()}

    # ----------------------------------------------------------------- writes
    def insert(
        self,
        table: str,
        rows: pd.DataFrame | Iterable[Mapping[str, Any]],
        *,
        on_conflict: OnConflict = "error",
    ) -> int:
        """Insert rows by column name in one batch; returns how many rows were offered.

        ``on_conflict``: ``error`` raises on a duplicate key, ``ignore`` keeps the existing row
        (idempotent re-runs), ``replace`` overwrites it.
        """
        frame = redacted_frame(rows)
        if not len(frame):
            return 0
        self._check_table(table)
        verb = {"error": "INSERT", "ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}[
            on_conflict
        ]
        with self._lock, self._registered("_icm_batch", frame):
            self._conn.execute(f'{verb} INTO "{table}" BY NAME SELECT * FROM _icm_batch')
        return len(frame)

    def update_by_key(
        self, table: str, key: str, rows: pd.DataFrame | Iterable[Mapping[str, Any]]
    ) -> int:
        """Set the other columns of ``rows`` on the rows whose ``key`` matches, in one statement.

        Rows of the table that no given row matches are untouched; given rows that match nothing
        are ignored. Returns how many rows were offered.
        """
        frame = redacted_frame(rows)
        if not len(frame):
            return 0
        names = frame.column_names if isinstance(frame, pa.Table) else list(frame.columns)
        for name in (table, key, *names):
            self._check_table(name)  # identifiers only: they are spliced into the SQL
        columns = [c for c in names if c != key]
        assignments = ", ".join(f'"{c}" = u."{c}"' for c in columns)
        with self._lock, self._registered("_icm_update", frame):
            self._conn.execute(
                f'UPDATE "{table}" SET {assignments} FROM _icm_update AS u '
                f'WHERE "{table}"."{key}" = u."{key}"'
            )
        return len(frame)

    def delete_where_in(self, table: str, column: str, values: Sequence[Any]) -> None:
        """Delete the rows whose ``column`` is one of ``values``, in one statement."""
        if not values:
            return
        self._check_table(table)
        self._check_table(column)
        with self._lock:
            self._conn.execute(
                f'DELETE FROM "{table}" WHERE "{column}" IN (SELECT unnest(?))', [list(values)]
            )

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """Run one statement that writes (an UPDATE, say); its string parameters are redacted
        like every other text written (``data.redaction``)."""
        with self._lock:
            self._conn.execute(sql, redact_value(params) if params else [])

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """All writes inside the block land together or not at all (a crash leaves no half)."""
        with self._lock:
            self._conn.execute("BEGIN TRANSACTION")
            try:
                yield self
            except BaseException:
                # an invalidated database refuses the rollback too: the first error matters
                with suppress(duckdb.Error):
                    self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    @contextmanager
    def _registered(self, name: str, frame: pd.DataFrame | pa.Table) -> Iterator[None]:
        """``frame`` visible to SQL as ``name`` inside the block.

        After a failed statement inside a transaction DuckDB refuses everything until ROLLBACK,
        unregistering included: that refusal must not replace the error that explains it.
        """
        self._conn.register(name, frame)
        try:
            yield
        except BaseException:
            with suppress(duckdb.Error):
                self._conn.unregister(name)
            raise
        self._conn.unregister(name)

    def _check_table(self, table: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
            raise StoreError(f"not a table or column name: {table!r}")
