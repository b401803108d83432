"""The model layer: the one entry point every agent role uses to ask its model for typed output.

``await layer.call(role=..., schema=..., messages=..., prompt=...)`` does, once for every
provider: bind the role to its model (config), prepare images (resize to the role's max side;
none for text-only models, noted in the trace), look up the cache, pace the request (concurrency,
requests and tokens per minute), send it, retry what is worth retrying (429 after Retry-After,
5xx/timeouts/connection errors with exponential backoff; 400/401/403 fail fast), validate the
answer with pydantic and re-ask on a validation failure (a truncated or malformed answer
included), ask again after a refusal (``refusal_retries``, at a non-zero temperature) and then
the role's fallback model, ask text-only when an endpoint answers that its model takes no images,
and record one trace row per attempt.

A call ends in exactly one of four statuses, and only ``ok`` carries a value:
``ok``, ``parse_failed`` (raw text kept), ``refused`` (never cached), ``failed`` (error kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel

from agents.models.answer_bounds import TOO_LARGE, capped, size_of, too_large_error
from agents.models.base import GenerationParams, ImageInput, Message, Provider, ProviderError
from agents.models.batching import CALL_KEY, Participant, Rounds
from agents.models.cache import (
    CacheEntry,
    CacheMiss,
    ResponseCache,
    cache_key,
    messages_for_record,
)
from agents.models.credentials import check_keys, read_key
from agents.models.images import IMAGE_MODE_TEXT_RETRY, fit_images, without_images
from agents.models.parsing import reask_messages, validate_answer
from agents.models.pricing import Price, resolve_price
from agents.models.providers import make_provider
from agents.models.rate_limit import RateLimiter
from agents.models.result import CallResult, Status
from agents.models.retry import Attempts, Sleep, request_with_retries
from agents.models.settings import (
    REFUSAL_RETRY_TEMPERATURE,
    ModelConfig,
    RoleBinding,
    RoleSettings,
)
from agents.models.trace import StoreWriter, prompt_identity
from data.store import Store, utcnow
from prompts import PromptTemplate

T = TypeVar("T", bound=BaseModel)

TextOnly = list[Message] | Callable[[], list[Message]]
"""A call's request for a model that cannot see, or the function that renders it (called only
when that request is needed)."""

#: the concurrency cap of a ``delivery=batch`` role: its requests wait for a round, all at once
BATCH_SLOTS = 1_000_000


def _call_ids() -> Iterator[str]:
    """Trace row ids: 32 hex digits, a random 64-bit prefix drawn once per process (rows of
    shard stores merge into one; a forked child draws its own) and a counter, so no call pays
    ``uuid4``'s system call."""
    prefix = uuid.uuid4().hex[:16]
    return (f"{prefix}{n:016x}" for n in itertools.count())


_CALL_IDS = _call_ids()


def _new_call_ids() -> None:
    global _CALL_IDS
    _CALL_IDS = _call_ids()


os.register_at_fork(after_in_child=_new_call_ids)


#: no loop seen yet (or the last one's clients closed)
_NO_LOOP: tuple[Callable[[], object], None] = (lambda: None, None)


