"""The layer against a fake OpenAI server, through the real openai SDK and ChatOpenAI.

Covers structured output, image blocks, error handling (429 + Retry-After, 5xx, timeout, auth,
bad request), re-asking after malformed JSON, refusals and content filters, fallback, the cache,
and that no key ever reaches the database file.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, SleepRecorder, run_call
from fakes import (
    FakeAnthropicServer,
    FakeOpenAIServer,
    content_filter,
    error,
    hang,
    refuse,
    reply,
)
from PIL import Image
from pydantic import BaseModel, Field

from agents.models import Message, ModelConfig, ModelLayer, prepare_image
from agents.models.cache import CacheMiss
from data.store import Store
from prompts import PromptTemplate

#: every test here runs with ChatOpenAI and with the SDK's own post (``client`` setting)
pytestmark = pytest.mark.usefixtures("openai_client")


class Verdict(BaseModel):
    """A verdict on one rule."""

    label: str = Field(description="yes or no")
    score: int


SYSTEM = PromptTemplate(name="t.system", sha256="a" * 64, source="You judge.")
USER = PromptTemplate(name="t.user", sha256="b" * 64, source="Is it ok?")
MESSAGES = [Message("system", "You judge images."), Message("user", "Is this image ok?")]
GOOD = {"label": "yes", "score": 3}


def make_layer(
    spec: str,
    store: Store | None,
    sleep: SleepRecorder,
    *settings: str,
    **kwargs: Any,
) -> ModelLayer:
    config = ModelConfig.from_args(
        [f"all={spec}"], [f"all.{s}" for s in ("jitter=false", *settings)]
    )
    return ModelLayer(config, store, run_id="run-1", sleep=sleep, **kwargs)


def openai_spec(server: FakeOpenAIServer) -> str:
    return f"openai:gpt-4o?base_url={server.base_url}"


def ask(layer: ModelLayer, messages: list[Message] = MESSAGES, **kwargs: Any):
    return run_call(
        layer,
        role=kwargs.pop("role", "judge"),
        schema=kwargs.pop("schema", Verdict),
        messages=messages,
        prompt=[SYSTEM, USER],
        sample_id="s-1",
        stage="judge",
        **kwargs,
    )


def trace_rows(layer: ModelLayer, store: Store) -> list[dict[str, Any]]:
    layer.flush()
    return store.rows("SELECT * FROM llm_calls ORDER BY started_at")


def _png(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- structured output
def test_structured_output_request_and_full_trace_row(
    fake_keys, openai_server, llm_store, no_sleep
):
    openai_server.push(reply(GOOD, usage=(1000, 200)))
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep)
    result = ask(layer)

    assert result.status == "ok" and result.value == Verdict(label="yes", score=3)
    assert (result.input_tokens, result.output_tokens) == (1000, 200)
    assert result.cost_usd == pytest.approx((1000 * 2.5 + 200 * 10.0) / 1e6)  # gpt-4o prices

    [request] = openai_server.chat_requests()
    assert request.headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    body = request.body
    assert body["model"] == "gpt-4o"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Verdict", "schema": Verdict.model_json_schema(), "strict": False},
    }
    assert body["temperature"] == 0.0 and body["max_completion_tokens"] == 1024
    assert body["messages"] == [
        {"role": "system", "content": "You judge images."},
        {"role": "user", "content": "Is this image ok?"},
    ]

    [row] = trace_rows(layer, llm_store)
    assert row["call_id"] == result.call_id
    assert (row["run_id"], row["sample_id"], row["stage"], row["role"]) == (
        "run-1",
        "s-1",
        "judge",
        "judge",
    )
    assert (row["provider"], row["model"], row["endpoint"]) == (
        "openai",
        "gpt-4o",
        openai_server.base_url,
    )
    assert row["prompt_id"] == f"{SYSTEM.prompt_id}+{USER.prompt_id}"
    assert len(row["prompt_hash"]) == 64 and row["prompt_hash"] not in (SYSTEM.sha256, USER.sha256)
    assert row["schema_name"] == "Verdict" and row["status"] == "ok" and row["error"] is None
    assert json.loads(row["parsed_json"]) == GOOD and json.loads(row["raw_output"]) == GOOD
    assert (row["input_tokens"], row["output_tokens"]) == (1000, 200)
    assert row["cost_usd"] == pytest.approx(result.cost_usd)
    assert row["latency_ms"] > 0 and row["finished_at"] >= row["started_at"]
    assert (row["attempt"], row["parse_attempts"], row["cache_hit"]) == (1, 0, False)
    assert row["image_mode"] == "none" and len(row["cache_key"]) == 64
    params = json.loads(row["params_json"])
    assert params["temperature"] == 0.0 and params["dialect_used"] == "json_schema"
    assert params["requests"] == 1 and params["waits_s"] == []


def test_image_goes_as_a_data_url_and_is_a_placeholder_in_the_trace(
    fake_keys, openai_server, llm_store, no_sleep
):
    image = prepare_image(_png(), max_side=512)
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep)
    result = ask(layer, [MESSAGES[0], Message("user", "Is this image ok?", (image,))])
    assert result.ok

    content = openai_server.chat_requests()[0].body["messages"][1]["content"]
    assert content[0] == {"type": "text", "text": "Is this image ok?"}
    url = content[1]["image_url"]["url"]
    assert content[1]["type"] == "image_url"
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == image.data

    [row] = trace_rows(layer, llm_store)
    assert row["image_mode"] == "native"
    sent = json.loads(row["messages_json"])[1]["images"][0]
    assert sent == {
        "image_sha256": image.sha256,
        "media_type": "image/png",
        "width": 64,
        "height": 48,
    }
    assert "base64" not in row["messages_json"]


def test_images_are_shrunk_to_the_role_max_side(fake_keys, openai_server, no_sleep):
    image = prepare_image(_png((800, 400)), max_side=2048)
    layer = make_layer(openai_spec(openai_server), None, no_sleep, "image_max_side=100")
    assert ask(layer, [Message("user", "look", (image,))]).ok
    url = openai_server.chat_requests()[0].body["messages"][0]["content"][1]["image_url"]["url"]
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (100, 50)


def test_text_only_model_gets_no_image_and_the_trace_says_so(
    fake_keys, openai_server, llm_store, no_sleep
):
    image = prepare_image(_png(), max_side=512)
    spec = f"openai-compatible:{openai_server.base_url}#qwen2.5-7b"
    layer = make_layer(spec, llm_store, no_sleep, "send_images=false")
    assert ask(layer, [Message("user", "Is this image ok?", (image,))]).ok
    assert openai_server.chat_requests()[0].body["messages"] == [
        {"role": "user", "content": "Is this image ok?"}
    ]
    [row] = trace_rows(layer, llm_store)
    assert row["image_mode"] == "none (text-only model)"
    assert "image_sha256" not in row["messages_json"]


# ----------------------------------------------------------------------------- errors and retries
def test_429_waits_as_long_as_retry_after_says(fake_keys, openai_server, no_sleep):
    openai_server.push(error(429, "slow down", {"retry-after": "3"}), reply(GOOD))
    result = ask(make_layer(openai_spec(openai_server), None, no_sleep))
    assert result.ok and result.requests == 2
    assert no_sleep.waits == [3.0]


def test_retry_after_ms_and_the_cap(fake_keys, openai_server, no_sleep):
    openai_server.push(
        error(429, headers={"retry-after-ms": "1500"}),
        error(429, headers={"retry-after": "3600"}),
        reply(GOOD),
    )
    result = ask(make_layer(openai_spec(openai_server), None, no_sleep, "retry_after_cap_s=20"))
    assert result.ok
    assert no_sleep.waits == [1.5, 20.0]


def test_server_error_then_success_backs_off_exponentially(fake_keys, openai_server, no_sleep):
    openai_server.push(error(500), error(503), reply(GOOD))
    layer = make_layer(openai_spec(openai_server), None, no_sleep, "backoff_base_s=0.5")
    result = ask(layer)
    assert result.ok and result.requests == 3
    assert no_sleep.waits == [0.5, 1.0]


def test_jitter_scales_the_backoff_when_on(fake_keys, openai_server, no_sleep):
    openai_server.push(error(500), reply(GOOD))
    config = ModelConfig.from_args([f"all={openai_spec(openai_server)}"])
    layer = ModelLayer(config, None, sleep=no_sleep, rng=lambda: 0.25)
    assert ask(layer).ok
    assert no_sleep.waits == [0.25]  # base 1 s x 0.25


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_timeout_is_retried(fake_keys, openai_server, no_sleep, transport: str):
    openai_server.push(hang(5.0), reply(GOOD))
    layer = make_layer(
        openai_spec(openai_server), None, no_sleep, "timeout_s=1", f"http_transport={transport}"
    )
    result = ask(layer)
    # the hung request timed out and was retried; on a loaded machine an answer may itself
    # take longer than the timeout, and is retried too: how many retries is not the point
    assert result.ok and result.requests >= 2
    assert len(no_sleep.waits) == result.requests - 1


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_both_http_transports_classify_errors_alike(
    fake_keys, openai_server, no_sleep, transport: str
):
    """A 500 is retried and a 401 fails fast whichever HTTP client the SDK runs on."""
    openai_server.push(error(500, "boom"), reply(GOOD), error(401, "bad key"))
    spec = openai_spec(openai_server)
    setting = f"http_transport={transport}"
    first = ask(make_layer(spec, None, no_sleep, setting))
    assert first.ok and first.requests == 2
    second = ask(make_layer(spec, None, no_sleep, setting, use_cache=False))
    assert second.status == "failed" and second.error.startswith("auth: HTTP 401")
    assert len(openai_server.chat_requests()) == 3


def test_retries_are_bounded_then_the_call_fails(fake_keys, openai_server, llm_store, no_sleep):
    openai_server.push(*[error(502, "bad gateway")] * 3)
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep, "max_retries=2")
    result = ask(layer)
    assert result.status == "failed" and result.value is None
    assert result.error.startswith("server: HTTP 502") and "bad gateway" in result.error
    assert result.requests == 3 and len(openai_server.chat_requests()) == 3
    [row] = trace_rows(layer, llm_store)
    assert row["status"] == "failed" and json.loads(row["params_json"])["requests"] == 3


@pytest.mark.parametrize(("status", "kind"), [(401, "auth"), (403, "auth"), (400, "bad_request")])
def test_client_errors_fail_fast_with_the_providers_message(
    fake_keys, openai_server, no_sleep, status, kind
):
    openai_server.push(error(status, f"provider says no ({status})"))
    result = ask(make_layer(openai_spec(openai_server), None, no_sleep))
    assert result.status == "failed"
    assert result.error.startswith(f"{kind}: HTTP {status}")
    assert f"provider says no ({status})" in result.error
    assert len(openai_server.chat_requests()) == 1 and no_sleep.waits == []


# ----------------------------------------------------------------------------- parsing
def test_malformed_json_is_reasked_with_the_problem(fake_keys, openai_server, llm_store, no_sleep):
    openai_server.push(reply('{"label": "yes", "score": '), reply(GOOD))
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep)
    result = ask(layer)
    assert result.ok and result.value.score == 3
    assert (result.requests, result.parse_attempts) == (2, 1)
    second = openai_server.chat_requests()[1].body["messages"]
    assert second[-2] == {"role": "assistant", "content": '{"label": "yes", "score": '}
    assert second[-1]["role"] == "user" and "no JSON object" in second[-1]["content"]
    [row] = trace_rows(layer, llm_store)
    assert row["parse_attempts"] == 1 and len(json.loads(row["messages_json"])) == 4


def test_invalid_answers_end_as_parse_failed_with_raw_text(
    fake_keys, openai_server, llm_store, no_sleep
):
    openai_server.push(*[reply({"label": "yes"})] * 3)
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep, "parse_retries=2")
    result = ask(layer)
    assert result.status == "parse_failed" and result.value is None
    assert result.raw_text == '{"label": "yes"}'
    assert "score" in result.error and "Field required" in result.error
    assert (result.requests, result.parse_attempts) == (3, 2)
    [row] = trace_rows(layer, llm_store)
    assert row["status"] == "parse_failed" and row["parsed_json"] is None
    assert row["raw_output"] == '{"label": "yes"}'
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 0


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "action",
    [
        refuse("I can't help with that."),
        content_filter(),
        reply("I'm sorry, but I cannot do that."),
    ],
    ids=["refusal-field", "content-filter", "refusal-phrasing"],
)
def test_refusals_end_as_refused_and_are_never_cached(
    fake_keys, openai_server, llm_store, no_sleep, action
):
    openai_server.push(action, action)
    # no refusal retries here: each call is one request (retries: test_model_layer_refusals.py)
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep, "refusal_retries=0")
    first, second = ask(layer), ask(layer)
    assert first.status == second.status == "refused"
    assert first.value is None and first.error.startswith("refused:")
    assert len(openai_server.chat_requests()) == 2  # the second was asked again, not cached
    assert no_sleep.waits == []
    rows = trace_rows(layer, llm_store)
    assert [r["status"] for r in rows] == ["refused", "refused"]
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 0


def test_refusal_falls_back_to_the_configured_model(
    fake_keys, openai_server, anthropic_server, llm_store, no_sleep
):
    openai_server.push(refuse("I can't help with that."))
    fallback = f"anthropic:claude-haiku-4-5?base_url={anthropic_server.base_url}"
    layer = make_layer(
        openai_spec(openai_server), llm_store, no_sleep, f"fallback={fallback}", "refusal_retries=0"
    )
    result = ask(layer)
    assert result.ok and result.model_spec == fallback and result.fallback_from
    assert len(anthropic_server.chat_requests()) == 1
    refused, answered = trace_rows(layer, llm_store)
    assert (refused["status"], refused["provider"]) == ("refused", "openai")
    assert (answered["status"], answered["provider"]) == ("ok", "anthropic")
    assert json.loads(answered["params_json"])["fallback_for"] == refused["call_id"]
    assert result.fallback_from == refused["call_id"]


# ----------------------------------------------------------------------------- cache
def test_identical_second_call_is_a_cache_hit_and_persists(
    fake_keys, openai_server, llm_store, no_sleep
):
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep)
    first, second = ask(layer), ask(layer)
    assert first.ok and second.ok and second.value == first.value
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.cost_usd == 0.0 and second.input_tokens == 0
    assert len(openai_server.chat_requests()) == 1
    rows = trace_rows(layer, llm_store)
    assert [r["cache_hit"] for r in rows] == [False, True]
    assert rows[0]["cache_key"] == rows[1]["cache_key"]
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 1

    fresh = make_layer(openai_spec(openai_server), llm_store, no_sleep)  # a later run
    assert ask(fresh).cache_hit
    assert len(openai_server.chat_requests()) == 1
    changed = make_layer(openai_spec(openai_server), llm_store, no_sleep, "temperature=0.7")
    assert not ask(changed).cache_hit


def test_no_cache_bypasses_reads_and_writes(fake_keys, openai_server, llm_store, no_sleep):
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep, use_cache=False)
    assert not ask(layer).cache_hit and not ask(layer).cache_hit
    assert len(openai_server.chat_requests()) == 2
    layer.flush()
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 0


def test_no_key_text_reaches_the_database_file(tmp_path: Path, fake_keys, no_sleep):
    path = tmp_path / "keys.duckdb"
    store = Store.open(path)
    with FakeOpenAIServer() as oai, FakeAnthropicServer() as ant:
        # servers that echo the key back in their errors, the worst case
        oai.push(error(401, f"Incorrect API key provided: {FAKE_OPENAI_KEY}"))
        ant.push(error(500, f"key {FAKE_ANTHROPIC_KEY} overloaded"), reply(GOOD))
        config = ModelConfig.from_args(
            [
                f"all={openai_spec(oai)}",
                f"critic=anthropic:claude-haiku-4-5?base_url={ant.base_url}",
            ],
            ["all.jitter=false"],
        )
        layer = ModelLayer(config, store, run_id="r", sleep=no_sleep)
        layer.check_credentials()
        assert ask(layer).status == "failed"
        assert ask(layer, role="critic").ok
        assert ask(layer).ok
        layer.close()
        rows = store.rows("SELECT error, params_json FROM llm_calls ORDER BY started_at")
    assert "[REDACTED]" in rows[0]["error"] and "Incorrect API key" in rows[0]["error"]

    def assert_no_key_bytes() -> list[str]:
        files = [p for p in tmp_path.iterdir() if p.name.startswith("keys.duckdb")]
        for file in files:
            data = file.read_bytes()
            for secret in (FAKE_OPENAI_KEY, FAKE_ANTHROPIC_KEY, "SECRET"):
                assert secret.encode() not in data, (file.name, secret)
        return [f.name for f in files]

    assert "keys.duckdb.wal" in assert_no_key_bytes()  # while open: the WAL holds the rows
    store.close()
    assert "keys.duckdb" in assert_no_key_bytes()  # after the checkpoint


def test_async_context_flushes_and_closes_clients(fake_keys, openai_server, llm_store, no_sleep):
    async def run() -> str:
        layer = make_layer(openai_spec(openai_server), llm_store, no_sleep, flush_interval_s=1e6)
        async with layer:
            result = await layer.call(role="judge", schema=Verdict, messages=MESSAGES)
            assert llm_store.scalar("SELECT count(*) FROM llm_calls") == 0  # still buffered
        return result.call_id

    call_id = asyncio.run(run())
    assert llm_store.scalar("SELECT call_id FROM llm_calls") == call_id
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 1


def test_token_logprobs_are_asked_for_read_back_and_never_cached(
    fake_keys, openai_server, llm_store, no_sleep
):
    """``top_logprobs=N``: the request carries ``logprobs: true, top_logprobs: N`` and the
    answer's token list comes back on the result (every client); such calls skip the cache."""
    tokens = [('{"', {'{"': 0.0}), ("label", {"label": 0.0}),
              ("yes", {"yes": -0.2, "no": -1.8, "maybe": -3.0})]  # fmt: skip
    openai_server.push(reply(GOOD, logprobs=tokens), reply(GOOD, logprobs=tokens))
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep, "top_logprobs=2")
    first, second = ask(layer), ask(layer)
    assert first.ok and second.ok and not second.cache_hit
    bodies = [r.body for r in openai_server.chat_requests()]
    assert len(bodies) == 2 and all(
        b["logprobs"] is True and b["top_logprobs"] == 2 for b in bodies
    )
    assert first.logprobs is not None and [t["token"] for t in first.logprobs] == [
        '{"', "label", "yes",
    ]  # fmt: skip
    assert first.logprobs[2]["top_logprobs"] == [
        {"token": "yes", "logprob": -0.2, "bytes": list(b"yes")},
        {"token": "no", "logprob": -1.8, "bytes": list(b"no")},
    ]
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 0
    plain = make_layer(openai_spec(openai_server), llm_store, no_sleep)
    assert ask(plain).logprobs is None  # not asked: the server sends none
    assert "logprobs" not in openai_server.chat_requests()[-1].body


@pytest.mark.parametrize("settings", [(), ("top_logprobs=3",)], ids=["plain", "logprobs"])
def test_a_cache_only_layer_sends_nothing(
    fake_keys, openai_server, llm_store, no_sleep, settings: tuple[str, ...]
) -> None:
    # The Ray driver's replay is cache-only: a miss must raise, also for a call that asks for
    # log-probabilities (which the cache never holds), and no request may leave.
    openai_server.push(reply(GOOD))
    layer = make_layer(openai_spec(openai_server), llm_store, no_sleep, *settings, cache_only=True)
    with pytest.raises(CacheMiss):
        ask(layer)
    assert openai_server.chat_requests() == []
