"""Anthropic's Message Batches API: one round is one batch of Messages requests.

``POST /v1/messages/batches`` with ``requests: [{custom_id, params}]`` (``params``: the body the
synchronous Messages call sends); ``GET /v1/messages/batches/{id}`` until ``processing_status``
is ``ended``; then the JSONL at ``results_url``, one line per request:
``{"custom_id", "result": {"type": "succeeded", "message": {...}}}``, or ``errored`` (with the
API error), ``canceled`` or ``expired``. A succeeded message is read exactly like a synchronous
answer (tool input, refusal stop reason, usage); the rest fail their call with a classified,
retryable-where-sensible error, so the layer retries them in the next round.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic

from agents.models.base import ProviderError, ProviderResponse
from agents.models.batching import BatchState
from agents.models.errors import kind_for_status, provider_message
from agents.models.prompt_cache import anthropic_usage
from agents.models.providers.openai_wire import chat_response

#: the HTTP status an ``errored`` result's error type stands for (Anthropic's error types)
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicBatchBackend:
    """The Message Batches endpoints of one base URL, through the anthropic SDK."""

    provider = "anthropic"

    def __init__(self, client: anthropic.AsyncAnthropic, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint

    async def submit(self, requests: list[tuple[str, dict[str, Any]]]) -> tuple[str, str, None]:
        batch = await self.client.messages.batches.create(
            requests=[{"custom_id": cid, "params": params} for cid, params in requests]  # type: ignore[typeddict-item]
        )
        return batch.id, batch.processing_status, None

    async def poll(self, batch_id: str) -> BatchState:
        batch = await self.client.messages.batches.retrieve(batch_id)
        detail = {
            "request_counts": batch.request_counts.model_dump(),
            "results_url": batch.results_url,
        }
        return BatchState(batch.processing_status, batch.processing_status == "ended", detail)

    async def results(self, batch_id: str, state: BatchState) -> dict[str, str]:
        lines: dict[str, str] = {}
        async for entry in await self.client.messages.batches.results(batch_id):
            lines[entry.custom_id] = entry.model_dump_json()
        return lines

    def missing(self, batch_id: str, state: BatchState) -> ProviderError:
        return ProviderError(
            "server", f"message batch {batch_id} ended without a result for this request"
        )


def message_response(line: dict[str, Any]) -> ProviderResponse:
    """One result line as the synchronous path reads a Messages answer, or its error."""
    result = line.get("result") or {}
    kind, cid = result.get("type"), line.get("custom_id")
    if kind == "expired":
        raise ProviderError("timeout", f"batch request {cid} expired before it ran")
    if kind == "canceled":
        raise ProviderError("server", f"batch request {cid} was canceled")
    if kind == "errored":
        body = result.get("error") or {}
        error_type = (body.get("error") or {}).get("type", "api_error")
        status = _ERROR_STATUS.get(error_type, 500)
        why = provider_message(body, error_type)
        raise ProviderError(kind_for_status(status), f"batch request {cid}: {why}")
    if kind != "succeeded":
        raise ProviderError("server", f"batch request {cid}: unknown result type {kind!r}")
    message = result.get("message") or {}
    blocks = message.get("content") or []
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    stop_reason = message.get("stop_reason")
    if stop_reason == "refusal":
        raise ProviderError("refused", "the model refused (stop_reason=refusal)", raw_text=text)
    parsed: dict[str, Any] | None = None
    tools = [b for b in blocks if b.get("type") == "tool_use"]
    if tools:
        parsed = tools[0].get("input")
        text = json.dumps(parsed, ensure_ascii=False)
    usage = message.get("usage") or {}
    return chat_response(
        text,
        parsed,
        anthropic_usage(usage),
        usage.get("output_tokens"),
        stop_reason,
        "tools",
    )