def _json(value: Any) -> str:
    """A trace row's JSON column: sorted keys, no spaces, as ``data.store.to_json`` writes it,
    by orjson (a call's messages are kilobytes, and ``json.dumps`` was 2 % of a run's CPU)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


@dataclass
class _LoopState:
    """Clients and limiters bound to one event loop (httpx connections cannot cross loops)."""

    providers: dict[tuple[str, RoleSettings], Provider]
    limiters: dict[tuple[str, str], RateLimiter]
    rounds: Rounds


@dataclass(frozen=True)
class _Ask(Generic[T]):
    """One ``ModelLayer.call`` as every attempt of it (retry, fallback, text-only) sends it."""

    role: str
    schema: type[T]
    messages: list[Message]
    prompt_hash: str | None
    trace: dict[str, Any]
    text_only: TextOnly | None

    def blind(self) -> list[Message]:
        """The request for a model that cannot see: ``text_only`` (rendered now if it was
        given as a function), else the same messages without their images."""
        if self.text_only is None:
            return without_images(self.messages)
        return self.text_only() if callable(self.text_only) else self.text_only


class ModelLayer:
    """Binds roles to models and runs every model call of a process. See the module docstring."""

    def __init__(
        self,
        config: ModelConfig | None = None,
        store: Store | None = None,
        *,
        run_id: str | None = None,
        use_cache: bool = True,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        flush_every: int | None = 64,
        flush_interval_s: float = 2.0,
        collect: bool = False,
        cache_only: bool = False,
    ) -> None:
        """``collect``: trace rows and new cache entries are kept per sample for
        :meth:`take_sample`, never written here (a Ray actor; ``store`` may then be None).
        ``cache_only``: a call the cache cannot answer raises :class:`CacheMiss` instead of
        asking the model (the Ray driver's replay before dispatch)."""
        if cache_only and not use_cache:
            raise ValueError("a cache-only layer needs the cache")
        self.config = config or ModelConfig()
        self.store = store
        self.run_id = run_id
        self.use_cache = use_cache
        self._sleep = sleep
        self._rng = rng
        self._secrets: set[str] = set()
        self.cache_only = cache_only
        self._cache = ResponseCache(store, keep_new=collect)
        self._writer = StoreWriter(
            store, self._cache, self._secrets, batch_size=flush_every, interval_s=flush_interval_s,
            collect=collect,
        )  # fmt: skip
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        #: the last loop's state, so a call's several lookups skip the weak dictionary (it
        #: builds a weak reference per lookup); weak, so a finished loop is not kept alive
        self._last_loop: tuple[Callable[[], object], _LoopState | None] = _NO_LOOP
        self._prices: dict[tuple[str, float | None, float | None, str], Price | None] = {}
        self._resized: dict[tuple[str, int], ImageInput] = {}

    # ------------------------------------------------------------------ lifecycle
    def check_credentials(self) -> None:
        """Raise :class:`MissingCredentialsError` for the first bound model whose key is unset.

        Covers every role and every refusal fallback, so a run fails before its first sample.
        """
        resolved = self.config.resolved()
        uses = [
            (role, b.spec, b.settings)
            for role, binding in resolved.items()
            for b in (binding, self._fallback(binding))
            if b is not None
        ]
        self._secrets.update(check_keys(uses, every_role=set(resolved)))

    @property
    def trace_buffer(self) -> StoreWriter:
        """The buffer of trace rows and cache entries (a ``data.store.batch.PendingSource``)."""
        return self._writer

    def flush(self) -> None:
        """Write buffered trace rows and cache entries to the store."""
        self._writer.flush()

    def take_sample(self, sample_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``collect`` mode: the (trace rows, new cache rows) of one sample's calls."""
        return self._writer.take_sample(sample_id)

    def drop_sample(self, sample_id: str) -> list[dict[str, Any]]:
        """``collect`` mode: the sample's trace rows so far, and later ones are ignored."""
        return self._writer.drop_sample(sample_id)

    def seed_cache(self, entries: list[CacheEntry]) -> None:
        """Serve these answers from memory (entries the Ray driver found for a sample)."""
        self._cache.seed(entries)

    def cached_entries(self, keys: list[str]) -> list[CacheEntry]:
        """The cache entries of ``keys`` this layer just served (a replay's hits)."""
        return self._cache.remembered(keys)

    def cache_is_empty(self) -> bool:
        """Whether every lookup would miss (then a replay before dispatch is pointless)."""
        return not self.use_cache or self._cache.is_empty()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ModelLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ModelLayer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush, then close the HTTP clients opened in the running event loop (closed even
        when the flush fails: a store that cannot be written)."""
        try:
            self.flush()
        finally:
            state = self._loops.pop(asyncio.get_running_loop(), None)
            self._last_loop = _NO_LOOP
            for provider in state.providers.values() if state else ():
                closer = getattr(provider, "aclose", None)
                if closer is not None:
                    await closer()

    def batch_participant(self) -> contextlib.AbstractContextManager[Participant]:
        """Around one sample's work, in its task: a ``delivery=batch`` round starts when every
        sample inside one waits on a batch (agents/models/batching.py). The runner uses it."""
        return self._loop_state().rounds.participant()

    # ------------------------------------------------------------------ public call
    async def call(
        self,
        *,
        role: str,
        schema: type[T],
        messages: list[Message],
        prompt: PromptTemplate | Sequence[PromptTemplate] | None = None,
        sample_id: str | None = None,
        stage: str | None = None,
        attempt: int = 1,
        text_only: TextOnly | None = None,
    ) -> CallResult[T]:
        """Ask the model bound to ``role`` for a ``schema`` object; model errors never raise.

        A refusal is asked again ``refusal_retries`` times (same request, the role's
        temperature or :data:`REFUSAL_RETRY_TEMPERATURE` when that is 0), then the role's
        ``fallback`` model once; only then the call ends ``refused``. ``text_only``: the same
        request rendered for a model that cannot see (no images), sent when the endpoint
        answers that its model takes no images (default: ``messages`` without their images); a
        function returning it is called only then. Every attempt is its own trace row.
        """
        binding = self.config.for_role(role)
        prompt_id, prompt_hash = prompt_identity(prompt)
        trace = {
            "run_id": self.run_id,
            "sample_id": sample_id,
            "stage": stage or role,
            "role": role,
            "prompt_id": prompt_id,
            "prompt_hash": prompt_hash,
            "schema_name": schema.__name__,
            "attempt": attempt,
        }
        ask = _Ask(role, schema, messages, prompt_hash, trace, text_only)
        with self._loop_state().rounds.calling():
            return await self._call_with_fallbacks(binding, ask)

    async def _call_with_fallbacks(self, binding: RoleBinding, ask: _Ask[T]) -> CallResult[T]:
        """The call, its refusal retries and its fallback model (see :meth:`call`)."""
        result = await self._with_image_fallback(binding, ask, {})
        refused = 0
        while result.status == "refused" and refused < binding.settings.refusal_retries:
            refused += 1
            hotter = binding.settings.temperature or REFUSAL_RETRY_TEMPERATURE
            extra = {"refusal_retry": refused, "retry_of": result.call_id}
            result = await self._with_image_fallback(binding, ask, extra, temperature=hotter)
        fallback = self._fallback(binding)
        if result.status == "refused" and fallback is not None:
            refused += 1
            extra = {"fallback_for": result.call_id}
            second = await self._with_image_fallback(fallback, ask, extra)
            second.fallback_from = result.call_id
            result = second
        if result.status == "refused" and refused:
            result.error = f"{result.error} (refused {refused + 1} times)"
        result.refusals = refused + (result.status == "refused")
        return result

    async def _with_image_fallback(
        self,
        binding: RoleBinding,
        ask: _Ask[T],
        extra: dict[str, Any],
        *,
        temperature: float | None = None,
    ) -> CallResult[T]:
        """One attempt; when the endpoint answers that its model takes no images, the same
        attempt again text-only (its trace row says ``image_mode``: text-only retry)."""
        messages = ask.messages
        if ask.text_only is not None and not await self._binding_sees(binding, ask.role):
            messages = ask.blind()  # learned during this call (a refusal retry after it)
        result = await self._call_binding(binding, ask, messages, extra, temperature)
        if result.error_kind != "images_unsupported":
            return result
        text = ask.blind()
        extra = {**extra, "images_rejected": result.call_id}
        return await self._call_binding(
            binding, ask, text, extra, temperature, image_mode=IMAGE_MODE_TEXT_RETRY
        )

    # ------------------------------------------------------------------ one binding
    async def _call_binding(
        self,
        binding: RoleBinding,
        ask: _Ask[T],
        messages: list[Message],
        extra: dict[str, Any],
        temperature: float | None = None,
        *,
        image_mode: str | None = None,
    ) -> CallResult[T]:
        started, started_at = time.perf_counter(), utcnow()
        role, schema, prompt_hash, trace = ask.role, ask.schema, ask.prompt_hash, ask.trace
        settings = binding.settings
        state = self._loop_state()
        provider = self._provider(state, binding, role)
        params = GenerationParams(
            settings.temperature if temperature is None else temperature,
            settings.max_tokens,
            settings.top_p,
            settings.seed,
            settings.top_logprobs,
        )
        sent, fitted_mode = fit_images(
            messages, provider.supports_images, settings.image_max_side, self._resized
        )
        image_mode = image_mode or fitted_mode
        dialect = getattr(provider, "configured_dialect", None)
        key = cache_key(
            provider=binding.spec.provider,
            model=binding.spec.model,
            endpoint=provider.endpoint,
            dialect=dialect,
            params=params,
            messages=sent,
            schema=schema,
            prompt_hash=prompt_hash,
            attempt=trace["attempt"],
        )
        row: dict[str, Any] = {
            **trace,
            "call_id": next(_CALL_IDS),
            "provider": binding.spec.provider,
            "model": binding.spec.model,
            "endpoint": provider.endpoint,
            "cache_key": key,
            "image_mode": image_mode,
            "started_at": started_at,
        }
        meta: dict[str, Any] = params.as_dict() | {
            "dialect": dialect,
            "client": getattr(provider, "client", None),  # how an OpenAI-style call was sent
            "image_max_side": settings.image_max_side,
            "timeout_s": settings.timeout_s,
            "spec": binding.spec.spec,
            "fallback_for": extra.get("fallback_for"),
            **{k: v for k, v in extra.items() if k != "fallback_for"},
        }
        # the cache keeps answers, not log-probabilities: a call that wants them is sent
        cacheable = self.use_cache and params.top_logprobs is None
        if cacheable:
            entry = await self._cache.get(key)
            if entry is not None:
                # Tokens and cost are those of this call: nothing was sent, nothing paid.
                hit = CallResult(
                    status="ok",
                    value=schema.model_validate_json(entry.parsed_json),
                    raw_text=entry.raw_output,
                    error=None,
                    call_id=row["call_id"],
                    cache_hit=True,
                    input_tokens=0,
                    output_tokens=0,
                    latency_ms=0.0,
                    cost_usd=0.0,
                    cached_input_tokens=0,
                    cache_write_tokens=0,
                    model_spec=binding.spec.spec,
                    role=role,
                )
                return self._finish(hit, row, sent, meta, started, parsed_json=entry.parsed_json)
        if self.cache_only:  # a replay sends nothing, a call the cache cannot hold included
            raise CacheMiss(key)
        token = CALL_KEY.set(key)  # a batch request's custom_id derives from it
        try:
            result, final_messages = await self._ask(
                state, binding, role, provider, schema, sent, params, meta
            )
        finally:
            CALL_KEY.reset(token)
        parsed_json = result.value.model_dump_json() if result.value is not None else None
        if result.status == "ok" and cacheable and parsed_json is not None:
            self._cache.put(
                CacheEntry(
                    cache_key=key,
                    provider=binding.spec.provider,
                    model=binding.spec.model,
                    schema_name=schema.__name__,
                    raw_output=result.raw_text or "",
                    parsed_json=parsed_json,
                    input_tokens=result.input_tokens,
                    output_tokens=result.output_tokens,
                )
            )
        return self._finish(result, row, final_messages, meta, started, parsed_json=parsed_json)

    async def _ask(
        self,
        state: _LoopState,
        binding: RoleBinding,
        role: str,
        provider: Provider,
        schema: type[T],
        messages: list[Message],
        params: GenerationParams,
        meta: dict[str, Any],
    ) -> tuple[CallResult[T], list[Message]]:
        """Request, validate, re-ask; returns the result and the conversation as finally sent."""
        settings = binding.settings
        limiter = self._limiter(state, binding, role)
        tokens_in = tokens_out = parse_attempts = tokens_cached = tokens_written = 0
        request_s, call_s = binding.timeouts()
        # a batch line waits for its round for hours by design (batch_timeout_s bounds it)
        deadline_s = None if settings.delivery == "batch" else call_s
        attempts = Attempts(request_timeout_s=request_s, call_deadline_s=deadline_s)
        meta["waits_s"] = attempts.waits_s

        def result(
            status: Status,
            value: T | None,
            raw: str | None,
            error: str | None,
            kind: str | None = None,
        ) -> CallResult[T]:
            return CallResult(
                error_kind=kind,
                status=status,
                value=value,
                raw_text=capped(raw, settings.max_answer_bytes),
                error=error,
                call_id="",
                cache_hit=False,
                input_tokens=tokens_in if answered else None,
                output_tokens=tokens_out if answered else None,
                latency_ms=0.0,
                cost_usd=self._cost(binding, tokens_in, tokens_out, tokens_cached, tokens_written),
                cached_input_tokens=tokens_cached if answered else None,
                cache_write_tokens=tokens_written if answered else None,
                model_spec=binding.spec.spec,
                role=role,
                requests=attempts.requests,
                parse_attempts=parse_attempts,
            )

        answered = False

        while True:
            try:
                response = await request_with_retries(
                    provider,
                    limiter,
                    settings,
                    schema,
                    messages,
                    params,
                    attempts,
                    sleep=self._sleep,
                    rng=self._rng,
                )
            except ProviderError as err:
                meta["requests"] = attempts.requests
                status: Status = "refused" if err.kind == "refused" else "failed"
                error = f"{err.kind}: {err.message}"
                return result(status, None, err.raw_text, error, err.kind), messages
            answered = True
            meta["requests"] = attempts.requests
            meta["dialect_used"] = response.extra.get("dialect")
            if "batch_id" in response.extra:  # delivery=batch: the batch that answered
                meta["batch_id"] = response.extra["batch_id"]
            if "llama_perf" in response.extra:  # in-process llama.cpp: prefill vs decode
                meta["llama_perf"] = response.extra["llama_perf"]
            tokens_in += response.input_tokens or 0
            tokens_out += response.output_tokens or 0
            tokens_cached += response.cached_input_tokens or 0
            tokens_written += response.cache_write_tokens or 0
            size = size_of(response.raw_text)
            if size > settings.max_answer_bytes:
                error = too_large_error(size, settings.max_answer_bytes)
                return result(TOO_LARGE, None, response.raw_text, error, TOO_LARGE), messages
            value, problem = validate_answer(response, schema)
            if value is not None:
                done = result("ok", value, response.raw_text, None)
                done.logprobs = response.extra.get("logprobs")
                return done, messages
            if parse_attempts >= settings.parse_retries:
                return result("parse_failed", None, response.raw_text, problem), messages
            parse_attempts += 1
            messages = reask_messages(messages, response.raw_text, problem or "invalid")

    # ------------------------------------------------------------------ helpers
    def _finish(
        self,
        result: CallResult[T],
        row: dict[str, Any],
        messages: list[Message],
        meta: dict[str, Any],
        started: float,
        *,
        parsed_json: str | None,
    ) -> CallResult[T]:
        result.call_id = row["call_id"]
        result.latency_ms = (time.perf_counter() - started) * 1000.0
        result.parsed_json = parsed_json
        row.update(
            cache_hit=result.cache_hit,
            messages_json=_json(messages_for_record(messages)),
            params_json=_json(meta),
            raw_output=result.raw_text,
            parsed_json=parsed_json,
            status=result.status,
            error=result.error,
            parse_attempts=result.parse_attempts,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cached_input_tokens=result.cached_input_tokens,
            cache_write_tokens=result.cache_write_tokens,
            latency_ms=result.latency_ms,
            cost_usd=result.cost_usd,
            finished_at=utcnow(),
        )
        self._writer.add(row)
        return result

    def _fallback(self, binding: RoleBinding) -> RoleBinding | None:
        """The binding asked after a refusal: same role settings, minus endpoint-specific ones."""
        if not binding.settings.fallback:
            return None
        keep = binding.settings.model_copy(
            update={"fallback": None, "dialect": None, "api_key_env": None, "base_url": None}
        )
        return RoleBinding.create(binding.settings.fallback, keep)

    async def warm_up(self, roles: Iterable[str]) -> None:
        """Build the clients of ``roles`` now, in the running loop, instead of at first call.

        A run calls this before its first sample: the SDK imports and client set-up (a local
        model's load) then happen once, before samples are in flight, not inside the first
        sample's call while the others wait.

        Raises:
            ProviderError: a client cannot be built (a model folder without weights, say); the
                message names the role and its spec.
        """
        state = self._loop_state()
        for role in roles:
            binding = self.config.for_role(role)
            try:
                self._provider(state, binding, role)
            except Exception as exc:
                if isinstance(exc, ProviderError):  # its message names the spec already
                    raise ProviderError(exc.kind, f"role {role}: {exc.message}") from exc
                why = f"{binding.spec.spec}: {type(exc).__name__}: {exc}"
                raise ProviderError("bad_request", f"role {role}: {why}") from exc

    async def _binding_sees(self, binding: RoleBinding, role: str) -> bool:
        return bool(self._provider(self._loop_state(), binding, role).supports_images)

    async def sees_images(self, role: str) -> bool:
        """Whether the model bound to ``role`` is sent images (prompts must not promise one
        to a text-only model)."""
        binding = self.config.for_role(role)
        return bool(self._provider(self._loop_state(), binding, role).supports_images)

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        last_loop, last_state = self._last_loop
        if last_loop() is loop and last_state is not None:  # a call asks several times
            return last_state
        state = self._loops.get(loop)
        if state is None:
            state = _LoopState({}, {}, Rounds())
            self._loops[loop] = state
        self._last_loop = (weakref.ref(loop), state)
        return state

    def _provider(self, state: _LoopState, binding: RoleBinding, role: str) -> Provider:
        key = (binding.spec.spec, binding.settings)
        provider = state.providers.get(key)
        if provider is None:
            secret = read_key(binding.spec, binding.settings, role)
            if secret:
                self._secrets.add(secret)
            provider = make_provider(binding.spec, binding.settings)
            if binding.settings.delivery == "batch":
                attach = getattr(provider, "attach_batching", None)
                if attach is None:
                    raise ProviderError(
                        "unsupported",
                        f"{binding.spec.spec}: delivery=batch is not available for the "
                        f"{binding.spec.provider!r} provider (openai, openai-compatible)",
                    )
                attach(state.rounds, self.store, self._sleep)
            state.providers[key] = provider
        return provider

    def _limiter(self, state: _LoopState, binding: RoleBinding, role: str) -> RateLimiter:
        key = (role, binding.spec.spec)
        limiter = state.limiters.get(key)
        if limiter is None:
            s = binding.settings
            if s.delivery == "batch":  # requests wait in a round, not in a connection slot
                limiter = RateLimiter(BATCH_SLOTS, sleep=self._sleep)
            else:
                limiter = RateLimiter(
                    s.max_concurrency, s.requests_per_minute, s.tokens_per_minute, sleep=self._sleep
                )
            state.limiters[key] = limiter
        return limiter

    def _cost(
        self, binding: RoleBinding, tokens_in: int, tokens_out: int, cached: int, written: int
    ) -> float | None:
        # not the settings object: a frozen pydantic model hashes every field on each lookup
        s = binding.settings
        key = (binding.spec.spec, s.price_input_per_mtok, s.price_output_per_mtok, s.delivery)
        if key not in self._prices:
            self._prices[key] = resolve_price(
                binding.spec.provider,
                binding.spec.model,
                s.price_input_per_mtok,
                s.price_output_per_mtok,
                delivery=s.delivery,
            )
        price = self._prices[key]
        return price.cost(tokens_in, tokens_out, cached, written) if price is not None else None
