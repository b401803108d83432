"""Issue 23 (bounds): timeouts by kind of endpoint and a per-call deadline across retries, so a
hung endpoint costs at most the call's deadline (not 60 s x 5 attempts plus backoff)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from agents.models.base import GenerationParams, Message, ProviderError
from agents.models.rate_limit import RateLimiter
from agents.models.retry import Attempts, request_with_retries
from agents.models.settings import ModelConfig, RoleBinding, RoleSettings


class Answer(BaseModel):
    label: str


class HungEndpoint:
    """Never answers: each request uses up the whole timeout it was given, on a fake clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timeouts: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def complete(self, messages, schema, params, timeout):
        self.timeouts.append(timeout)
        self.now += timeout
        raise TimeoutError("read timed out")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("openai:gpt-4o", (60.0, 120.0)),
        ("anthropic:claude-haiku-4-5", (60.0, 120.0)),
        ("openai-compatible:http://127.0.0.1:8000/v1#m", (90.0, 120.0)),
        ("local:smollm2", (600.0, 600.0)),
    ],
)
def test_timeouts_follow_the_kind_of_endpoint(spec: str, expected: tuple[float, float]) -> None:
    assert tuple(RoleBinding.create(spec).timeouts()) == expected


def test_a_timeout_set_for_the_role_wins() -> None:
    config = ModelConfig.from_args(
        ["all=openai-compatible:http://127.0.0.1:8000/v1#m"],
        ["all.timeout_s=15", "critic.call_deadline_s=40"],
    )
    assert tuple(config.for_role("critic").timeouts()) == (15.0, 40.0)
    assert tuple(config.for_role("describer").timeouts()) == (15.0, 120.0)
    spec_option = RoleBinding.create("local:smollm2?call_deadline_s=30")
    assert tuple(spec_option.timeouts()) == (600.0, 30.0)
    # the offline demo sets timeout_s: 900 for CPU generation: the default deadline makes room
    slow = RoleBinding.create("local:smollm2", RoleSettings(timeout_s=900))
    assert tuple(slow.timeouts()) == (900.0, 900.0)


def _ask_hung(binding: RoleBinding, endpoint: HungEndpoint) -> Attempts:
    request_s, call_s = binding.timeouts()
    attempts = Attempts(request_timeout_s=request_s, call_deadline_s=call_s)
    settings = binding.settings.model_copy(update={"jitter": False})
    with pytest.raises(ProviderError) as caught:
        asyncio.run(
            request_with_retries(
                endpoint,
                RateLimiter(4),
                settings,
                Answer,
                [Message("user", "hi")],
                GenerationParams(temperature=0.0, max_tokens=64),
                attempts,
                sleep=endpoint.sleep,
                rng=lambda: 0.5,
                clock=endpoint.clock,
            )
        )
    assert caught.value.kind == "timeout"
    assert "deadline of 120 s" in caught.value.message
    return attempts


def test_a_hung_self_hosted_endpoint_costs_one_deadline_per_call() -> None:
    endpoint = HungEndpoint()
    binding = RoleBinding.create("openai-compatible:http://127.0.0.1:8000/v1#m")
    attempts = _ask_hung(binding, endpoint)
    assert endpoint.now <= 120.0  # was 5 x 60 s plus backoff
    assert endpoint.timeouts[0] == 90.0 and endpoint.timeouts[-1] < 90.0  # cut to what is left
    assert attempts.requests == len(endpoint.timeouts) < 1 + RoleSettings().max_retries


def test_a_hung_hosted_endpoint_stops_at_the_deadline() -> None:
    endpoint = HungEndpoint()
    _ask_hung(RoleBinding.create("openai:gpt-4o"), endpoint)
    assert endpoint.now <= 120.0 and endpoint.timeouts[:1] == [60.0]


class SlowLimiter:
    """A limiter whose slot takes ``wait_s`` of the fake clock to come free (other calls of
    the role hold the slots): pacing, not the endpoint's time."""

    def __init__(self, endpoint: HungEndpoint, wait_s: float) -> None:
        self.endpoint, self.wait_s = endpoint, wait_s

    def slot(self, estimate: int):
        limiter = self

        class _Slot:
            async def __aenter__(self):
                limiter.endpoint.now += limiter.wait_s
                return self

            async def __aexit__(self, *exc):
                return False

            def settle(self, tokens: int) -> None:
                pass

        return _Slot()


def test_waiting_for_a_limiter_slot_does_not_use_up_the_deadline() -> None:
    """64 samples in flight on 8 slots wait minutes for a slot: each request still gets its
    full timeout, and the call still stops one deadline of endpoint time later."""
    endpoint = HungEndpoint()
    binding = RoleBinding.create("openai-compatible:http://127.0.0.1:8000/v1#m")
    request_s, call_s = binding.timeouts()
    attempts = Attempts(request_timeout_s=request_s, call_deadline_s=call_s)
    with pytest.raises(ProviderError):
        asyncio.run(
            request_with_retries(
                endpoint,
                SlowLimiter(endpoint, 300.0),  # type: ignore[arg-type]
                binding.settings.model_copy(update={"jitter": False}),
                Answer,
                [Message("user", "hi")],
                GenerationParams(temperature=0.0, max_tokens=64),
                attempts,
                sleep=endpoint.sleep,
                rng=lambda: 0.5,
                clock=endpoint.clock,
            )
        )
    assert endpoint.timeouts[0] == 90.0
    assert sum(endpoint.timeouts) <= 120.0


class RateLimited(HungEndpoint):
    """Answers 429 with Retry-After 50 s twice, then hangs."""

    async def complete(self, messages, schema, params, timeout):
        self.timeouts.append(timeout)
        if len(self.timeouts) <= 2:
            raise ProviderError("rate_limited", "slow down", retry_after=50.0)
        self.now += timeout
        raise TimeoutError("read timed out")


def test_waits_a_429_asks_for_extend_the_deadline() -> None:
    endpoint = RateLimited()
    binding = RoleBinding.create("openai:gpt-4o")
    _ask_hung(binding, endpoint)
    assert endpoint.timeouts[2] == 60.0  # 100 s of asked-for waits did not eat the request
