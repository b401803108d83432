"""Images go to every describer that can see them (issue 16): ``send_images=auto``.

An ``openai-compatible:`` role sends the image by default. When the endpoint answers with its
server's own "this model takes no images" error (vLLM, llama.cpp, Ollama: each tested), the
layer asks again text-only, remembers the endpoint and model as text-only, and records
``image_mode`` in each trace row; the next call goes text-only straight away.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import SleepRecorder, run_closing
from fakes import FakeOpenAIServer, error, refuse
from fakes.openai_server import TEXT_ONLY_ERRORS, has_image
from PIL import Image
from pydantic import BaseModel

from agents.models import Message, ModelConfig, ModelLayer, prepare_image
from agents.models.images import IMAGE_MODE_TEXT_RETRY
from agents.models.providers.openai_chat import forget_learned_dialects
from data.store import Store

pytestmark = pytest.mark.usefixtures("openai_client")


class Description(BaseModel):
    description: str


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    """What ``auto`` learned is per process and keyed by endpoint: loopback ports get reused."""
    forget_learned_dialects()
    yield
    forget_learned_dialects()


def _image():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, format="PNG")
    return prepare_image(buffer.getvalue(), max_side=512)


SYSTEM = Message("system", "You describe.")


def seeing(sample: str) -> str:
    return f"Describe the attached image ({sample})."


def blind(sample: str) -> str:
    return f"You cannot see the image ({sample}); describe it from the evidence."


def layer_for(server: FakeOpenAIServer, store: Store | None, sleep: SleepRecorder, *settings):
    spec = f"openai-compatible:{server.base_url}#fake-model"
    config = ModelConfig.from_args(
        [f"all={spec}"], [f"all.{s}" for s in ("jitter=false", "backoff_base_s=0", *settings)]
    )
    return ModelLayer(config, store, run_id="run-i", sleep=sleep)


def describe(
    layer: ModelLayer,
    sample: str,
    *,
    with_text_only: bool = True,
    rendered: list[str] | None = None,
) -> Any:
    """One describer call; with ``rendered``, its text-only request is passed as a function
    (as ``agents.role_call`` does) that notes the sample in ``rendered`` when it is called."""
    image = _image()

    def render_text_only() -> list[Message]:
        assert rendered is not None
        rendered.append(sample)
        return [SYSTEM, Message("user", blind(sample))]

    async def go() -> Any:
        sees = await layer.sees_images("describer")
        text = seeing(sample) if sees else blind(sample)
        messages = [SYSTEM, Message("user", text, (image,))]
        text_only: Any = [SYSTEM, Message("user", blind(sample))]
        if rendered is not None:
            text_only = render_text_only
        extra = {"text_only": text_only} if sees and with_text_only else {}
        return await layer.call(
            role="describer",
            schema=Description,
            messages=messages,
            sample_id=sample,
            stage="describer",
            **extra,
        )

    return run_closing(layer, go)


def rows(layer: ModelLayer, store: Store) -> list[dict[str, Any]]:
    layer.flush()
    return store.rows("SELECT * FROM llm_calls ORDER BY started_at")


def test_openai_compatible_sends_the_image_by_default(
    fake_keys, openai_server, llm_store, no_sleep
):
    layer = layer_for(openai_server, llm_store, no_sleep)
    assert describe(layer, "s-1").ok
    [request] = openai_server.chat_requests()
    assert has_image(request.body)
    assert rows(layer, llm_store)[0]["image_mode"] == "native"


@pytest.mark.parametrize("server_kind", sorted(TEXT_ONLY_ERRORS))
def test_a_text_only_endpoint_gets_a_text_only_retry_and_is_remembered(
    fake_keys, llm_store, no_sleep, server_kind
):
    with FakeOpenAIServer(text_only=server_kind) as server:
        layer = layer_for(server, llm_store, no_sleep)
        first = describe(layer, "s-1")
        assert first.ok
        sent = server.chat_requests()
        assert [has_image(r.body) for r in sent] == [True, False]  # no blind retries of a 500
        assert sent[1].body["messages"][1]["content"] == blind("s-1")
        assert no_sleep.waits == []
        second = describe(layer, "s-2")  # the next sample goes text-only straight away
        assert second.ok
        assert len(server.chat_requests()) == 3
        assert not has_image(server.chat_requests()[2].body)
        assert server.chat_requests()[2].body["messages"][1]["content"] == blind("s-2")
    rejected, retried, straight = rows(layer, llm_store)
    assert (rejected["status"], rejected["image_mode"]) == ("failed", "native")
    assert rejected["error"].startswith("images_unsupported:")
    assert TEXT_ONLY_ERRORS[server_kind][1]["error"]["message"] in rejected["error"]
    assert (retried["status"], retried["image_mode"]) == ("ok", IMAGE_MODE_TEXT_RETRY)
    assert retried["sample_id"] == "s-1"
    assert (straight["sample_id"], straight["image_mode"]) == ("s-2", "none (text-only model)")
    assert first.call_id == retried["call_id"]


def test_a_text_only_request_given_as_a_function_is_rendered_only_when_needed(
    fake_keys, openai_server, no_sleep
):
    rendered: list[str] = []
    assert describe(layer_for(openai_server, None, no_sleep), "s-1", rendered=rendered).ok
    assert rendered == []  # the endpoint took the image: no text-only prompt was rendered
    with FakeOpenAIServer(text_only="vllm") as server:
        assert describe(layer_for(server, None, no_sleep), "s-2", rendered=rendered).ok
        retry = server.chat_requests()[1].body
    assert rendered == ["s-2"] and retry["messages"][1]["content"] == blind("s-2")


def test_without_a_text_only_prompt_the_image_is_dropped_from_the_same_messages(
    fake_keys, no_sleep
):
    with FakeOpenAIServer(text_only="vllm") as server:
        assert describe(layer_for(server, None, no_sleep), "s-1", with_text_only=False).ok
        retry = server.chat_requests()[1].body
    assert not has_image(retry) and retry["messages"][1]["content"] == seeing("s-1")


def test_send_images_true_does_not_fall_back(fake_keys, no_sleep):
    with FakeOpenAIServer(text_only="vllm") as server:
        result = describe(layer_for(server, None, no_sleep, "send_images=true"), "s-1")
        assert len(server.chat_requests()) == 1
    assert result.status == "failed" and "is not a multimodal model" in result.error


def test_send_images_false_never_sends_one(fake_keys, openai_server, no_sleep):
    layer = layer_for(openai_server, None, no_sleep, "send_images=false")
    assert describe(layer, "s-1").ok
    assert not has_image(openai_server.chat_requests()[0].body)


def test_other_errors_are_not_taken_for_a_text_only_model(fake_keys, openai_server, no_sleep):
    openai_server.push(error(400, "context length exceeded"))
    result = describe(layer_for(openai_server, None, no_sleep), "s-1")
    assert result.status == "failed" and len(openai_server.chat_requests()) == 1
    assert describe(layer_for(openai_server, None, no_sleep), "s-2").ok
    assert has_image(openai_server.chat_requests()[1].body)  # still sends images


def test_a_refusal_retry_after_the_text_only_retry_stays_text_only(fake_keys, no_sleep):
    with FakeOpenAIServer(text_only="llamacpp") as server:
        # the first scripted action is used up by the rejected image request
        server.push(refuse(), refuse())
        assert describe(layer_for(server, None, no_sleep), "s-1").ok
        sent = [r.body for r in server.chat_requests()]
    assert [has_image(b) for b in sent] == [True, False, False]
    assert [b["messages"][1]["content"] for b in sent[1:]] == [blind("s-1")] * 2


def test_an_image_sent_as_it_is_is_the_bytes_read_once_and_hashed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28: the file is read once; the bytes sent are the ones whose hash is the image's
    identity (a second read could see a file changed in between)."""
    import hashlib
    from pathlib import Path

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(buffer, format="PNG")
    path = tmp_path / "small.png"
    path.write_bytes(buffer.getvalue())

    def no_second_read(self: Path) -> bytes:
        raise AssertionError(f"{self} read a second time")

    monkeypatch.setattr(Path, "read_bytes", no_second_read)
    image = prepare_image(path)
    assert image.data == buffer.getvalue()
    assert image.sha256 == hashlib.sha256(image.data).hexdigest()
