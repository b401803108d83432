"""Anthropic models via ChatAnthropic, with structured output by forced tool use.

The schema becomes one tool (``input_schema``) and ``tool_choice`` forces the model to call it,
so the answer arrives as the tool's input object. A refusal is Anthropic's
``stop_reason == "refusal"`` or, when the model answers in prose instead of calling the tool,
refusal phrasing; both raise ``ProviderError("refused")``. Images go as native ``image`` blocks
with a base64 ``source``. The system message, the end of the prefix every call of a role repeats
(tools, then system), carries Anthropic's ``cache_control`` breakpoint (agents/models/
prompt_cache.py), so a repeat reads it from the prompt cache at the cached rate.

The SDK client is built here, not by ChatAnthropic: langchain-anthropic shares one process-wide
HTTP client per base URL, which breaks when a later event loop reuses connections opened in an
earlier one (the layer keeps one client per event loop). ``max_retries=0``: the layer retries.

``delivery=batch``: the request ChatAnthropic would send becomes the ``params`` of one request
of the round's Message Batch (providers/anthropic_batch.py, agents/models/batching.py).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage
from pydantic import BaseModel, SecretStr

from agents.models.base import GenerationParams, Message, ProviderError, ProviderResponse
from agents.models.batching import Batcher, Rounds, Sleep
from agents.models.cache import schema_document
from agents.models.credentials import read_key
from agents.models.errors import classify
from agents.models.prompt_cache import mark_stable_prefix
from agents.models.providers.anthropic_batch import AnthropicBatchBackend, message_response
from agents.models.providers.http import async_http_client
from agents.models.providers.openai_chat import (
    langchain_response,
    message_text,
    schema_name,
    to_langchain,
)
from agents.models.settings import RoleSettings
from agents.models.spec import ModelSpec
from data.store import Store

ANTHROPIC_BASE_URL = "https://api.anthropic.com"


def image_block(data: bytes, media_type: str) -> dict[str, Any]:
    """Anthropic's image content block: base64 source with its media type."""
    source = {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode()}
    return {"type": "image", "source": source}


class AnthropicChatProvider:
    """One ChatAnthropic (and SDK client) per spec and role settings, reused for every call."""

    def __init__(self, spec: ModelSpec, settings: RoleSettings, api_key: str) -> None:
        self.provider = spec.provider
        self.model = spec.model
        self.endpoint = settings.base_url or ANTHROPIC_BASE_URL
        # every Claude model takes images: ``auto`` and the default both send them
        self.supports_images = settings.send_images is not False
        self.configured_dialect = "tools"
        self._chat = ChatAnthropic(
            model=spec.model,
            api_key=SecretStr(api_key),
            base_url=self.endpoint,
            max_retries=0,
            default_request_timeout=settings.timeout_s,
            max_tokens=settings.max_tokens,
        )
        client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=self.endpoint,
            max_retries=0,
            timeout=settings.timeout_s,
            http_client=async_http_client(anthropic, settings),
        )
        # Replaces the cached_property before first use (see the module docstring).
        self._chat.__dict__["_async_client"] = client
        self._client = client
        self._tools: dict[type[BaseModel], dict[str, Any]] = {}
        self._settings = settings
        self._batcher: Batcher | None = None

    def attach_batching(self, rounds: Rounds, store: Store | None, sleep: Sleep) -> None:
        """Send every request through Message Batches in rounds (``delivery=batch``)."""
        self._batcher = Batcher(
            AnthropicBatchBackend(self._client, self.endpoint),
            rounds,
            store,
            poll_s=self._settings.batch_poll_s,
            timeout_s=self._settings.batch_timeout_s,
            sleep=sleep,
        )

    async def aclose(self) -> None:
        """Close this client's connections (the layer calls it when a run ends)."""
        await self._client.close()

    def _tool_kwargs(self, schema: type[BaseModel]) -> dict[str, Any]:
        cached = self._tools.get(schema)
        if cached is None:
            document = schema_document(schema)[0]
            name = schema_name(schema)
            tool = {
                "name": name,
                "description": document.get("description") or f"Record the {name} object.",
                "input_schema": document,
            }
            cached = {"tools": [tool], "tool_choice": {"type": "tool", "name": name}}
            self._tools[schema] = cached
        return cached

    async def complete(
        self,
        messages: list[Message],
        schema: type[BaseModel],
        params: GenerationParams,
        timeout: float | None,
    ) -> ProviderResponse:
        kwargs: dict[str, Any] = {
            **self._tool_kwargs(schema),
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if params.top_p is not None:  # newer models reject temperature and top_p together
            kwargs["top_p"] = params.top_p
        messages_in = mark_stable_prefix(
            to_langchain(messages, image_block=image_block, images_first=True)
        )
        if self._batcher is not None:  # one request of the next round's batch
            params_body = self._chat._get_request_payload(messages_in, **kwargs)
            batch_id, line = await self._batcher.ask(params_body)
            response = message_response(line)
            response.extra["batch_id"] = batch_id
            return response
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            answer = await self._chat.ainvoke(messages_in, **kwargs)
        except Exception as exc:
            raise classify(exc) from exc
        return self._response(answer)

    def _response(self, answer: AIMessage) -> ProviderResponse:
        meta = answer.response_metadata or {}
        stop_reason = meta.get("stop_reason")
        text = message_text(answer)
        if stop_reason == "refusal":
            raise ProviderError("refused", "the model refused (stop_reason=refusal)", raw_text=text)
        parsed: dict[str, Any] | None = None
        if answer.tool_calls:
            parsed = answer.tool_calls[0]["args"]
            text = json.dumps(parsed, ensure_ascii=False)
        return langchain_response(answer, text, parsed, stop_reason, "tools")


def make_anthropic_provider(spec: ModelSpec, settings: RoleSettings) -> AnthropicChatProvider:
    """Registry factory for ``anthropic:`` specs."""
    key = read_key(spec, settings)
    assert key is not None  # anthropic always has a key variable
    return AnthropicChatProvider(spec, settings, key)
