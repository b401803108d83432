"""Ask a provider once, retrying what is worth retrying, and nothing else.

- 429: wait what ``Retry-After`` / ``retry-after-ms`` says (capped by ``retry_after_cap_s``), or
  back off when the server gave no hint;
- 5xx, timeouts, connection errors: exponential backoff, with full jitter unless turned off;
- 400/401/403/404, refusals, unsupported dialects, images a text-only model cannot take: no
  retry here, the error goes straight back (the layer asks again after a refusal, with the
  ``refusal_retries`` policy, and text-only after ``images_unsupported``).

Every request first passes the role's limiter (concurrency, requests and tokens per minute).
The sleep function and random source are injected, so tests never wait.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from agents.models.base import GenerationParams, Message, Provider, ProviderResponse
from agents.models.errors import classify
from agents.models.rate_limit import RateLimiter, backoff_delay, estimate_tokens
from agents.models.settings import RoleSettings

Sleep = Callable[[float], Awaitable[object]]


@dataclass
class Attempts:
    """What asking cost so far, across retries and re-asks (recorded in the trace)."""

    requests: int = 0
    waits_s: list[float] = field(default_factory=list)
    request_timeout_s: float | None = None
    """Per request (the binding's: agents/models/timeouts.py); None: the role setting's."""
    call_deadline_s: float | None = None
    """The whole call's budget, retries and re-asks included; None: no deadline."""
    deadline: float | None = None
    """When the budget runs out (the clock's time), set at the call's first request."""


def retry_delay(
    error_kind: str,
    retry_after: float | None,
    retry: int,
    settings: RoleSettings,
    rng: Callable[[], float],
) -> float:
    """Seconds to wait before retry number ``retry`` (1-based)."""
    if error_kind == "rate_limited" and retry_after is not None:
        return min(retry_after, settings.retry_after_cap_s)
    return backoff_delay(
        retry, settings.backoff_base_s, settings.backoff_max_s, jitter=settings.jitter, rng=rng
    )


async def request_with_retries(
    provider: Provider,
    limiter: RateLimiter,
    settings: RoleSettings,
    schema: type[BaseModel],
    messages: list[Message],
    params: GenerationParams,
    attempts: Attempts,
    *,
    sleep: Sleep,
    rng: Callable[[], float],
    clock: Callable[[], float] = time.monotonic,
) -> ProviderResponse:
    """One answer from ``provider``; raises the classified ProviderError when retries run out
    or the call's deadline (``attempts.call_deadline_s``) passes: no request starts after it,
    and each request's timeout is cut to what is left of it. Time spent waiting for a slot of
    the role's limiter and waits a 429 asked for extend the deadline: they are pacing, not an
    endpoint that hangs."""
    chars = sum(len(m.text) for m in messages)
    estimate = estimate_tokens(chars, sum(len(m.images) for m in messages), params.max_tokens)
    per_request = attempts.request_timeout_s or settings.timeout_s
    if attempts.deadline is None and attempts.call_deadline_s is not None:
        attempts.deadline = clock() + attempts.call_deadline_s
    retries = 0
    while True:
        attempts.requests += 1
        try:
            queued = clock()
            async with limiter.slot(estimate) as slot:
                timeout = per_request
                if attempts.deadline is not None:
                    # waiting for a slot (our own pacing) is not the endpoint's time
                    attempts.deadline += clock() - queued
                    timeout = min(per_request, max(attempts.deadline - clock(), 0.001))
                response = await provider.complete(messages, schema, params, timeout)
                slot.settle((response.input_tokens or 0) + (response.output_tokens or 0))
            return response
        except Exception as exc:
            error = classify(exc)
            if not error.retryable or retries >= settings.max_retries:
                raise error from exc
        retries += 1
        delay = retry_delay(error.kind, error.retry_after, retries, settings, rng)
        if attempts.deadline is not None and error.kind == "rate_limited":
            attempts.deadline += delay  # the server asked us to wait: it is not hung
        if attempts.deadline is not None and clock() + delay >= attempts.deadline:
            error.message = (
                f"{error.message} (the call's deadline of {attempts.call_deadline_s or 0:g} s "
                f"passed after {attempts.requests} request(s); call_deadline_s sets it)"
            )
            raise error
        attempts.waits_s.append(round(delay, 3))
        await sleep(delay)
