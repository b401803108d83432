"""Batched writes: collect rows and statements, commit them together.

A DuckDB commit costs ~10-20 ms and a one-row DataFrame insert ~7 ms on this class of machine,
so a pipeline that commits each stage result separately spends more time writing than its
models spend thinking once calls are concurrent. :class:`BatchWriter` keeps the writes of many
samples and commits them in one transaction (statements first, in order, then one insert per
table). The caller flushes on a timer; what was not flushed when the process dies is lost,
which for the generation run means those samples are still ``pending`` and run again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from data.store.store import OnConflict, Store


class BatchWriter:
    """Thread-safe buffer of writes for one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._statements: list[tuple[str, Sequence[Any]]] = []
        self._rows: dict[tuple[str, OnConflict], list[Mapping[str, Any]]] = {}
        self.flushes = 0

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
            queued = self._rows.setdefault((table, on_conflict), [])
            if key is None:
                queued.extend(rows)
            else:
                fresh = {row[key] for row in rows}
                queued[:] = [row for row in queued if row.get(key) not in fresh] + rows

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue a statement; statements run before the queued inserts, in queue order."""
        with self._lock:
            self._statements.append((sql, params))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._statements) + sum(len(r) for r in self._rows.values())

    def flush(self) -> int:
        """Commit everything queued in one transaction; returns how many writes it held."""
        with self._lock:
            statements, self._statements = self._statements, []
            rows, self._rows = self._rows, {}
        if not statements and not rows:
            return 0
        with self.store.transaction():
            for sql, params in statements:
                self.store.execute(sql, params)
            for (table, on_conflict), batch in rows.items():
                self.store.insert(table, batch, on_conflict=on_conflict)
        self.flushes += 1
        return len(statements) + sum(len(b) for b in rows.values())
