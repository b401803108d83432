"""Batch delivery (``delivery=batch``): rounds of provider batches instead of one request a call.

A batch API (OpenAI Batch, Anthropic Message Batches) answers within hours at half the price,
so a run advances every sample in flight one stage per *round*: each call of a batch role parks
its request with the endpoint's :class:`Batcher` and waits; when every sample in flight waits on
a batcher (:class:`Rounds` knows, the runner tells it which samples are in flight and the layer
which calls are running: no timer decides), all parked requests are written as batches,
submitted, polled and their result lines handed back to the callers, which parse them exactly
as a synchronous answer (refusals, parse failures, cache writes and traces unchanged). A failed
or expired item fails its call with a retryable error, so the layer's retry goes into the next
round; it never becomes a default value.

Resumable: a request's ``custom_id`` is derived from the call's cache key and the request
body, so a rerun after a kill asks for the same ids; the batcher finds them in the store
(data/store/batches.py) in a submitted batch and polls that batch instead of paying again.

Why rounds and not a timer: a flush on a timer makes batch composition, and so tests, depend
on timing; counting who waits is exact. Samples never registered (a caller outside the runner)
do not hold a round back: their parked requests are flushed once every registered sample waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.models.base import ProviderError
from data.store import Store
from data.store import batches as stored

Sleep = Callable[[float], Awaitable[object]]

#: the cache key of the layer call whose request is being sent (set by the layer)
CALL_KEY: ContextVar[str | None] = ContextVar("icm_call_key", default=None)


@dataclass(eq=False)
class Participant:
    """One sample in flight: how many of its model calls run, and how many of them are parked."""

    calls: int = 0
    parked: int = 0

    @property
    def waiting(self) -> bool:
        return self.calls > 0 and self.parked >= self.calls


_PARTICIPANT: ContextVar[Participant | None] = ContextVar("icm_batch_participant", default=None)


@dataclass(frozen=True)
class BatchState:
    """A batch as last polled: the provider's status word and whether it is final."""

    status: str
    ended: bool
    detail: dict[str, Any] = field(default_factory=dict)


class BatchBackend(Protocol):
    """One provider's batch endpoints (agents/models/providers/*_batch.py)."""

    #: provider name recorded with each batch
    provider: str
    #: the endpoint the batches live at (a batch id is looked up per endpoint)
    endpoint: str

    async def submit(
        self, requests: list[tuple[str, dict[str, Any]]]
    ) -> tuple[str, str, str | None]:
        """Submit (custom_id, request body) pairs; returns (batch id, status, input file id)."""
        ...

    async def poll(self, batch_id: str) -> BatchState: ...

    async def results(self, batch_id: str, state: BatchState) -> dict[str, str]:
        """custom_id -> the result line (JSON text) of every request the ended batch answered."""
        ...

    def missing(self, batch_id: str, state: BatchState) -> ProviderError:
        """The error of a request the ended batch gave no line for."""
        ...


