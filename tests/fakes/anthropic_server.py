"""A fake Anthropic Messages server (``POST /v1/messages``) on loopback.

Speaks the wire format the anthropic SDK parses: ``content`` blocks (``text`` / ``tool_use``),
``stop_reason`` (``end_turn``, ``tool_use``, ``refusal``, ``max_tokens``) and ``usage``. Errors use
Anthropic's ``{"type": "error", "error": {"type", "message"}}`` body. Prompt caching as the
Messages API reports it: prefixes ending at a ``cache_control`` block are written, then read
(``cache_creation_input_tokens``, ``cache_read_input_tokens``; ``input_tokens`` is the rest;
tests/fakes/prompt_cache.py; ``prompt_cache_min_tokens``, 1,024 as for Sonnet).
"""

from __future__ import annotations

import json
from typing import Any

from .anthropic_batches import AnthropicBatchEndpoints
from .base import Action, FakeServer, json_response, reply
from .prompt_cache import PrefixCache, rough_tokens
from .schema_values import example_from_schema

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def request_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool input schema of a Messages request, if it has tools."""
    tools = body.get("tools") or []
    return tools[0]["input_schema"] if tools else None


class FakeAnthropicServer(AnthropicBatchEndpoints, FakeServer):
    """Base URL for clients: :attr:`base_url` (the SDK appends ``/v1/messages``). Also serves
    Message Batches (tests/fakes/anthropic_batches.py), each request answered like a live one."""

    chat_path = "/v1/messages"

    def __init__(self, *, prompt_cache_min_tokens: int = 1024, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prompt_cache = PrefixCache(prompt_cache_min_tokens)
        self._counter = 0
        self._init_batches()

    @property
    def base_url(self) -> str:
        return self.url

    def default_action(self, body: dict[str, Any]) -> Action:
        schema = request_schema(body)
        return reply(example_from_schema(schema) if schema else {})

    def render(self, action: Action, body: dict[str, Any]):
        if action.kind == "error":
            kind = _ERROR_TYPES.get(action.status, "api_error")
            payload = {"type": "error", "error": {"type": kind, "message": action.content}}
            return json_response(action.status, payload, action.headers)
        if action.kind == "raw":
            return (
                action.status,
                {"content-type": "application/json", **action.headers},
                action.body or b"",
            )
        self._counter += 1
        content: list[dict[str, Any]] = []
        if action.kind == "refuse":
            stop = "refusal"
            if action.content:
                content.append({"type": "text", "text": action.content})
        else:
            tools = body.get("tools") or []
            as_tool = action.as_tool if action.as_tool is not None else bool(tools)
            if as_tool:
                name = tools[0]["name"] if tools else "output"
                try:
                    tool_input = json.loads(action.content or "{}")
                except json.JSONDecodeError:
                    tool_input = {"_unparseable": action.content}
                content.append(
                    {
                        "type": "tool_use",
                        "id": f"toolu_{self._counter}",
                        "name": name,
                        "input": tool_input,
                    }
                )
                stop = action.finish_reason or "tool_use"
            else:
                content.append({"type": "text", "text": action.content or ""})
                stop = action.finish_reason or "end_turn"
        prompt = [body.get("tools"), body.get("system"), body.get("messages", [])]
        input_tokens, output_tokens = action.usage or (
            max(1, rough_tokens(prompt)),
            max(1, len(action.content or "") // 4),
        )
        read, write = self.prompt_cache.anthropic_usage(body)
        # the prompt's other tokens: a scripted count stays the whole prompt's
        input_tokens = max(0, input_tokens - read - write)
        payload = {
            "id": f"msg_{self._counter}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": read,
                "cache_creation_input_tokens": write,
            },
        }
        return json_response(200, payload)
