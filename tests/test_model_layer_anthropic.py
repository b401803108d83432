"""The layer against a fake Anthropic server, through the real anthropic SDK and ChatAnthropic."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from conftest import FAKE_ANTHROPIC_KEY, SleepRecorder, run_call
from fakes import FakeAnthropicServer, error, hang, refuse, reply
from PIL import Image
from pydantic import BaseModel

from agents.models import Message, ModelConfig, ModelLayer, prepare_image
from data.store import Store


class Verdict(BaseModel):
    """A verdict on one rule."""

    label: str
    score: int


GOOD = {"label": "no", "score": 1}
MESSAGES = [Message("system", "You judge images."), Message("user", "Is this image ok?")]


def make_layer(
    server: FakeAnthropicServer, store: Store | None, sleep: SleepRecorder, *settings: str
) -> ModelLayer:
    spec = f"anthropic:claude-haiku-4-5?base_url={server.base_url}"
    config = ModelConfig.from_args(
        [f"all={spec}"], [f"all.{s}" for s in ("jitter=false", *settings)]
    )
    return ModelLayer(config, store, run_id="run-a", sleep=sleep)


def ask(layer: ModelLayer, messages: list[Message] = MESSAGES) -> Any:
    return run_call(layer, role="critic", schema=Verdict, messages=messages)


def test_structured_output_by_forced_tool_use(fake_keys, anthropic_server, llm_store, no_sleep):
    anthropic_server.push(reply(GOOD, usage=(2000, 100)))
    layer = make_layer(anthropic_server, llm_store, no_sleep, "max_tokens=300", "temperature=0.2")
    result = ask(layer)
    assert result.ok and result.value == Verdict(**GOOD)
    assert result.cost_usd == pytest.approx((2000 * 1.0 + 100 * 5.0) / 1e6)  # haiku 4.5 prices

    [request] = anthropic_server.chat_requests()
    headers = request.headers  # the SDK sends the key as x-api-key or as a bearer token
    sent_key = headers.get("x-api-key") or headers["authorization"].removeprefix("Bearer ")
    assert sent_key == FAKE_ANTHROPIC_KEY
    body = request.body
    assert body["model"] == "claude-haiku-4-5"
    # the system prompt ends the prefix every call repeats: Anthropic's cache breakpoint
    assert body["system"] == [
        {"type": "text", "text": "You judge images.", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["messages"] == [{"role": "user", "content": "Is this image ok?"}]
    assert body["tools"] == [
        {
            "name": "Verdict",
            "description": "A verdict on one rule.",
            "input_schema": Verdict.model_json_schema(),
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "Verdict"}
    assert (body["max_tokens"], body["temperature"]) == (300, 0.2)
    assert "top_p" not in body  # newer models reject temperature and top_p together

    layer.flush()
    [row] = llm_store.rows("SELECT * FROM llm_calls")
    assert (row["provider"], row["model"], row["status"]) == ("anthropic", "claude-haiku-4-5", "ok")
    assert (row["input_tokens"], row["output_tokens"]) == (2000, 100)
    assert json.loads(row["params_json"])["dialect_used"] == "tools"


def test_image_goes_as_a_base64_source_block(fake_keys, anthropic_server, no_sleep):
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(buffer, format="JPEG")
    image = prepare_image(buffer.getvalue(), max_side=512)
    assert ask(make_layer(anthropic_server, None, no_sleep), [Message("user", "look", (image,))]).ok
    content = anthropic_server.chat_requests()[0].body["messages"][0]["content"]
    assert content[0]["type"] == "image"
    source = content[0]["source"]
    assert (source["type"], source["media_type"]) == ("base64", "image/jpeg")
    assert base64.b64decode(source["data"]) == image.data
    assert content[1] == {"type": "text", "text": "look"}


def test_refusal_stop_reason_is_refused_and_not_cached(
    fake_keys, anthropic_server, llm_store, no_sleep
):
    anthropic_server.push(refuse(""), refuse("I can't help with that request."))
    layer = make_layer(anthropic_server, llm_store, no_sleep, "refusal_retries=0")
    first, second = ask(layer), ask(layer)
    assert first.status == second.status == "refused"
    assert "stop_reason=refusal" in first.error and first.value is None
    assert len(anthropic_server.chat_requests()) == 2
    layer.flush()
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 0


def test_prose_refusal_instead_of_a_tool_call_is_refused(fake_keys, anthropic_server, no_sleep):
    anthropic_server.push(reply("I'm sorry, but I can't help with that.", as_tool=False))
    result = ask(make_layer(anthropic_server, None, no_sleep, "refusal_retries=0"))
    assert result.status == "refused"
    assert result.raw_text == "I'm sorry, but I can't help with that."


def test_rate_limit_and_overload_are_retried(fake_keys, anthropic_server, no_sleep):
    anthropic_server.push(
        error(429, "rate limited", {"retry-after": "4"}),
        error(529, "overloaded"),
        reply(GOOD),
    )
    result = ask(make_layer(anthropic_server, None, no_sleep, "backoff_base_s=0.5"))
    assert result.ok and result.requests == 3
    assert no_sleep.waits == [4.0, 1.0]  # Retry-After, then the 2nd backoff step


def test_timeout_is_retried(fake_keys, anthropic_server, no_sleep):
    anthropic_server.push(hang(1.0), reply(GOOD))
    result = ask(make_layer(anthropic_server, None, no_sleep, "timeout_s=0.2"))
    assert result.ok and result.requests == 2


def test_auth_error_fails_fast(fake_keys, anthropic_server, no_sleep):
    anthropic_server.push(error(401, "invalid x-api-key"))
    result = ask(make_layer(anthropic_server, None, no_sleep))
    assert result.status == "failed"
    assert result.error == "auth: HTTP 401: authentication_error: invalid x-api-key"
    assert len(anthropic_server.chat_requests()) == 1 and no_sleep.waits == []


def test_text_instead_of_tool_call_is_reasked_then_valid(fake_keys, anthropic_server, no_sleep):
    anthropic_server.push(reply('{"label": "no", "score": ', as_tool=False), reply(GOOD))
    result = ask(make_layer(anthropic_server, None, no_sleep))
    assert result.ok and result.parse_attempts == 1
    follow_up = anthropic_server.chat_requests()[1].body["messages"]
    assert follow_up[1]["role"] == "assistant"
    assert "no JSON object" in follow_up[2]["content"]


def test_tool_input_that_misses_fields_ends_parse_failed(fake_keys, anthropic_server, no_sleep):
    anthropic_server.push(*[reply({"label": "no"})] * 2)
    result = ask(make_layer(anthropic_server, None, no_sleep, "parse_retries=1"))
    assert result.status == "parse_failed" and result.value is None
    assert json.loads(result.raw_text) == {"label": "no"}