def custom_id(call_key: str | None, body: dict[str, Any]) -> str:
    """A request's id within its batch: the call's cache key plus the exact body (a re-ask or a
    hotter refusal retry is another request). 64 characters at most, ``[a-zA-Z0-9_-]``, as
    both providers require; the same on every rerun."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(f"{call_key}\n{text}".encode()).hexdigest()
    return f"icm-{digest[:48]}"


#: what a parked request gets back: the id of the batch that answered it, and its result line
Answer = tuple[str, dict[str, Any]]


@dataclass(eq=False)
class _Parked:
    custom_id: str
    body: dict[str, Any]
    future: asyncio.Future[Answer]
    participant: Participant | None


class Rounds:
    """Decides when a round starts: when every registered sample waits on a batcher.

    One per model layer and event loop. Every check is scheduled with ``call_soon``, after the
    tasks already scheduled: concurrent calls of one sample (the per-rule explainers) have all
    entered the layer by then, so a round never leaves a sibling call behind."""

    def __init__(self) -> None:
        self.participants: set[Participant] = set()
        self.batchers: list[Batcher] = []
        self._scheduled = False
        self._running: asyncio.Task[None] | None = None
        self.rounds = 0

    # ---------------------------------------------------------------- who is in flight
    @contextlib.contextmanager
    def participant(self) -> Iterator[Participant]:
        """Around one sample's work (the runner): its calls count towards the round."""
        member = Participant()
        self.participants.add(member)
        token = _PARTICIPANT.set(member)
        try:
            yield member
        finally:
            _PARTICIPANT.reset(token)
            self.participants.discard(member)
            self.poke()

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Around one layer call: the sample is not waiting while a call runs unparked."""
        member = _PARTICIPANT.get()
        if member is None or member not in self.participants:
            yield
            return
        member.calls += 1
        try:
            yield
        finally:
            member.calls -= 1
            self.poke()

    # ---------------------------------------------------------------- parking
    def park(
        self, batcher: Batcher, custom_id: str, body: dict[str, Any]
    ) -> asyncio.Future[Answer]:
        member = _PARTICIPANT.get()
        if member is not None and member not in self.participants:
            member = None
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        batcher.pending.append(_Parked(custom_id, body, future, member))
        if member is not None:
            member.parked += 1
        self.poke()
        return future

    def resolve(self, item: _Parked, answer: Answer | None, error: BaseException | None) -> None:
        if item.participant is not None:
            item.participant.parked -= 1
        if item.future.done():
            return
        if error is not None or answer is None:
            item.future.set_exception(error or ProviderError("server", "no batch answer"))
        else:
            item.future.set_result(answer)

    # ---------------------------------------------------------------- rounds
    def poke(self) -> None:
        if self._scheduled or self._running is not None:
            return
        if not any(b.pending for b in self.batchers):
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._scheduled = False
        if self._running is not None or not any(b.pending for b in self.batchers):
            return
        if all(member.waiting for member in self.participants):
            self._running = asyncio.get_running_loop().create_task(self._round())

    async def _round(self) -> None:
        try:
            self.rounds += 1
            await asyncio.gather(*(b.flush() for b in self.batchers if b.pending))
        finally:
            self._running = None
            self.poke()


class Batcher:
    """The parked requests of one batch endpoint, and how one round of them is delivered."""

    def __init__(
        self,
        backend: BatchBackend,
        rounds: Rounds,
        store: Store | None,
        *,
        poll_s: float,
        timeout_s: float,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.backend = backend
        self.rounds = rounds
        self.store = store
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.pending: list[_Parked] = []
        self.submitted = 0
        rounds.batchers.append(self)

    async def ask(self, body: dict[str, Any]) -> Answer:
        """(batch id, result line as parsed JSON) for one request, delivered in the next round."""
        return await self.rounds.park(self, custom_id(CALL_KEY.get(), body), body)

    async def _in_store(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(store, *args)`` on a worker thread (the store's lock may be held by a flush);
        None without a store."""
        if self.store is None:
            return None
        return await asyncio.to_thread(call, self.store, *args)

    async def flush(self) -> None:
        """Deliver every parked request: stored results, open batches polled, the rest sent."""
        items, self.pending = self.pending, []
        by_id: dict[str, list[_Parked]] = {}
        for item in items:
            by_id.setdefault(item.custom_id, []).append(item)
        try:
            endpoint = self.backend.endpoint
            known = await self._in_store(stored.stored_results, endpoint, list(by_id)) or {}
            if known:
                await self._in_store(stored.mark_consumed, endpoint, list(known))
            for cid, (known_batch, line) in known.items():
                for item in by_id.pop(cid):
                    self.rounds.resolve(item, (known_batch, json.loads(line)), None)
            open_ids: dict[str, str] = (
                await self._in_store(stored.open_requests, endpoint, list(by_id)) or {}
            )
            groups: dict[str, dict[str, list[_Parked]]] = {}
            for cid, batch_id in open_ids.items():
                groups.setdefault(batch_id, {})[cid] = by_id.pop(cid)
            if by_id:
                batch_id = await self._submit(by_id)
                groups[batch_id] = by_id
            await asyncio.gather(*(self._deliver(b, g) for b, g in groups.items()))
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else ProviderError("connection", str(exc))
            for item in items:
                if not item.future.done():
                    self.rounds.resolve(item, None, error)
            if not isinstance(exc, Exception):
                raise

    async def _submit(self, requests: dict[str, list[_Parked]]) -> str:
        lines = [(cid, group[0].body) for cid, group in requests.items()]
        batch_id, status, file_id = await self.backend.submit(lines)
        self.submitted += 1
        await self._in_store(
            _record_submitted, batch_id, self.backend, status, [c for c, _ in lines], file_id
        )
        return batch_id

    async def _deliver(self, batch_id: str, requests: dict[str, list[_Parked]]) -> None:
        deadline = time.monotonic() + self.timeout_s
        seen = None
        while True:
            state = await self.backend.poll(batch_id)
            if state.ended:
                break
            if state.status != seen:  # what `icm` shows of a batch still running
                seen = state.status
                await self._in_store(stored.record_status, batch_id, state.status)
            if time.monotonic() >= deadline:
                error = ProviderError(
                    "timeout",
                    f"batch {batch_id} still {state.status} after {self.timeout_s:g} s "
                    "(batch_timeout_s); it stays in the store and is polled again next round",
                )
                for group in requests.values():
                    for item in group:
                        self.rounds.resolve(item, None, error)
                return
            await self.sleep(self.poll_s)
        lines = await self.backend.results(batch_id, state)
        await self._in_store(_record_ended, batch_id, state, lines)
        used = [cid for cid in requests if cid in lines]
        await self._in_store(stored.mark_consumed, self.backend.endpoint, used)
        for cid, group in requests.items():
            line = lines.get(cid)
            for item in group:
                if line is None:
                    self.rounds.resolve(item, None, self.backend.missing(batch_id, state))
                else:
                    self.rounds.resolve(item, (batch_id, json.loads(line)), None)


def _record_submitted(
    store: Store,
    batch_id: str,
    backend: BatchBackend,
    status: str,
    custom_ids: list[str],
    file_id: str | None,
) -> None:
    stored.record_submitted(
        store,
        batch_id=batch_id,
        provider=backend.provider,
        endpoint=backend.endpoint,
        status=status,
        custom_ids=custom_ids,
        input_file_id=file_id,
    )


def _record_ended(store: Store, batch_id: str, state: BatchState, lines: dict[str, str]) -> None:
    stored.record_ended(store, batch_id, state.status, lines, state.detail)
