"""Consistent snapshots of a store that a writer holds, so ``icm view`` can read during a run.

DuckDB lets one process open a file; even a reader blocks a writer. So the writer publishes:
after a commit it checkpoints (every committed row lands in the main file, the WAL is emptied)
and copies the file, while holding the store's lock so no statement of its own runs meanwhile,
to ``<db>.snapshot.duckdb`` through a temporary file and ``os.replace``. A reader therefore sees
either the previous snapshot or the new one, never a torn file, and a sample's final rows
(committed in one transaction) are either all there or not at all.

Why a file copy and not ``ATTACH ...; COPY FROM DATABASE``: on a 10,000-sample store (55 MiB:
75k calls, 260k critiques) COPY FROM DATABASE takes ~4 s (it rebuilds every table and index)
where CHECKPOINT + copy takes 80-130 ms. The copy runs in a child process (see
:func:`_copy_in_child`). The publisher spaces publications so that they take at most
``max_overhead`` (3 %) of the run's wall time: the pause after a publication is
``max(min_interval_s, cost / max_overhead)``, so a large store is published less often instead
of slowing the run.

The reader side, :class:`DataSource`, opens the main file read-only for each request when it is
free (and closes it at once, so a writer starting later is kept out for milliseconds at most),
and the newest snapshot when the main file is locked, reopening it when the writer replaces it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import duckdb

from data.store import LATEST_VERSION, Store, StoreError, StoreLockedError, StoreVersionError

log = logging.getLogger(__name__)

SNAPSHOT_ENV = "ICM_SNAPSHOT_INTERVAL_S"
"""Seconds between snapshots a generation run publishes; ``0`` or ``off`` turns them off."""

DEFAULT_MIN_INTERVAL_S = 2.0
DEFAULT_MAX_OVERHEAD = 0.03


def snapshot_path(db: str | os.PathLike[str]) -> Path:
    """``runs/icm.duckdb`` -> ``runs/icm.duckdb.snapshot.duckdb`` (beside the store)."""
    db = Path(db)
    return db.with_name(f"{db.name}.snapshot.duckdb")


@dataclass(frozen=True)
class Published:
    """One publication: where, how long it held the writer, how large the file is."""

    path: Path
    seconds: float
    size_bytes: int


class SnapshotSink(Protocol):
    """What a writer publishes its store's consistent copies through.

    The generation run calls :meth:`maybe_publish` after its commits; :class:`SnapshotPublisher`
    is the implementation that ``icm view`` (through :class:`DataSource`) reads from, and the
    runner knows only this protocol, not the viewer.
    """

    def maybe_publish(self, store: Store, *, force: bool = False) -> Published | None: ...


def publish_snapshot(
    store: Store, path: str | os.PathLike[str] | None = None, min_interval_s: float = 0.0
) -> Published | None:
    """Write a consistent copy of ``store`` to ``path`` (default :func:`snapshot_path`).

    Returns None without writing when the current snapshot is younger than ``min_interval_s``
    (judged by its mtime, so separate callers share the limit) or when DuckDB refuses the
    checkpoint because another connection has a transaction open (the next call retries).
    Call it between transactions, never inside one.
    """
    target = Path(path) if path is not None else snapshot_path(store.path)
    if min_interval_s > 0:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - target.stat().st_mtime < min_interval_s:
                return None
    # Unique per call: a publication still finishing in a worker thread must not share it.
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    _remove_stale(target)
    started = time.perf_counter()
    # The store's own lock keeps the pipeline's threads from writing between the checkpoint
    # and the end of the copy (Store exposes no public handle on it).
    with store._lock:
        try:
            if not store.read_only:
                store.execute("CHECKPOINT")
            _copy_in_child(store.path, tmp)
            os.replace(tmp, target)  # under the lock too: publications land in order
        except (duckdb.Error, OSError, subprocess.SubprocessError) as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            log.warning("snapshot of %s skipped: %s", store.path, exc)
            return None
    return Published(target, time.perf_counter() - started, target.stat().st_size)


def _remove_stale(target: Path) -> None:
    """Temporary copies left by writers that were killed mid-copy."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        pid = stale.name.rsplit(".", 2)[-2].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


@functools.cache
def _copy_command() -> tuple[str, ...]:
    cp = shutil.which("cp")
    if cp is None:
        return (sys.executable, "-c", "import shutil, sys; shutil.copyfile(*sys.argv[1:3])")
    # GNU cp clones the file where the filesystem can (btrfs, xfs): no bytes copied at all.
    gnu = subprocess.run([cp, "--version"], capture_output=True).returncode == 0
    return (cp, "--reflink=auto") if gnu else (cp,)


def _copy_in_child(source: Path, target: Path) -> None:
    """Copy a file in a child process, never by opening it here.

    DuckDB locks the database with POSIX ``fcntl`` locks, and POSIX drops every lock a process
    holds on a file as soon as that process closes *any* descriptor of it: a plain
    ``shutil.copyfile`` in the writer would silently release the writer's lock, letting a
    second writer in. A child's descriptors do not touch the parent's locks.
    """
    command = [*_copy_command(), str(source), str(target)]
    subprocess.run(command, check=True, capture_output=True, timeout=600)


