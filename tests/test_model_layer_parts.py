"""The layer's small parts: error classification, prices, images, pacing, cache keys, parsing."""

from __future__ import annotations

import asyncio
import io
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import openai
import pytest
from PIL import Image
from pydantic import BaseModel

import agents.models.layer as layer_module
from agents.models import ModelConfig, ModelLayer
from agents.models.base import GenerationParams, Message, ProviderResponse
from agents.models.cache import ResponseCache, cache_key
from agents.models.errors import classify, looks_like_refusal, parse_retry_after
from agents.models.images import ImageError, image_placeholder, prepare_image, resized
from agents.models.parsing import extract_json, validate_answer
from agents.models.pricing import lookup_price, resolve_price
from agents.models.rate_limit import RateLimiter, TokenBucket, backoff_delay
from agents.models.trace import StoreWriter
from data.store import Store


class Out(BaseModel):
    label: str
    score: int


# ----------------------------------------------------------------------------- errors
def test_retry_after_forms():
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    when = datetime.now(UTC) + timedelta(seconds=30)
    waited = parse_retry_after({"retry-after": format_datetime(when, usegmt=True)})
    assert 27 <= waited <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    body = {"error": {"message": f"boom {status}", "type": "x"}}
    return openai.APIStatusError(f"Error code: {status}", response=response, body=body)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, "rate_limited", True),
        (500, "server", True),
        (503, "server", True),
        (529, "server", True),
        (408, "timeout", True),
        (400, "bad_request", False),
        (404, "bad_request", False),
        (422, "bad_request", False),
        (401, "auth", False),
        (403, "auth", False),
    ],
)
def test_status_codes_classify(status: int, kind: str, retryable: bool):
    error = classify(_status_error(status, {"retry-after": "3"}))
    assert (error.kind, error.retryable, error.status_code) == (kind, retryable, status)
    assert f"boom {status}" in error.message
    assert error.retry_after == (3.0 if status in (429, 503, 529) else None)


def test_transport_errors_classify():
    request = httpx.Request("POST", "http://127.0.0.1/")
    assert classify(openai.APITimeoutError(request)).kind == "timeout"
    assert classify(openai.APIConnectionError(request=request)).kind == "connection"
    assert classify(httpx.ConnectError("refused")).kind == "connection"
    assert classify(TimeoutError()).kind == "timeout"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I cannot help with that.",
        "I can't help with that.",
        "Sorry, I can’t assist with this request.",
        "I am unable to describe this image.",
        "Unfortunately, I won't comply with this request.",
    ],
)
def test_refusal_phrasing_is_recognised(text: str):
    assert looks_like_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"label": "I cannot help", "score": 1}',
        "The image shows a beach. I cannot see any faces.",
        "Here is the JSON you asked for",
    ],
)
def test_answers_are_not_refusals(text: str):
    assert not looks_like_refusal(text)


# ----------------------------------------------------------------------------- prices
def test_prices_match_snapshots_and_overrides_win():
    assert lookup_price("openai", "gpt-4o-2024-08-06") == lookup_price("openai", "gpt-4o")
    assert (
        lookup_price("openai", "gpt-4o-mini").input_per_mtok
        < lookup_price("openai", "gpt-4o").input_per_mtok
    )
    sonnet = lookup_price("anthropic", "claude-sonnet-4-5-20250929")
    assert sonnet is not None and sonnet.cost(1_000_000, 0) == sonnet.input_per_mtok
    assert lookup_price("local", "smollm2").cost(10**6, 10**6) == 0.0
    assert lookup_price("hf", "/m").cost(10**6, 10**6) == 0.0
    assert lookup_price("openai-compatible", "qwen2.5-7b") is None  # unknown is not free
    assert resolve_price("openai-compatible", "qwen2.5-7b", 0.1, 0.2).cost(10**6, 10**6) == (
        pytest.approx(0.3)
    )
    assert resolve_price("openai", "gpt-4o", None, 99.0).output_per_mtok == 99.0


# ----------------------------------------------------------------------------- images
def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=(200, 10, 10, 255)[: len(mode)]).save(buffer, format="PNG")
    return buffer.getvalue()


