"""Open a store to read it even while a generation run writes it.

DuckDB lets one process open a file, so a read-only ``icm runs`` would fail on the lock for as
long as a run writes. The writer publishes a consistent copy beside the file every few seconds
(``<db>.snapshot.duckdb``, see the snapshot module); when the file is locked, the read commands
(``icm runs``, ``traces``, ``samples``, ``export``, ``compare``) read that copy instead and say
that the data is as of the snapshot's time.

Usage::

    store, as_of = open_for_reading(db)   # as_of is None when the file itself was opened
    with store: ...
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from data.store.snapshot import open_snapshot, snapshot_path
from data.store.store import Store, StoreLockedError


class NoSnapshotError(StoreLockedError):
    """The file is locked by a writer that has not published a snapshot yet."""

    def __init__(self, locked: StoreLockedError, snapshot: Path) -> None:
        super().__init__(locked.path, locked.pid, locked.command)
        self.snapshot = snapshot
        self.args = (
            f"{locked} No snapshot to read instead: the writer has not published {snapshot} "
            "yet (a generation run publishes one every few seconds unless "
            "ICM_SNAPSHOT_INTERVAL_S=0); try again shortly.",
        )


def open_for_reading(path: str | os.PathLike[str]) -> tuple[Store, datetime | None]:
    """The store at ``path`` opened read-only, or, while a writer holds it, its snapshot.

    Returns ``(store, as_of)``: ``as_of`` is None for the file itself, else the local time the
    snapshot was published (the data is as of then).

    Raises:
        FileNotFoundError: there is no database at ``path``.
        NoSnapshotError: the file is locked and no snapshot has been published yet.
        StoreVersionError: the file (or snapshot) was written by a newer icm.
    """
    try:
        return Store.open(path, read_only=True), None
    except StoreLockedError as locked:
        snapshot = snapshot_path(path)
        try:
            # read before opening: a newer copy may replace it meanwhile, never an older one
            published = datetime.fromtimestamp(snapshot.stat().st_mtime)
        except FileNotFoundError:
            raise NoSnapshotError(locked, snapshot) from locked
        return open_snapshot(snapshot), published


def as_of_note(as_of: datetime) -> str:
    """The line a read command prints (to stderr) when it read the snapshot."""
    return f"data as of {as_of:%Y-%m-%d %H:%M:%S} (a run is writing this store)"