@dataclass
class SnapshotPublisher:
    """Rate-limited :func:`publish_snapshot` for a writer: call :meth:`maybe_publish` after each
    sample is final and once with ``force=True`` at the end of the run."""

    path: Path
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S
    max_overhead: float = DEFAULT_MAX_OVERHEAD
    published: int = 0
    total_seconds: float = 0.0
    _next_at: float = field(default=0.0, repr=False)

    @classmethod
    def for_store(cls, db: str | os.PathLike[str]) -> SnapshotPublisher | None:
        """The publisher configured by ``ICM_SNAPSHOT_INTERVAL_S`` (default 2 s), or None when
        it says ``0``/``off``."""
        raw = os.environ.get(SNAPSHOT_ENV, "").strip().lower()
        if raw in {"0", "off", "false", "no"}:
            return None
        try:
            interval = float(raw) if raw else DEFAULT_MIN_INTERVAL_S
        except ValueError:
            log.warning("%s=%r is not a number of seconds; using %s", SNAPSHOT_ENV, raw,
                        DEFAULT_MIN_INTERVAL_S)  # fmt: skip
            interval = DEFAULT_MIN_INTERVAL_S
        if interval <= 0:
            return None
        return cls(snapshot_path(db), min_interval_s=interval)

    def maybe_publish(self, store: Store, *, force: bool = False) -> Published | None:
        if not force and time.monotonic() < self._next_at:
            return None
        done = publish_snapshot(store, self.path)
        if done is None:
            return None
        self.published += 1
        self.total_seconds += done.seconds
        pause = max(self.min_interval_s, done.seconds / self.max_overhead)
        self._next_at = time.monotonic() + pause
        return done


# --------------------------------------------------------------------------- reading
class SourceUnavailable(StoreError):
    """The main file is locked by a writer and it has published no snapshot yet."""


@dataclass(frozen=True)
class SourceInfo:
    """What a page was read from, shown in its header."""

    kind: str
    """``main`` (the database file itself) or ``snapshot``."""
    path: Path
    taken_at: datetime | None = None
    """For a snapshot: when the writer published it (local time)."""
    holder: str | None = None
    """For a snapshot: the process holding the main file, in words."""
    version: tuple = ()
    """Changes whenever the data may have changed: a key for caches."""


class _Shared:
    """An open snapshot store with a count of the requests using it."""

    def __init__(self, store: Store, key: tuple) -> None:
        self.store, self.key, self.users, self.retired = store, key, 0, False


class DataSource:
    """Read access to a store that may be written by another process at the same time."""

    def __init__(self, db: str | os.PathLike[str], snapshot: str | os.PathLike[str] | None = None):
        self.db = Path(db)
        self.snapshot = Path(snapshot) if snapshot is not None else snapshot_path(self.db)
        self._lock = threading.Lock()
        self._current: _Shared | None = None

    @contextlib.contextmanager
    def reading(self) -> Iterator[tuple[Store, SourceInfo]]:
        """A store to read for one request, and where it came from.

        Raises:
            FileNotFoundError: neither the database nor a snapshot exists.
            SourceUnavailable: the database is locked and there is no snapshot.
        """
        try:
            store = Store.open(self.db, read_only=True)
        except StoreLockedError as exc:
            holder = f"process {exc.pid}" if exc.pid else "another process"
            if exc.command:
                holder += f" ({exc.command})"
            with self._snapshot(holder) as pair:
                yield pair
            return
        except FileNotFoundError:
            if not self.snapshot.exists():
                raise
            with self._snapshot(None) as pair:
                yield pair
            return
        try:
            yield store, SourceInfo("main", self.db, version=("main", *_stamp(self.db)))
        finally:
            store.close()

    @contextlib.contextmanager
    def _snapshot(self, holder: str | None) -> Iterator[tuple[Store, SourceInfo]]:
        try:
            stat = self.snapshot.stat()
        except FileNotFoundError:
            raise SourceUnavailable(
                f"{self.db} is in use by {holder or 'another process'} and no snapshot has been "
                f"published at {self.snapshot} yet. A generation run publishes one every "
                f"{DEFAULT_MIN_INTERVAL_S:g} s or more (unless {SNAPSHOT_ENV}=0): reload shortly."
            ) from None
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        shared = self._acquire(key)
        info = SourceInfo(
            "snapshot",
            self.snapshot,
            taken_at=datetime.fromtimestamp(stat.st_mtime),
            holder=holder,
            version=("snapshot", *key),
        )
        try:
            yield shared.store, info
        finally:
            self._release(shared)

    def _acquire(self, key: tuple) -> _Shared:
        with self._lock:
            current = self._current
            if current is None or current.key != key:
                # Opened under the lock: concurrent requests wait for one open, not race.
                fresh = _Shared(open_snapshot(self.snapshot), key)
                if current is not None:
                    current.retired = True
                    if current.users == 0:
                        current.store.close()
                self._current = current = fresh
            current.users += 1
            return current

    def _release(self, shared: _Shared) -> None:
        with self._lock:
            shared.users -= 1
            if shared.retired and shared.users == 0:
                shared.store.close()

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current.retired = True
                if self._current.users == 0:
                    self._current.store.close()
                self._current = None


def open_snapshot(path: Path) -> Store:
    """Open a snapshot read-only in a private in-memory DuckDB instance.

    Not ``Store.open``: DuckDB caches one instance per path within a process, so reopening the
    path after the writer replaced the file would hand back the old file's instance (stale data)
    for as long as any request still used it. A fresh in-memory instance that ATTACHes the file
    reads the file the path names now.
    """
    conn = duckdb.connect(":memory:")
    try:
        literal = str(path).replace("'", "''")
        conn.execute(f"ATTACH '{literal}' AS snapshot (READ_ONLY)")
        conn.execute("USE snapshot")
    except duckdb.Error as exc:
        conn.close()
        raise StoreError(f"cannot read snapshot {path}: {exc}") from exc
    store = Store(path, conn, read_only=True)
    if store.schema_version() > LATEST_VERSION:
        store.close()
        raise StoreVersionError(f"{path} was written by a newer icm (schema version too new)")
    return store


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