def test_small_images_pass_through_with_sniffed_type(tmp_path):
    data = _png((40, 30))
    path = tmp_path / "picture.jpg"  # wrong extension: the bytes decide
    path.write_bytes(data)
    image = prepare_image(path, max_side=64)
    assert image.media_type == "image/png"
    assert image.data == data
    assert (image.width, image.height) == (40, 30)


def test_large_images_are_resized_but_keep_the_original_hash():
    import hashlib

    data = _png((400, 100))
    image = prepare_image(data, max_side=100)
    assert (image.width, image.height) == (100, 25)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.media_type == "image/jpeg"
    assert Image.open(io.BytesIO(image.data)).size == (100, 25)
    smaller = resized(image, 50)
    assert (smaller.width, smaller.sha256) == (50, image.sha256)
    rgba = prepare_image(_png((300, 300), "RGBA"), max_side=100)
    # One loader for the whole project: alpha is composited on white, as the detectors see it.
    assert rgba.media_type == "image/jpeg"
    assert image_placeholder(image) == {
        "image_sha256": image.sha256,
        "media_type": "image/jpeg",
        "width": 100,
        "height": 25,
    }


def test_non_images_are_rejected():
    with pytest.raises(ImageError):
        prepare_image(b"definitely not an image")


# ----------------------------------------------------------------------------- pacing
def test_backoff_is_exponential_capped_and_jittered_only_when_asked():
    assert [backoff_delay(n, 1.0, 5.0, jitter=False) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert backoff_delay(3, 1.0, 30.0, jitter=True, rng=lambda: 0.5) == 2.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_request_bucket_spreads_requests_over_time():
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock, sleep=clock.sleep)  # 1 per second, burst of 10

    async def take_many() -> None:
        for _ in range(12):
            await bucket.take(1)

    asyncio.run(take_many())
    assert clock.now == pytest.approx(2.0)  # 10 at once, then one per second
    assert sum(clock.waits) == pytest.approx(2.0)


def test_token_limiter_waits_for_budget_and_settles_real_use():
    clock = FakeClock()
    limiter = RateLimiter(2, None, 6000, clock=clock, sleep=clock.sleep)  # 100 tokens/s, cap 1000

    async def run() -> None:
        async with limiter.slot(900) as slot:  # 1000 -> 100
            slot.settle(100)  # used 800 fewer than estimated: refunded -> 900
        async with limiter.slot(900):  # 900 -> 0, no wait
            pass
        async with limiter.slot(900):  # waits 9 s for 900 more
            pass

    asyncio.run(run())
    assert clock.waits == [pytest.approx(9.0)]  # without the refund it would be 8 s + 9 s


def test_concurrency_cap_holds_requests_back():
    limiter = RateLimiter(2)
    active = peak = 0

    async def one() -> None:
        nonlocal active, peak
        async with limiter.slot(1):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.001)
            active -= 1

    async def run() -> None:
        await asyncio.gather(*(one() for _ in range(8)))

    asyncio.run(run())
    assert peak == 2


# ----------------------------------------------------------------------------- cache keys
def _key(**changes) -> str:
    image = prepare_image(_png((20, 20)), max_side=64)
    base = {
        "provider": "openai",
        "model": "gpt-4o",
        "endpoint": "https://api.openai.com/v1",
        "dialect": "json_schema",
        "params": GenerationParams(temperature=0.0, max_tokens=100),
        "messages": [Message("system", "s"), Message("user", "u", (image,))],
        "schema": Out,
        "prompt_hash": "abc",
    }
    return cache_key(**(base | changes))


class OutV2(BaseModel):
    label: str
    score: float


