"""Never pay twice: successful answers cached in the store, keyed by everything that shapes them.

The key is the sha256 of canonical JSON over: provider, model, endpoint, structured-output
dialect, generation parameters (temperature, max tokens, top_p, seed: retries, timeouts and
concurrency only change how we ask and are left out), the messages with each image replaced by
its content hash and sent size, the schema's JSON schema, the prompt template hash, and the
caller's stage attempt number (inspect's "epoch"): a stage deliberately re-run with the same prompt
must be free to get a new answer, while re-running the same command repeats the same attempt
numbers and hits. Editing a template, a schema or a parameter misses the cache.

Only ``ok`` answers are stored: refusals, content-filter stops, parse failures and errors never
are (the layer calls :meth:`ResponseCache.put` for ``ok`` only, and ``put`` refuses anything
without a parsed value).

DuckDB makes single-row writes expensive (milliseconds each, a commit apiece), so new entries are
kept in memory and written in batches by the layer's :class:`~agents.models.trace.StoreWriter`;
the set of keys already in the file is read once, so a miss costs a set lookup, not a query.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel

from agents.models.base import GenerationParams, Message
from agents.models.images import image_placeholder
from data.store import Store, queries, utcnow

_MEMORY_ENTRIES = 4096


class CacheMiss(Exception):
    """A cache-only layer met a call the cache cannot answer (``ModelLayer(cache_only=True)``).

    Why an exception: a Ray driver replays a sample against the cache before dispatching it;
    the first miss ends that replay at once (nothing is sent), and the sample goes to an actor
    with the entries that did hit.
    """

    def __init__(self, key: str) -> None:
        super().__init__(f"no cached answer for {key[:12]}")
        self.key = key


@cache
def schema_document(schema: type[BaseModel]) -> tuple[dict[str, Any], str]:
    """The schema's JSON schema and its canonical JSON text, computed once per class."""
    document = schema.model_json_schema()
    return document, json.dumps(document, sort_keys=True, separators=(",", ":"))


def messages_for_record(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages as plain data with images as placeholders (no bytes, no base64)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "text": m.text}
        if m.images:
            item["images"] = [image_placeholder(i) for i in m.images]
            if m.images_first:  # only when set: earlier keys stay as they were
                item["images_first"] = True
        out.append(item)
    return out


def canonical_json_bytes(value: Any) -> bytes:
    """UTF-8 of ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``, the text every cache key hashes.

    orjson writes it about ten times faster (a key is made for every call; its messages carry
    the whole prompt), and writes the same bytes for what a key holds: text, integers, None,
    booleans, lists and dicts with ASCII keys, and floats written without an exponent. Any
    other value (a float such as 1e-05, which json writes ``1e-05`` and orjson ``1e-5``) goes
    to ``json`` itself, so a key never changes with the writer.
    """
    if _orjson_writes_the_same(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):  # an integer past 64 bits, a lone surrogate
            pass
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def _orjson_writes_the_same(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        written = repr(value)
        return "e" not in written and "n" not in written  # no exponent, inf or nan
    if kind is list or kind is tuple:
        return all(_orjson_writes_the_same(item) for item in value)
    if kind is dict:
        return all(
            type(key) is str and key.isascii() and _orjson_writes_the_same(item)
            for key, item in value.items()
        )
    return False


def cache_key(
    *,
    provider: str,
    model: str,
    endpoint: str | None,
    dialect: str | None,
    params: GenerationParams,
    messages: list[Message],
    schema: type[BaseModel],
    prompt_hash: str | None,
    attempt: int = 1,
) -> str:
    """sha256 hex digest of the canonical description of one request."""
    payload = {
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "dialect": dialect,
        "params": params.as_dict(),
        "messages": messages_for_record(messages),
        "prompt_hash": prompt_hash,
        "attempt": attempt,
    }
    digest = hashlib.sha256(canonical_json_bytes(payload))
    digest.update(b"\x00schema\x00")
    digest.update(schema_document(schema)[1].encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A cached successful answer (the row of ``llm_cache``)."""

    cache_key: str
    provider: str
    model: str
    schema_name: str
    raw_output: str
    parsed_json: str
    input_tokens: int | None
    output_tokens: int | None


class ResponseCache:
    """Read-through, write-behind cache over ``llm_cache`` (memory only without a store).

    ``keep_new``: new entries are kept for :meth:`take_pending` even without a store (a Ray
    actor ships them to the driver, which writes them).
    """

    def __init__(self, store: Store | None, *, keep_new: bool = False) -> None:
        self._store = store
        self._keep_new = keep_new
        self._memory: OrderedDict[str, CacheEntry] = OrderedDict()
        self._stored_keys: set[str] | None = None
        self._pending: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()  # put() on the event loop, flushes on a thread

    def _known_keys(self) -> set[str]:
        if self._stored_keys is None:
            self._stored_keys = queries.llm_cache_keys(self._store) if self._store else set()
        return self._stored_keys

    async def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` or None; recent entries are served from memory.

        A read from the store happens on a worker thread: the store's lock may be held by the
        run's flush thread for a commit, and waiting for it on the event loop would stall every
        call in flight.
        """
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry
        if self._store is None or key not in self._known_keys():
            return None
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> CacheEntry | None:
        assert self._store is not None
        row = queries.llm_cache_entry(self._store, key)
        if row is None:
            return None
        entry = CacheEntry(**row)
        self._remember(entry)
        return entry

    def put(self, entry: CacheEntry) -> None:
        """Remember a successful answer; it reaches the store at the next flush."""
        if not entry.parsed_json:
            raise ValueError("only answers that validated against their schema are cached")
        if entry.cache_key in self._memory or (
            self._stored_keys is not None and entry.cache_key in self._stored_keys
        ):
            return
        self._remember(entry)
        if self._store is not None or self._keep_new:
            with self._pending_lock:
                self._pending.append(asdict(entry) | {"created_at": utcnow()})
        if self._store is not None:
            self._known_keys().add(entry.cache_key)

    def seed(self, entries: list[CacheEntry]) -> None:
        """Answers looked up elsewhere (the Ray driver's store), served from memory here."""
        for entry in entries:
            self._remember(entry)

    def remembered(self, keys: list[str]) -> list[CacheEntry]:
        """The entries of ``keys`` held in memory (those a replay just hit)."""
        return [self._memory[k] for k in keys if k in self._memory]

    def is_empty(self) -> bool:
        """No entry in the store or in memory: every lookup would miss."""
        return not self._memory and not self._known_keys()

    def take_pending(self, keys: set[str] | None = None) -> list[dict[str, Any]]:
        """Rows not yet written (the writer calls this when it flushes); with ``keys``, only
        the rows of those cache keys (one sample's, shipped with it)."""
        with self._pending_lock:
            if keys is None:
                rows, self._pending = self._pending, []
                return rows
            rows = [r for r in self._pending if r["cache_key"] in keys]
            self._pending = [r for r in self._pending if r["cache_key"] not in keys]
        return rows

    def requeue(self, rows: list[dict[str, Any]]) -> None:
        """Put rows back after a failed write, ahead of newer ones."""
        with self._pending_lock:
            self._pending = rows + self._pending

    def _remember(self, entry: CacheEntry) -> None:
        self._memory[entry.cache_key] = entry
        if len(self._memory) > _MEMORY_ENTRIES:
            self._memory.popitem(last=False)
