"""Batched writes: collect rows and statements, commit them together.

A DuckDB commit costs ~10-20 ms and a one-row DataFrame insert ~7 ms on this class of machine,
so a pipeline that commits each stage result separately spends more time writing than its
models spend thinking once calls are concurrent. :class:`BatchWriter` keeps the writes of many
samples and commits them in one transaction, a few statements per table however many rows
(see :class:`BatchWriter` for the order). The caller flushes on a timer; what was not flushed
when the process dies is lost, which for the generation run means those samples are still
``pending`` and run again.

Other buffers attach to a writer (:meth:`BatchWriter.attach`): the model layer's trace rows
commit in the same transaction as the stage results written from those calls, so the store
never holds a sample's rows without the calls that produced them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from data.store.store import OnConflict, Store


class PendingSource(Protocol):
    """A buffer of rows that commits inside a :class:`BatchWriter`'s flush.

    ``take`` hands over what is buffered (anything the source understands; falsy when empty),
    ``write`` inserts it through the store inside the flush's transaction and returns how many
    rows it held, and ``restore`` takes it back when that transaction fails.
    """

    def take(self) -> Any: ...

    def write(self, store: Store, taken: Any) -> int: ...

    def restore(self, taken: Any) -> None: ...


class BatchWriter:
    """Thread-safe buffer of writes for one :class:`Store`.

    A flush commits, in this order: queued statements (in queue order), deletions (one
    statement per table and column), updates (one per table and set of columns), inserts (one
    per table). Queueing is O(1) per row: the generation run queues a few rows per stage from
    the event loop, and a flush may hold thousands.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._statements: list[tuple[str, Sequence[Any]]] = []
        self._rows: dict[tuple[str, OnConflict], list[Mapping[str, Any]]] = {}
        self._keyed: dict[tuple[str, OnConflict, str], dict[Any, Mapping[str, Any]]] = {}
        self._deletes: dict[tuple[str, str], set[Any]] = {}
        self._updates: dict[tuple[str, str, tuple[str, ...]], dict[Any, Mapping[str, Any]]] = {}
        self._sources: list[PendingSource] = []
        self.flushes = 0

    def attach(self, source: PendingSource) -> None:
        """Commit ``source``'s rows in each flush's transaction, after this writer's own."""
        self._sources.append(source)

    def add(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        on_conflict: OnConflict = "error",
        key: str | None = None,
    ) -> None:
        """Queue rows for ``table`` (inserted by column name at the next flush).

        ``key``: with ``on_conflict="replace"``, the key column; a later queued row with the same
        key replaces an earlier one (DuckDB refuses duplicate keys within one insert).
        """
        rows = list(rows)
        if not rows:
            return
        with self._lock:
            if key is None:
                self._rows.setdefault((table, on_conflict), []).extend(rows)
                return
            queued = self._keyed.setdefault((table, on_conflict, key), {})
            for row in rows:
                queued.pop(row[key], None)  # re-queued: it moves behind the rows queued since
                queued[row[key]] = row

    def delete(self, table: str, column: str, value: Any) -> None:
        """Queue the deletion of ``table``'s rows whose ``column`` equals ``value``."""
        with self._lock:
            self._deletes.setdefault((table, column), set()).add(value)

    def update(self, table: str, key: str, row: Mapping[str, Any]) -> None:
        """Queue setting ``row``'s other columns on the row whose ``key`` equals ``row[key]``;
        a later update of the same row with the same columns replaces this one."""
        with self._lock:
            queued = self._updates.setdefault((table, key, tuple(sorted(row))), {})
            queued.pop(row[key], None)
            queued[row[key]] = row

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue a statement; statements run first at the next flush, in queue order."""
        with self._lock:
            self._statements.append((sql, params))

    @property
    def pending(self) -> int:
        with self._lock:
            return (
                len(self._statements)
                + sum(len(v) for v in self._deletes.values())
                + sum(len(v) for v in self._updates.values())
                + sum(len(r) for r in self._rows.values())
                + sum(len(r) for r in self._keyed.values())
            )

    def flush(self) -> int:
        """Commit everything queued in one transaction; returns how many writes it held."""
        with self._lock:
            statements, self._statements = self._statements, []
            deletes, self._deletes = self._deletes, {}
            updates, self._updates = self._updates, {}
            inserts = [(t, c, b) for (t, c), b in self._rows.items()]
            inserts += [(t, c, list(b.values())) for (t, c, _), b in self._keyed.items()]
            self._rows, self._keyed = {}, {}
        held = len(statements) + sum(len(v) for v in deletes.values())
        held += sum(len(v) for v in updates.values()) + sum(len(b) for _, _, b in inserts)
        taken = [(source, source.take()) for source in self._sources]
        taken = [(source, t) for source, t in taken if t]
        if not held and not taken:
            return 0
        try:
            with self.store.transaction():
                for sql, params in statements:
                    self.store.execute(sql, params)
                for (table, column), values in deletes.items():
                    self.store.delete_where_in(table, column, sorted(values, key=str))
                for (table, key, _), rows in updates.items():
                    self.store.update_by_key(table, key, list(rows.values()))
                for table, on_conflict, batch in inserts:
                    self.store.insert(table, batch, on_conflict=on_conflict)
                for source, t in taken:
                    held += source.write(self.store, t)
        except BaseException:
            for source, t in taken:
                source.restore(t)
            raise
        self.flushes += 1
        return held
