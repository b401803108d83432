"""A fake OpenAI Chat Completions server (``POST /v1/chat/completions``) on loopback.

Speaks the wire format the openai SDK parses: ``choices[].message`` with ``content``,
``tool_calls`` or ``refusal``, ``finish_reason``, and ``usage``. Errors use OpenAI's
``{"error": {"message", "type", "code"}}`` body. ``llamacpp=True`` imitates the llama.cpp
server, which answers 500 to a ``json_schema`` response format.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .base import Action, FakeServer, json_response, reply
from .schema_values import example_from_schema

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_denied",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}
_TEXT_SCHEMA = re.compile(r"JSON schema:\n(\{.*\})\s*$", re.S)


def request_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a Chat Completions request asks for, whichever dialect carries it."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"]["schema"]
    if fmt.get("type") == "json_object" and "schema" in fmt:
        return fmt["schema"]
    tools = body.get("tools") or []
    if tools:
        return tools[0]["function"]["parameters"]
    for message in body.get("messages", []):
        content = message.get("content")
        if message.get("role") == "system" and isinstance(content, str):
            match = _TEXT_SCHEMA.search(content)
            if match:
                return json.loads(match.group(1))
    return None


class FakeOpenAIServer(FakeServer):
    """Base URL for clients: :attr:`base_url` (``.../v1``)."""

    chat_path = "/v1/chat/completions"

    def __init__(self, *, llamacpp: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llamacpp = llamacpp
        self._counter = 0

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def default_action(self, body: dict[str, Any]) -> Action:
        schema = request_schema(body)
        return reply(example_from_schema(schema) if schema else {})

    def render(self, action: Action, body: dict[str, Any]):
        fmt = body.get("response_format") or {}
        if self.llamacpp and fmt.get("type") not in (None, "text", "json_object"):
            message = (
                'response_format type must be one of "text" or "json_object", but got: json_schema'
            )
            return json_response(
                500, {"error": {"code": 500, "message": message, "type": "server_error"}}
            )
        if action.kind == "error":
            kind = _ERROR_TYPES.get(action.status, "server_error")
            payload = {
                "error": {"message": action.content, "type": kind, "code": None, "param": None}
            }
            return json_response(action.status, payload, action.headers)
        if action.kind == "raw":
            return (
                action.status,
                {"content-type": "application/json", **action.headers},
                action.body or b"",
            )
        self._counter += 1
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        finish = action.finish_reason or "stop"
        if action.kind == "refuse":
            message["refusal"] = action.content
        elif action.kind == "content_filter":
            finish = "content_filter"
        else:
            as_tool = action.as_tool if action.as_tool is not None else bool(body.get("tools"))
            if as_tool:
                name = body["tools"][0]["function"]["name"] if body.get("tools") else "output"
                message["tool_calls"] = [
                    {
                        "id": f"call_{self._counter}",
                        "type": "function",
                        "function": {"name": name, "arguments": action.content},
                    }
                ]
                finish = action.finish_reason or "tool_calls"
            else:
                message["content"] = action.content
        prompt_tokens, completion_tokens = action.usage or (
            max(1, len(json.dumps(body.get("messages", []))) // 4),
            max(1, len(action.content or "") // 4),
        )
        payload = {
            "id": f"chatcmpl-{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return json_response(200, payload)
