"""The Chat Completions wire format, for the clients that send it without LangChain.

``client=sdk`` posts the body with the openai SDK's own ``AsyncOpenAI.post``; ``client=raw``
posts it with aiohttp directly (:class:`RawChatClient`), the lightest way to talk to a
self-hosted OpenAI-compatible server (vLLM, llama.cpp, Ollama) at high concurrency: no SDK
request or response objects. Both build the same body as ChatOpenAI (tests compare them) and
read the answer with :func:`parse_completion`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import aiohttp.helpers
import orjson
from yarl import URL

from agents.models.base import Message, ProviderError, ProviderResponse
from agents.models.errors import http_error, looks_like_refusal
from agents.models.prompt_cache import InputUsage, openai_usage

USER_AGENT = "icm-assistant (aiohttp)"


def wire_messages(
    messages: list[Message],
    image_block: Callable[[bytes, str], dict[str, Any]],
    instruction: str | None = None,
) -> list[dict[str, Any]]:
    """Our messages as Chat Completions messages, exactly as ChatOpenAI sends them;
    ``instruction`` is appended to the system message."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content: Any = m.text
        if m.images:
            images = [image_block(i.data, i.media_type) for i in m.images]
            text = [{"type": "text", "text": m.text}]
            content = images + text if m.images_first else text + images
        out.append({"content": content, "role": m.role})
    if instruction:
        if out and out[0]["role"] == "system":
            out[0] = {"content": f"{out[0]['content']}\n\n{instruction}", "role": "system"}
        else:
            out.insert(0, {"content": instruction, "role": "system"})
    return out


def parse_completion(body_text: str, dialect: str, endpoint: str) -> ProviderResponse:
    """The layer's response from a Chat Completions answer: refusals (the ``refusal`` field,
    the content filter, refusal prose where an object was due) raise ``refused``; with the
    ``tools`` dialect the forced function call's arguments are the answer."""
    try:
        data = orjson.loads(body_text)
        choice = data["choices"][0]
        message = choice["message"]
    except (orjson.JSONDecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ProviderError(
            "server", f"{endpoint} sent no chat completion: {body_text[:200]!r}"
        ) from exc
    finish = choice.get("finish_reason")
    text = message.get("content") or ""
    if message.get("refusal"):
        refusal = message["refusal"]
        raise ProviderError("refused", f"the model refused: {refusal}", raw_text=refusal)
    if finish == "content_filter":
        raise ProviderError("refused", "the content filter stopped the answer", raw_text=text)
    parsed: dict[str, Any] | None = None
    calls = message.get("tool_calls") or []
    if dialect == "tools" and calls:
        arguments = (calls[0].get("function") or {}).get("arguments") or ""
        try:
            loaded = json.loads(arguments)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            parsed = loaded
            text = json.dumps(parsed, ensure_ascii=False)
        else:
            text = arguments
    usage = data.get("usage") or {}
    response = chat_response(
        text, parsed, openai_usage(usage), usage.get("completion_tokens"), finish, dialect
    )
    return with_logprobs(response, choice.get("logprobs"))


def with_logprobs(response: ProviderResponse, logprobs: Any) -> ProviderResponse:
    """``response`` with the choice's token log-probabilities (``logprobs.content``, the Chat
    Completions shape) in ``extra["logprobs"]``, when the answer has them."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(content, list) and content:
        response.extra["logprobs"] = content
    return response


def chat_response(
    text: str,
    parsed: dict[str, Any] | None,
    input_usage: InputUsage,
    output_tokens: int | None,
    finish_reason: str | None,
    dialect: str,
) -> ProviderResponse:
    """The layer's response to an answer; prose that reads as a refusal where an object was
    due is a refusal (every client and provider applies the same rule). ``input_usage``: the
    prompt's tokens, with those the provider's prompt cache read and wrote."""
    if parsed is None and looks_like_refusal(text):
        raise ProviderError("refused", f"the model refused: {text[:200]}", raw_text=text)
    return ProviderResponse(
        raw_text=text,
        parsed=parsed,
        input_tokens=input_usage.input_tokens,
        output_tokens=output_tokens,
        finish_reason=finish_reason,
        extra={"dialect": dialect},
        cached_input_tokens=input_usage.cached_tokens,
        cache_write_tokens=input_usage.cache_write_tokens,
    )


def env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``, unless
    ``NO_PROXY`` exempts its host), as httpx and the SDKs honour it; (None, None) for none."""
    try:
        proxy, auth = aiohttp.helpers.get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None
    return str(proxy), auth


class RawChatClient:
    """POST ``{base_url}/chat/completions`` with aiohttp; errors come back classified.

    One session (connection pool) per client, opened on first use inside the running event
    loop (the layer keeps one provider per loop) and closed by :meth:`aclose`. The environment's
    proxy for the URL is looked up once, here, rather than by aiohttp on every request
    (``trust_env``).
    """

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._limits: dict[float, aiohttp.ClientTimeout] = {}  # built once per value
        self._proxy, self._proxy_auth = env_proxy(self.url)

    async def post(self, body: dict[str, Any], timeout: float | None) -> str:
        """The answer's text for a 2xx; :class:`ProviderError` otherwise."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        seconds = timeout or self._timeout_s
        limit = self._limits.get(seconds)
        if limit is None:
            limit = self._limits[seconds] = aiohttp.ClientTimeout(total=seconds)
        async with self._session.post(
            self.url,
            data=orjson.dumps(body),
            timeout=limit,
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
        ) as reply:
            text = await reply.text()
            if reply.status >= 400:
                try:
                    decoded: Any = json.loads(text)
                except ValueError:
                    decoded = None
                raise http_error(
                    reply.status, reply.headers, decoded, text[:300] or reply.reason or ""
                )
        return text

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
