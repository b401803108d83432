"""Issue 23 (bounds): an answer over the role's ``max_answer_bytes`` ends the call with its own
status, ``too_large``; the stored raw text is cut at the bound with a marker; nothing is re-asked
or cached, so a server answering megabytes cannot grow the store or the process."""

from __future__ import annotations

import json

from conftest import run_call
from fakes import reply
from pydantic import BaseModel

from agents.models import Message, ModelConfig, ModelLayer
from agents.models.answer_bounds import DEFAULT_MAX_ANSWER_BYTES, capped
from agents.models.settings import RoleSettings

MESSAGES = [Message("system", "You judge images."), Message("user", "Is this image ok?")]


class Verdict(BaseModel):
    label: str


def _layer(server, store, sleep, *settings: str) -> ModelLayer:
    config = ModelConfig.from_args(
        [f"all=openai:gpt-4o?base_url={server.base_url}"],
        [f"all.{s}" for s in ("jitter=false", *settings)],
    )
    return ModelLayer(config, store, run_id="run-1", sleep=sleep)


def _ask(layer: ModelLayer):
    return run_call(layer, role="judge", schema=Verdict, messages=MESSAGES, sample_id="s-1",
                    stage="judge")  # fmt: skip


def test_the_default_bound_is_one_mebibyte() -> None:
    assert RoleSettings().max_answer_bytes == DEFAULT_MAX_ANSWER_BYTES == 1024 * 1024


def test_an_oversized_answer_is_its_own_status_stored_cut(
    fake_keys, openai_server, llm_store, no_sleep
) -> None:
    huge = json.dumps({"label": "x" * (3 * 1024 * 1024)})  # 3 MB: valid JSON, still refused
    openai_server.push(reply(huge), reply(huge), reply(huge))
    layer = _layer(openai_server, llm_store, no_sleep)
    result = _ask(layer)
    assert result.status == "too_large" and result.value is None
    assert result.error_kind == "too_large" and "over the role's limit" in (result.error or "")
    assert len(openai_server.chat_requests()) == 1  # not re-asked with the answer attached
    layer.flush()
    [row] = llm_store.rows("SELECT status, raw_output, messages_json FROM llm_calls")
    assert row["status"] == "too_large"
    assert len(row["raw_output"].encode()) < DEFAULT_MAX_ANSWER_BYTES + 200
    assert f"cut: {len(huge):,} bytes in all" in row["raw_output"]
    assert len(row["messages_json"]) < 1000  # the answer is not repeated in the messages
    assert llm_store.scalar("SELECT count(*) FROM llm_cache") == 0


def test_a_role_sets_its_own_bound(fake_keys, openai_server, llm_store, no_sleep) -> None:
    answer = json.dumps({"label": "y" * 5000})
    openai_server.push(reply(answer), reply(answer))
    small = _layer(openai_server, llm_store, no_sleep, "max_answer_bytes=2048")
    assert _ask(small).status == "too_large"
    roomy = _layer(openai_server, llm_store, no_sleep, "max_answer_bytes=8192")
    assert _ask(roomy).ok


def test_capped_cuts_on_a_character_boundary() -> None:
    text = "é" * 3000  # 2 bytes each
    cut = capped(text, 1025)
    assert cut is not None and cut.startswith("é" * 512) and "6,000 bytes in all" in cut
    assert capped("short", 1024) == "short" and capped(None, 1024) is None
