"""A fake OpenAI Chat Completions server (``POST /v1/chat/completions``) on loopback.

Speaks the wire format the openai SDK parses: ``choices[].message`` with ``content``,
``tool_calls`` or ``refusal``, ``finish_reason``, and ``usage``. Errors use OpenAI's
``{"error": {"message", "type", "code"}}`` body. ``llamacpp=True`` imitates the llama.cpp
server, which answers 500 to a ``json_schema`` response format. ``text_only="vllm"`` (or
``"llamacpp"``, ``"ollama"``) imitates that server serving a model that takes no images: a
request with an image part gets the server's own error (see :data:`TEXT_ONLY_ERRORS`).
Prompt caching as OpenAI's automatic caching reports it: a request whose prefix repeats gets
``usage.prompt_tokens_details.cached_tokens`` (tests/fakes/prompt_cache.py;
``prompt_cache_min_tokens``, 1,024 as on the real API, sets the shortest prefix cached).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .base import Action, FakeServer, json_response, reply
from .openai_batches import BatchEndpoints
from .prompt_cache import PrefixCache, rough_tokens
from .schema_values import example_from_schema

#: a crude tokenizer for default log-probabilities: words, spaces-before-words, punctuation
_TOKENS = re.compile(r" ?\w+|[^\w\s]+|\s+")


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def wire_logprobs(action: Action, body: dict[str, Any]) -> dict[str, Any] | None:
    """``choices[0].logprobs`` as Chat Completions sends it: None unless the request set
    ``logprobs: true``; then ``{"content": [{token, logprob, bytes, top_logprobs: [...]}],
    "refusal": None}`` with at most ``top_logprobs`` alternatives per token, most likely first.
    An action without scripted log-probabilities gets each token of its text at 0.0."""
    if not body.get("logprobs") or action.content is None:
        return None
    n = int(body.get("top_logprobs") or 0)
    tokens = action.logprobs or tuple((t, {t: 0.0}) for t in _TOKENS.findall(action.content))
    content = []
    for token, alternatives in tokens:
        ranked = sorted(alternatives.items(), key=lambda kv: -kv[1])[:n]
        content.append(
            _entry(token, alternatives.get(token, 0.0))
            | {"top_logprobs": [_entry(t, lp) for t, lp in ranked]}
        )
    return {"content": content, "refusal": None}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_denied",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}
#: (status, body) each self-hosted server answers to an image sent to a text-only model; the
#: messages are the servers' own (sources cited in agents/models/providers/openai_chat.py)
TEXT_ONLY_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    # vLLM's OpenAI server: ValueError from MultiModalRegistry.create_processor -> 400
    "vllm": (
        400,
        {
            "error": {
                "message": "fake-model is not a multimodal model",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        },
    ),
    # llama.cpp's llama-server without --mmproj: a 500 server_error
    "llamacpp": (
        500,
        {
            "error": {
                "code": 500,
                "message": "image input is not supported - hint: if this is unexpected, "
                "you may need to provide the mmproj",
                "type": "server_error",
            }
        },
    ),
    # Ollama's OpenAI-compatible endpoint relaying the runner's ErrNoVisionModel
    "ollama": (
        500,
        {
            "error": {
                "message": "this model is missing data required for image input",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        },
    ),
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


def has_image(body: dict[str, Any]) -> bool:
    """Does any message of a Chat Completions request carry an image part?"""
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list) and any(p.get("type") == "image_url" for p in content):
            return True
    return False


class FakeOpenAIServer(BatchEndpoints, FakeServer):
    """Base URL for clients: :attr:`base_url` (``.../v1``). Also serves the Files + Batches
    endpoints (tests/fakes/openai_batches.py), each batch line answered like a chat request."""

    chat_path = "/v1/chat/completions"

    def __init__(
        self,
        *,
        llamacpp: bool = False,
        text_only: str | None = None,
        prompt_cache_min_tokens: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt_cache = PrefixCache(prompt_cache_min_tokens)
        if text_only is not None and text_only not in TEXT_ONLY_ERRORS:
            raise ValueError(f"text_only must be one of {sorted(TEXT_ONLY_ERRORS)}")
        self.llamacpp = llamacpp
        self.text_only = text_only
        self._counter = 0
        self._init_batches()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def default_action(self, body: dict[str, Any]) -> Action:
        schema = request_schema(body)
        return reply(example_from_schema(schema) if schema else {})

    def render(self, action: Action, body: dict[str, Any]):
        if self.text_only is not None and has_image(body):
            status, payload = TEXT_ONLY_ERRORS[self.text_only]
            return json_response(status, payload)
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
        schema = body.get("response_format") or body.get("tools")
        prompt_tokens, completion_tokens = action.usage or (
            max(1, rough_tokens([schema, body.get("messages", [])])),
            max(1, len(action.content or "") // 4),
        )
        cached = min(prompt_tokens, self.prompt_cache.openai_cached(body))
        payload = {
            "id": f"chatcmpl-{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish,
                    "logprobs": wire_logprobs(action, body),
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            },
        }
        return json_response(200, payload)
