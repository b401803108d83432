"""OpenAI-compatible endpoints: each structured-output dialect, the auto probe, keys, max_tokens."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import SleepRecorder, run_call
from fakes import FakeOpenAIServer, reply
from pydantic import BaseModel

from agents.models import Message, ModelConfig, ModelLayer
from agents.models.providers.openai_chat import forget_learned_dialects
from data.store import Store

#: every test here runs with ChatOpenAI and with the SDK's own post (``client`` setting)
pytestmark = pytest.mark.usefixtures("openai_client")


class Labels(BaseModel):
    """Attribute values seen in an image."""

    labels: list[str]
    confident: bool


GOOD = {"labels": ["beach", "swimwear"], "confident": True}
MESSAGES = [Message("system", "You list labels."), Message("user", "Label the image.")]


def make_layer(
    server: FakeOpenAIServer, store: Store | None, sleep: SleepRecorder, options: str = ""
) -> ModelLayer:
    spec = f"openai-compatible:{server.base_url}#qwen2.5-7b{options}"
    config = ModelConfig.from_args([f"all={spec}"], ["all.jitter=false"])
    return ModelLayer(config, store, run_id="run-c", sleep=sleep)


def ask(layer: ModelLayer) -> Any:
    return run_call(layer, role="describer", schema=Labels, messages=MESSAGES)


def test_json_schema_dialect_for_vllm(openai_server, no_sleep):
    result = ask(make_layer(openai_server, None, no_sleep, "?dialect=json_schema"))
    assert result.ok
    body = openai_server.chat_requests()[0].body
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == Labels.model_json_schema()
    assert body["max_tokens"] == 1024 and "max_completion_tokens" not in body


def test_json_object_schema_dialect_for_llamacpp(no_sleep):
    with FakeOpenAIServer(llamacpp=True) as server:
        server.push(reply(GOOD))
        result = ask(make_layer(server, None, no_sleep, "?dialect=json_object_schema"))
        body = server.chat_requests()[0].body
    assert result.ok and result.value.labels == ["beach", "swimwear"]
    assert body["response_format"] == {"type": "json_object", "schema": Labels.model_json_schema()}


def test_tools_dialect_forces_one_function(openai_server, no_sleep):
    openai_server.push(reply(GOOD))
    result = ask(make_layer(openai_server, None, no_sleep, "?dialect=tools"))
    assert result.ok and result.value.confident is True
    body = openai_server.chat_requests()[0].body
    assert "response_format" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "Labels",
                "description": "Attribute values seen in an image.",
                "parameters": Labels.model_json_schema(),
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Labels"}}


def test_text_dialect_puts_the_schema_in_the_prompt_and_parses_the_answer(openai_server, no_sleep):
    openai_server.push(reply('Sure. ```json\n{"labels": ["beach"], "confident": false}\n``` Done.'))
    result = ask(make_layer(openai_server, None, no_sleep, "?dialect=text"))
    assert result.ok and result.value == Labels(labels=["beach"], confident=False)
    body = openai_server.chat_requests()[0].body
    assert "response_format" not in body and "tools" not in body
    system = body["messages"][0]["content"]
    assert system.startswith("You list labels.\n\nAnswer with exactly one JSON object")
    assert json.dumps(Labels.model_json_schema(), sort_keys=True, separators=(",", ":")) in system


@pytest.fixture
def fresh_dialects():
    forget_learned_dialects()
    yield
    forget_learned_dialects()


def test_auto_dialect_probes_down_to_what_the_server_accepts(llm_store, no_sleep, fresh_dialects):
    with FakeOpenAIServer(llamacpp=True) as server:
        layer = make_layer(server, llm_store, no_sleep)  # dialect defaults to auto
        first = ask(layer)
        layer_second = run_call(
            layer, role="describer", schema=Labels, messages=[Message("user", "again")]
        )
        kinds = [r.body.get("response_format", {}).get("type") for r in server.chat_requests()]
    assert first.ok and layer_second.ok
    assert kinds == ["json_schema", "json_object", "json_object"]  # remembered per endpoint
    assert no_sleep.waits == []  # a rejected dialect is not a retry
    layer.flush()
    params = [
        json.loads(r["params_json"]) for r in llm_store.rows("SELECT params_json FROM llm_calls")
    ]
    assert {p["dialect"] for p in params} == {"auto"}
    assert {p["dialect_used"] for p in params} == {"json_object_schema"}


def test_an_explicit_dialect_the_server_rejects_fails_fast_and_says_so(no_sleep):
    with FakeOpenAIServer(llamacpp=True) as server:
        result = ask(make_layer(server, None, no_sleep, "?dialect=json_schema"))
        assert len(server.chat_requests()) == 1
    assert result.status == "failed"
    assert result.error.startswith("unsupported:") and "dialect=" in result.error


def test_keys_for_local_servers(openai_server, monkeypatch, no_sleep):
    assert ask(make_layer(openai_server, None, no_sleep)).ok
    assert openai_server.chat_requests()[0].headers["authorization"] == "Bearer not-needed"
    monkeypatch.setenv("MY_VLLM_KEY", "vllm-key-0123456789")
    assert ask(make_layer(openai_server, None, no_sleep, "?api_key_env=MY_VLLM_KEY")).ok
    assert openai_server.chat_requests()[1].headers["authorization"] == "Bearer vllm-key-0123456789"


@pytest.mark.parametrize("dialect", ["json_schema", "json_object_schema", "tools", "text"])
def test_every_dialect_round_trips_with_the_default_responder(openai_server, no_sleep, dialect):
    result = ask(make_layer(openai_server, None, no_sleep, f"?dialect={dialect}"))
    assert result.ok, result.error
    assert isinstance(result.value, Labels)


@pytest.mark.parametrize("dialect", ["json_schema", "json_object_schema", "tools", "text"])
@pytest.mark.parametrize("provider", ["openai", "openai-compatible"])
def test_both_clients_send_the_same_request(dialect, provider, fake_keys, monkeypatch, no_sleep):
    """``client=sdk`` is a faster way to send, not a different request: the body (messages with
    an image, sampling parameters, the dialect's schema) equals ChatOpenAI's, and the answer
    parses the same. With ``sdk`` ChatOpenAI is never called."""
    from langchain_openai import ChatOpenAI

    from agents.models import ImageInput

    image = ImageInput(
        sha256="c" * 64, media_type="image/png", data=b"\x89PNG-bytes", width=2, height=2
    )
    messages = [MESSAGES[0], Message("user", "Label the image.", images=(image,))]
    bodies, values = {}, {}
    for client in ("langchain", "sdk", "raw"):
        with FakeOpenAIServer() as server:
            server.push(reply(GOOD))
            base = f"base_url={server.base_url}&" if provider == "openai" else ""
            target = "gpt-4o?" if provider == "openai" else f"{server.base_url}#qwen?"
            spec = f"{provider}:{target}{base}dialect={dialect}&send_images=true"
            settings = ["jitter=false", "seed=7", "top_p=0.5", "temperature=0.3"]
            config = ModelConfig.from_args(
                [f"all={spec}"], [f"all.{s}" for s in (*settings, f"client={client}")]
            )
            if client != "langchain":
                monkeypatch.setattr(ChatOpenAI, "ainvoke", None)  # would fail if called
            layer = ModelLayer(config, None, run_id="run-c", sleep=no_sleep)
            result = run_call(layer, role="describer", schema=Labels, messages=messages)
            assert result.ok, result.error
            bodies[client] = server.chat_requests()[0].body
            values[client] = result.value
    assert bodies["sdk"] == bodies["raw"] == bodies["langchain"]
    assert values["sdk"] == values["raw"] == values["langchain"] == Labels(**GOOD)
    sent = bodies["sdk"]["messages"][1]["content"]
    assert sent[1]["image_url"]["url"].startswith("data:image/png;base64,")
