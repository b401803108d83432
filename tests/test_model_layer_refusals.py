"""Refusals and bad outputs are asked again before a call gives up (issue 16).

A refusal (the ``refusal`` field, a content-filter stop, refusal prose) is retried
``refusal_retries`` times at a non-zero temperature, then the fallback model is asked; each
attempt is a trace row and none is cached. Truncated JSON is a parse failure and is re-asked with
feedback; a truncated HTTP body is a server fault and is retried with backoff.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import SleepRecorder, run_call
from fakes import FakeOpenAIServer, content_filter, raw, refuse, reply
from pydantic import BaseModel

from agents.models import Message, ModelConfig, ModelLayer
from agents.models.settings import REFUSAL_RETRY_TEMPERATURE
from data.store import Store

pytestmark = pytest.mark.usefixtures("openai_client")


class Verdict(BaseModel):
    label: str
    score: int


GOOD = {"label": "yes", "score": 3}
MESSAGES = [Message("system", "You judge images."), Message("user", "Is this image ok?")]


def make_layer(server: FakeOpenAIServer, store: Store | None, sleep: SleepRecorder, *settings):
    spec = f"openai:gpt-4o?base_url={server.base_url}"
    config = ModelConfig.from_args(
        [f"all={spec}"], [f"all.{s}" for s in ("jitter=false", "backoff_base_s=0", *settings)]
    )
    return ModelLayer(config, store, run_id="run-r", sleep=sleep)


def ask(layer: ModelLayer) -> Any:
    return run_call(
        layer, role="judge", schema=Verdict, messages=MESSAGES, sample_id="s-1", stage="judge"
    )


def rows(layer: ModelLayer, store: Store) -> list[dict[str, Any]]:
    layer.flush()
    return store.rows("SELECT * FROM llm_calls ORDER BY started_at")


@pytest.mark.parametrize(
    "action",
    [refuse("I can't help with that."), content_filter(), reply("I'm sorry, but I can't do that.")],
    ids=["refusal-field", "content-filter", "refusal-phrasing"],
)
def test_one_refusal_is_asked_again_warmer_and_then_answers(
    fake_keys, openai_server, llm_store, no_sleep, action
):
    openai_server.push(action, reply(GOOD))
    layer = make_layer(openai_server, llm_store, no_sleep)
    result = ask(layer)
    assert result.ok and result.value == Verdict(**GOOD) and result.refusals == 1
    first, second = (r.body for r in openai_server.chat_requests())
    assert first["temperature"] == 0.0  # the role's temperature
    assert second["temperature"] == REFUSAL_RETRY_TEMPERATURE  # not the same refusal again
    assert first["messages"] == second["messages"]  # the same request otherwise
    refused, answered = rows(layer, llm_store)
    assert (refused["status"], answered["status"]) == ("refused", "ok")
    meta = json.loads(answered["params_json"])
    assert meta["refusal_retry"] == 1 and meta["retry_of"] == refused["call_id"]
    assert result.call_id == answered["call_id"]
    assert no_sleep.waits == []  # a refusal is not a rate limit: no backoff


def test_a_warm_role_retries_at_its_own_temperature(fake_keys, openai_server, no_sleep):
    openai_server.push(refuse(), reply(GOOD))
    assert ask(make_layer(openai_server, None, no_sleep, "temperature=0.7")).ok
    assert [r.body["temperature"] for r in openai_server.chat_requests()] == [0.7, 0.7]


@pytest.mark.parametrize("retries", [0, 1, 2, 4])
def test_a_model_that_always_refuses_ends_refused_after_the_configured_attempts(
    fake_keys, llm_store, no_sleep, retries
):
    with FakeOpenAIServer(responder=lambda body: refuse()) as server:
        layer = make_layer(server, llm_store, no_sleep, f"refusal_retries={retries}")
        result = ask(layer)
        assert len(server.chat_requests()) == retries + 1  # counted requests
    assert result.status == "refused" and result.value is None
    assert result.refusals == retries + 1
    trace = rows(layer, llm_store)
    assert [r["status"] for r in trace] == ["refused"] * (retries + 1)
    if retries:
        assert f"refused {retries + 1} times" in result.error
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 0  # refusals are never cached


def test_retries_then_the_fallback_model_then_refused(fake_keys, llm_store, no_sleep):
    with (
        FakeOpenAIServer(responder=lambda body: refuse()) as main,
        FakeOpenAIServer(responder=lambda body: refuse()) as other,
    ):
        fallback = f"openai:gpt-4o-mini?base_url={other.base_url}"
        layer = make_layer(main, llm_store, no_sleep, f"fallback={fallback}")
        result = ask(layer)
        assert (len(main.chat_requests()), len(other.chat_requests())) == (3, 1)
    assert result.status == "refused" and result.refusals == 4
    assert "refused 4 times" in result.error
    trace = rows(layer, llm_store)
    assert [r["model"] for r in trace] == ["gpt-4o"] * 3 + ["gpt-4o-mini"]
    assert json.loads(trace[-1]["params_json"])["fallback_for"] == trace[2]["call_id"]


def test_the_fallback_answers_after_the_retries(fake_keys, llm_store, no_sleep):
    with FakeOpenAIServer(responder=lambda body: refuse()) as main, FakeOpenAIServer() as other:
        fallback = f"openai:gpt-4o-mini?base_url={other.base_url}"
        layer = make_layer(main, llm_store, no_sleep, f"fallback={fallback}", "refusal_retries=1")
        result = ask(layer)
        assert (len(main.chat_requests()), len(other.chat_requests())) == (2, 1)
    assert result.ok and result.model_spec == fallback and result.fallback_from


def test_truncated_json_is_re_asked_with_feedback(fake_keys, openai_server, llm_store, no_sleep):
    openai_server.push(reply('{"label": "ye', finish_reason="length"), reply(GOOD))
    layer = make_layer(openai_server, llm_store, no_sleep)
    result = ask(layer)
    assert result.ok and result.parse_attempts == 1
    follow_up = openai_server.chat_requests()[1].body["messages"][-1]["content"]
    assert "cut off at max_tokens" in follow_up
    [row] = rows(layer, llm_store)  # one call: the re-ask is part of it
    assert row["status"] == "ok" and row["parse_attempts"] == 1


def test_truncated_json_every_time_ends_parse_failed_not_refused(
    fake_keys, openai_server, no_sleep
):
    openai_server.push(*[reply('{"label": "ye', finish_reason="length")] * 3)
    result = ask(make_layer(openai_server, None, no_sleep, "parse_retries=2"))
    assert result.status == "parse_failed" and result.raw_text == '{"label": "ye'
    assert len(openai_server.chat_requests()) == 3


def test_a_truncated_response_body_is_retried_as_a_server_fault(fake_keys, openai_server, no_sleep):
    openai_server.push(raw(200, b'{"id": "chatcmpl-1", "choices": [{"mess'), reply(GOOD))
    result = ask(make_layer(openai_server, None, no_sleep))
    assert result.ok and result.requests == 2
