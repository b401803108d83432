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

Two kinds of failure, two answers. A write the store cannot make at all (disk full, I/O error,
an invalidated database) raises :class:`StoreWriteError` and the writer refuses every later
flush: the run must stop, not go on paying for answers it cannot keep. A write one sample's
rows break (a duplicate key, a value of the wrong type) must not take the other samples of the
batch with it: the flush is retried with each sample's rows in a transaction of their own, and
the sample that still fails is handed to ``on_sample_error`` (the run records it as failed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from data.store.store import OnConflict, Store, StoreWriteError, is_storage_failure

#: called with (sample id, one-line reason) for a sample whose rows could not be written
OnSampleError = Callable[[str, str], None]


class PendingSource(Protocol):
    """A buffer of rows that commits inside a :class:`BatchWriter`'s flush.

    ``take`` hands over what is buffered (anything the source understands; falsy when empty),
    ``write`` inserts it through the store inside the flush's transaction and returns how many
    rows it held, and ``restore`` takes it back when that transaction fails.
    """

    def take(self) -> Any: ...

    def write(self, store: Store, taken: Any) -> int: ...

    def restore(self, taken: Any) -> None: ...


class RowQueue(Protocol):
    """Where typed writes are queued (``records.queue_*``): a :class:`BatchWriter`, or a
    :class:`SampleWrites` in a process that does not hold the store."""

    def add(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        on_conflict: OnConflict = "error",
        key: str | None = None,
    ) -> None: ...

    def delete(self, table: str, column: str, value: Any) -> None: ...

    def update(self, table: str, key: str, row: Mapping[str, Any]) -> None: ...


class BatchWriter:
    """Thread-safe buffer of writes for one :class:`Store`.

    A flush commits, in this order: queued statements (in queue order), deletions (one
    statement per table and column), updates (one per table and set of columns), inserts (one
    per table). Queueing is O(1) per row: the generation run queues a few rows per stage from
    the event loop, and a flush may hold thousands.
    """

    def __init__(self, store: Store, on_sample_error: OnSampleError | None = None) -> None:
        self.store = store
        self.on_sample_error = on_sample_error
        self.failure: StoreWriteError | None = None
        """Set by the first flush the store could not take; every later flush raises it."""
        # re-entrant: :meth:`atomically` holds it around several queueing calls
        self._lock = threading.RLock()
        self._statements: list[tuple[str, Sequence[Any]]] = []
        self._rows: dict[tuple[str, OnConflict], list[Mapping[str, Any]]] = {}
        self._keyed: dict[tuple[str, OnConflict, str], dict[Any, Mapping[str, Any]]] = {}
        self._deletes: dict[tuple[str, str], set[Any]] = {}
        self._updates: dict[tuple[str, str, tuple[str, ...]], dict[Any, Mapping[str, Any]]] = {}
        self._sources: list[PendingSource] = []
        self.flushes = 0

    def atomically(self) -> AbstractContextManager[Any]:
        """Hold off flushes while several writes are queued (``with writer.atomically():``),
        so they commit in the same transaction: a Ray driver applies a sample's shipped rows
        this way, and a crash never leaves half of them in the store."""
        return self._lock

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
        """Commit everything queued in one transaction; returns how many writes it held.

        Raises:
            StoreWriteError: the store cannot be written (then, and ever after, for this
                writer); the rows of this flush stay queued.
        """
        if self.failure is not None:
            raise self.failure
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
        writes = _Writes(statements, deletes, updates, inserts)
        try:
            with self.store.transaction():
                writes.apply(self.store)
                for source, t in taken:
                    held += source.write(self.store, t)
        except Exception as exc:
            if is_storage_failure(exc) or self.on_sample_error is None:
                for source, t in taken:
                    source.restore(t)
                if is_storage_failure(exc):
                    raise self.fail(exc) from exc
                raise
            self._commit_apart(writes, taken)
        except BaseException:
            for source, t in taken:
                source.restore(t)
            raise
        self.flushes += 1
        return held

    def fail(self, exc: BaseException) -> StoreWriteError:
        """Mark the store unwritable (by ``exc``, a storage failure met here or elsewhere) and
        return the error every later flush raises."""
        if self.failure is None:
            self.failure = (
                exc if isinstance(exc, StoreWriteError) else StoreWriteError(self.store.path, exc)
            )
        return self.failure

    def _commit_apart(self, writes: _Writes, taken: list[tuple[PendingSource, Any]]) -> None:
        """After a failed flush: the writes of no sample and the attached sources' rows (the
        calls) in one transaction, then each sample's writes in its own. A sample whose writes
        still fail is reported to ``on_sample_error``; the others are kept."""
        shared, by_sample = writes.split()
        try:
            with self.store.transaction():
                shared.apply(self.store)
                for source, t in taken:
                    source.write(self.store, t)
        except BaseException as exc:
            for source, t in taken:
                source.restore(t)
            if is_storage_failure(exc):
                raise self.fail(exc) from exc
            raise
        assert self.on_sample_error is not None
        for sample_id, own in by_sample.items():
            try:
                with self.store.transaction():
                    own.apply(self.store)
            except Exception as exc:
                if is_storage_failure(exc):
                    raise self.fail(exc) from exc
                reason = " ".join(str(exc).split()) or type(exc).__name__
                self.on_sample_error(sample_id, f"store write failed: {reason}")


class _Writes:
    """One flush's writes in commit order (statements, deletions, updates, inserts)."""

    def __init__(
        self,
        statements: list[tuple[str, Sequence[Any]]],
        deletes: dict[tuple[str, str], set[Any]],
        updates: dict[tuple[str, str, tuple[str, ...]], dict[Any, Mapping[str, Any]]],
        inserts: list[tuple[str, OnConflict, list[Mapping[str, Any]]]],
    ) -> None:
        self.statements = statements
        self.deletes = deletes
        self.updates = updates
        self.inserts = inserts

    def apply(self, store: Store) -> None:
        for sql, params in self.statements:
            store.execute(sql, params)
        for (table, column), values in self.deletes.items():
            store.delete_where_in(table, column, sorted(values, key=str))
        for (table, key, _), rows in self.updates.items():
            store.update_by_key(table, key, list(rows.values()))
        for table, on_conflict, batch in self.inserts:
            if batch:
                store.insert(table, batch, on_conflict=on_conflict)

    def split(self) -> tuple[_Writes, dict[str, _Writes]]:
        """(the writes of no sample, each sample's writes); a write belongs to a sample when
        it deletes by ``sample_id`` or its row carries one. Statements belong to none."""
        shared = _Writes(list(self.statements), {}, {}, [])
        by_sample: dict[str, _Writes] = {}

        def own(row_or_id: Any) -> _Writes:
            if isinstance(row_or_id, Mapping):
                row_or_id = row_or_id.get("sample_id")
            if not isinstance(row_or_id, str):
                return shared
            return by_sample.setdefault(row_or_id, _Writes([], {}, {}, []))

        for (table, column), values in self.deletes.items():
            for value in values:
                target = own(value) if column == "sample_id" else shared
                target.deletes.setdefault((table, column), set()).add(value)
        for group, rows in self.updates.items():
            for row_key, row in rows.items():
                own(row).updates.setdefault(group, {})[row_key] = row
        for table, on_conflict, batch in self.inserts:
            for row in batch:
                target = own(row)
                if not target.inserts or target.inserts[-1][:2] != (table, on_conflict):
                    target.inserts.append((table, on_conflict, []))
                target.inserts[-1][2].append(row)
        return shared, by_sample


#: one queued write as :class:`SampleWrites` keeps it: (method, positional args, keyword args)
Write = tuple[str, tuple[Any, ...], dict[str, Any]]


class SampleWrites:
    """A :class:`RowQueue` that keeps each sample's writes apart instead of committing them.

    Why: a process that does not hold the store (a Ray actor) runs the pipeline with this in
    place of the run's :class:`BatchWriter`; when a sample finishes, :meth:`take` hands over
    exactly that sample's writes, which the driver replays (:func:`replay`) into its own writer.
    Every per-sample row carries ``sample_id`` (deletions and updates are keyed by it), which
    is how a write is routed; anything else is refused rather than guessed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: dict[str, list[Write]] = {}
        self._dropped: set[str] = set()

    def _keep(self, sample_id: Any, write: Write) -> None:
        if not isinstance(sample_id, str):
            raise ValueError(f"{write[0]} on {write[1][0]}: a per-sample write needs a sample_id")
        with self._lock:
            if sample_id not in self._dropped:
                self._writes.setdefault(sample_id, []).append(write)

    def add(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        on_conflict: OnConflict = "error",
        key: str | None = None,
    ) -> None:
        by_sample: dict[Any, list[Mapping[str, Any]]] = {}
        for row in rows:
            by_sample.setdefault(row.get("sample_id"), []).append(dict(row))
        for sample_id, batch in by_sample.items():
            self._keep(sample_id, ("add", (table, batch), {"on_conflict": on_conflict, "key": key}))

    def delete(self, table: str, column: str, value: Any) -> None:
        if column != "sample_id":
            raise ValueError(f"delete on {table}.{column}: only per-sample deletions are kept")
        self._keep(value, ("delete", (table, column, value), {}))

    def update(self, table: str, key: str, row: Mapping[str, Any]) -> None:
        self._keep(row.get("sample_id"), ("update", (table, key, dict(row)), {}))

    def take(self, sample_id: str) -> list[Write]:
        """The sample's writes in queue order (and forget them)."""
        with self._lock:
            return self._writes.pop(sample_id, [])

    def drop(self, sample_id: str) -> None:
        """Forget the sample's writes, and ignore any that still come (an abandoned replay's
        parallel branches may finish after it ended)."""
        with self._lock:
            self._writes.pop(sample_id, None)
            self._dropped.add(sample_id)


def replay(writes: Sequence[Write], writer: RowQueue) -> None:
    """Queue ``writes`` (from :meth:`SampleWrites.take`) in ``writer``, in their order."""
    for method, args, kwargs in writes:
        if method not in ("add", "delete", "update"):
            raise ValueError(f"not a queued write: {method}")
        getattr(writer, method)(*args, **kwargs)
