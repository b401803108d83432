"""Trace rows of model calls (``llm_calls``) and the batched writer that puts them in the store.

One row per call to a model binding: role, model, endpoint, prompt ids and hash, the messages
with images as ``{"image_sha256", "media_type", ...}`` placeholders (never bytes or base64), the
generation parameters and how the request went (dialect, requests made, waits, refusal retry
and fallback links), ``image_mode`` (``native``, ``none (text-only model)``, or ``text-only
retry (endpoint takes no images)``), raw output, parsed output, status, error, tokens, latency,
cost, cache hit. Every attempt of a call (a refusal retry, a fallback, a text-only retry) is a
row of its own. Keys never appear: they are not
in any field we build, and every free-text field is passed through :func:`redact` in case a
server echoed one back.

DuckDB pays a commit per insert (milliseconds), so rows are buffered and written in batches:
when ``batch_size`` rows are waiting, when ``interval_s`` has passed since the last write, and on
:meth:`StoreWriter.flush` (the layer flushes on close). A crash loses at most the buffered rows;
``batch_size=1`` writes every row at once for those who want that instead. With
``batch_size=None`` nothing is written until the owner calls :meth:`StoreWriter.flush`: the
generation run does that from a worker thread on its timer, so the event loop never waits for a
commit (or for the store's lock while another thread commits).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from agents.models.cache import ResponseCache
from agents.models.credentials import redact
from data.redaction import known_secrets
from data.redaction import redact as redact_text
from data.store import Store, records
from prompts import PromptTemplate


def prompt_identity(
    prompt: PromptTemplate | Sequence[PromptTemplate] | None,
) -> tuple[str | None, str | None]:
    """(prompt_id, prompt_hash) for one template or several (ids joined by ``+``).

    Several templates hash as the sha256 of their hashes joined by ``+``, so the pair changes
    when any one of them is edited.
    """
    if prompt is None:
        return None, None
    if isinstance(prompt, PromptTemplate):
        return prompt.prompt_id, prompt.sha256
    templates = list(prompt)
    if not templates:
        return None, None
    if len(templates) == 1:
        return templates[0].prompt_id, templates[0].sha256
    joined = "+".join(t.sha256 for t in templates)
    return "+".join(t.prompt_id for t in templates), hashlib.sha256(joined.encode()).hexdigest()


REDACTED_FIELDS = ("raw_output", "parsed_json", "error", "messages_json", "params_json")


class StoreWriter:
    """Buffers ``llm_calls`` rows and the cache's new entries; writes both in one transaction.

    Thread-safe: rows are added from the event loop while a worker thread may be flushing.
    """

    def __init__(
        self,
        store: Store | None,
        cache: ResponseCache,
        secrets: set[str],
        *,
        batch_size: int | None = 64,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        collect: bool = False,
    ) -> None:
        self.store = store
        #: keep rows for :meth:`take_sample` and never write them (a Ray actor, whose rows the
        #: driver commits; a driver's cache replay, whose rows are kept only when it completes)
        self.collect = collect
        self.cache = cache
        self.secrets = secrets
        self.batch_size = None if batch_size is None else max(1, batch_size)
        self.interval_s = interval_s
        self._clock = clock
        self._rows: list[dict[str, Any]] = []
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        self._last_flush = clock()

    def add(self, row: dict[str, Any]) -> None:
        """Queue one trace row (redacted now, while the secrets are known)."""
        if self.store is None and not self.collect:
            return
        secrets = known_secrets(self.secrets)  # once for the row's fields, not per field
        for name in REDACTED_FIELDS:
            value = row.get(name)
            if isinstance(value, str) and value:
                row[name] = redact_text(value, secrets)
        with self._lock:
            if row.get("sample_id") in self._dropped:
                return
            self._rows.append(row)
            due = (
                not self.collect
                and self.batch_size is not None
                and (
                    len(self._rows) >= self.batch_size
                    or self._clock() - self._last_flush >= self.interval_s
                )
            )
        if due:
            self.flush()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """Hand over the buffered (trace rows, cache rows), or None when both are empty.

        With :meth:`write` and :meth:`restore` this is a ``data.store.batch.PendingSource``:
        the generation run attaches the writer to its batch writer, so a sample's calls commit
        in the same transaction as the stage results written from them.
        """
        self._last_flush = self._clock()
        if self.store is None or self.collect:
            return None
        cache_rows = self._redacted(self.cache.take_pending())
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows and not cache_rows:
            return None
        return rows, cache_rows

    def take_sample(self, sample_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(trace rows, new cache rows) of one sample's calls, handed over and forgotten
        (``collect`` mode: they travel with the sample to the process that holds the store)."""
        with self._lock:
            rows = [r for r in self._rows if r.get("sample_id") == sample_id]
            self._rows = [r for r in self._rows if r.get("sample_id") != sample_id]
        made = {r["cache_key"] for r in rows if r.get("status") == "ok" and not r.get("cache_hit")}
        return rows, self._redacted(self.cache.take_pending(made)) if made else []

    def drop_sample(self, sample_id: str) -> list[dict[str, Any]]:
        """``collect`` mode: hand over the sample's trace rows and ignore any that still come
        (an abandoned replay's parallel branches may finish after it ended)."""
        with self._lock:
            self._dropped.add(sample_id)
            rows = [r for r in self._rows if r.get("sample_id") == sample_id]
            self._rows = [r for r in self._rows if r.get("sample_id") != sample_id]
        return rows

    def _redacted(self, cache_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in cache_rows:
            for name in ("raw_output", "parsed_json"):
                row[name] = redact(row[name], self.secrets)
        return cache_rows

    def write(self, store: Store, taken: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> int:
        """Insert what :meth:`take` handed over (inside the caller's transaction)."""
        rows, cache_rows = taken
        records.record_calls(store, rows, cache_rows)
        return len(rows) + len(cache_rows)

    def restore(self, taken: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
        """Put rows back after a failed write, ahead of newer ones."""
        rows, cache_rows = taken
        with self._lock:
            self._rows = rows + self._rows
        self.cache.requeue(cache_rows)

    def flush(self) -> None:
        """Write everything buffered. On failure the rows stay queued and the error propagates."""
        taken = self.take()
        if taken is None or self.store is None:
            return
        try:
            with self.store.transaction():
                self.write(self.store, taken)
        except BaseException:
            self.restore(taken)
            raise