def test_cache_key_covers_everything_that_shapes_the_answer():
    key = _key()
    assert key == _key()  # deterministic
    other_image = prepare_image(_png((21, 20)), max_side=64)
    variants = {
        "model": _key(model="gpt-4o-mini"),
        "endpoint": _key(endpoint="http://127.0.0.1:8000/v1"),
        "dialect": _key(dialect="tools"),
        "temperature": _key(params=GenerationParams(temperature=0.5, max_tokens=100)),
        "max_tokens": _key(params=GenerationParams(temperature=0.0, max_tokens=101)),
        "prompt": _key(prompt_hash="abd"),
        "attempt": _key(attempt=2),
        "schema": _key(schema=OutV2),
        "text": _key(messages=[Message("system", "s"), Message("user", "u!")]),
        "image": _key(messages=[Message("system", "s"), Message("user", "u", (other_image,))]),
    }
    assert key not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_cache_key_uses_the_image_hash_not_its_bytes():
    image = prepare_image(_png((20, 20)), max_side=64)
    same_photo_other_bytes = replace(image, data=image.data + b"\x00")
    messages = [Message("user", "u", (image,))]
    twin = [Message("user", "u", (same_photo_other_bytes,))]
    assert _key(messages=messages) == _key(messages=twin)


# ----------------------------------------------------------------------------- parsing
def test_extract_json_tolerates_packaging_only():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Sure! Here it is: {"a": {"b": 2}} Hope that helps.') == {"a": {"b": 2}}
    assert extract_json("no json here") is None
    assert extract_json('{"a": 1') is None


def test_validation_failures_say_what_is_wrong_and_never_default():
    value, problem = validate_answer(ProviderResponse(raw_text='{"label": "x"}'), Out)
    assert value is None and "score" in problem
    value, problem = validate_answer(
        ProviderResponse(raw_text="{trunc", finish_reason="length"), Out
    )
    assert value is None and "cut off" in problem
    value, problem = validate_answer(
        ProviderResponse(raw_text="", parsed={"label": "y", "score": 2}), Out
    )
    assert value == Out(label="y", score=2) and problem is None


# ----------------------------------------------------------------------------- trace writer
def _trace_row(n: int) -> dict:
    return {
        "call_id": f"call-{n}",
        "provider": "openai",
        "model": "m",
        "status": "ok",
        "raw_output": "{}",
        "started_at": datetime.now(UTC).replace(tzinfo=None),
    }


def test_deferred_trace_writer_writes_only_when_its_owner_flushes(tmp_path):
    """batch_size=None: the generation run's event loop never commits; its flush thread does."""
    with Store.open(tmp_path / "t.duckdb") as store:
        writer = StoreWriter(store, ResponseCache(store), set(), batch_size=None, interval_s=0.0)
        for n in range(100):
            writer.add(_trace_row(n))
        assert store.scalar("SELECT count(*) FROM llm_calls") == 0 and writer.pending == 100
        writer.flush()
        assert store.scalar("SELECT count(*) FROM llm_calls") == 100 and writer.pending == 0


def test_rows_added_while_another_thread_flushes_are_all_written(tmp_path):
    with Store.open(tmp_path / "t.duckdb") as store:
        writer = StoreWriter(store, ResponseCache(store), set(), batch_size=None)
        done = threading.Event()

        def flush_until_done() -> None:
            while not done.is_set():
                writer.flush()

        flusher = threading.Thread(target=flush_until_done)
        flusher.start()
        for n in range(2000):
            writer.add(_trace_row(n))
        done.set()
        flusher.join()
        writer.flush()
        assert store.scalar("SELECT count(DISTINCT call_id) FROM llm_calls") == 2000


def test_warm_up_builds_each_bound_client_once_before_any_call(monkeypatch):
    made: list[str] = []
    real = layer_module.make_provider

    def counting(spec, settings):
        made.append(spec.spec)
        return real(spec, settings)

    monkeypatch.setattr(layer_module, "make_provider", counting)
    config = ModelConfig.from_args(
        [
            "all=openai-compatible:http://127.0.0.1:9/v1#a",
            "critic=openai-compatible:http://127.0.0.1:9/v1#b",
        ],
        [],
    )
    layer = ModelLayer(config)

    async def go() -> None:
        await layer.warm_up(["describer", "explainer", "critic"])
        assert sorted(made) == [
            "openai-compatible:http://127.0.0.1:9/v1#a",
            "openai-compatible:http://127.0.0.1:9/v1#b",
        ]
        assert await layer.sees_images("describer") is True  # send_images=auto: sent at first
        assert len(made) == 2  # the call path reuses the warmed client
        await layer.aclose()

    asyncio.run(go())
