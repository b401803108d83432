"""Pacing: how many requests a role has in flight, how fast it sends them, how long it backs off.

Hosted APIs limit requests and tokens per minute and answer 429 beyond them; a self-hosted vLLM
slows down for everyone when flooded. A role therefore waits here *before* sending: a semaphore
caps concurrency, and two token buckets (requests, tokens) spread sends over the minute. Buckets
hold ten seconds' worth, so a run starts without a burst of a whole minute's quota (providers
enforce limits over windows shorter than a minute). Token use is estimated before a call and
settled with the real count after it.

The clock and sleep are injectable so tests run without waiting.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Sleep = Callable[[float], Awaitable[object]]


class TokenBucket:
    """``rate_per_minute`` units refilled continuously; holds at most ten seconds' worth."""

    def __init__(
        self,
        rate_per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, rate_per_minute / 6.0)
        self.level = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now

    async def take(self, amount: float) -> float:
        """Wait until ``amount`` can be taken (FIFO); returns the seconds waited.

        An amount above the capacity is let through once the bucket is full, leaving it in debt.
        """
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                need = min(amount, self.capacity)
                if self.level >= need:
                    self.level -= amount
                    return waited
                delay = (need - self.level) / self.rate
                waited += delay
                await self._sleep(delay)

    def adjust(self, delta: float) -> None:
        """Charge (positive) or refund (negative) units after the real use is known."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class RateLimiter:
    """Concurrency cap plus optional requests-per-minute and tokens-per-minute pacing."""

    def __init__(
        self,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self.requests = (
            TokenBucket(requests_per_minute, clock=clock, sleep=sleep)
            if requests_per_minute
            else None
        )
        self.tokens = (
            TokenBucket(tokens_per_minute, clock=clock, sleep=sleep) if tokens_per_minute else None
        )

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[Reservation]:
        """Hold a concurrency slot for one request, after paying its request and token budget."""
        async with self._semaphore:
            waited = 0.0
            if self.requests is not None:
                waited += await self.requests.take(1)
            if self.tokens is not None:
                waited += await self.tokens.take(estimated_tokens)
            yield Reservation(self, estimated_tokens, waited)


class Reservation:
    """One paid-for request; :meth:`settle` corrects the token estimate with the real count."""

    def __init__(self, limiter: RateLimiter, estimated_tokens: int, waited_s: float) -> None:
        self._limiter = limiter
        self.estimated_tokens = estimated_tokens
        self.waited_s = waited_s

    def settle(self, actual_tokens: int | None) -> None:
        if self._limiter.tokens is not None and actual_tokens is not None:
            self._limiter.tokens.adjust(actual_tokens - self.estimated_tokens)


def estimate_tokens(text_chars: int, n_images: int, max_tokens: int) -> int:
    """Rough upper estimate before a call: ~4 characters per token, ~800 tokens per image."""
    return text_chars // 4 + 800 * n_images + max_tokens


def backoff_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    *,
    jitter: bool,
    rng: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff before retry ``attempt`` (1-based), with full jitter when enabled."""
    delay = min(max_s, base_s * (2 ** (attempt - 1)))
    return delay * rng() if jitter else delay
