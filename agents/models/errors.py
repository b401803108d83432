"""Classify whatever an SDK raised into a :class:`ProviderError` the layer can act on.

The layer's retry policy needs one question answered per failure: retry (and after how long) or
stop. The openai and anthropic SDKs, their LangChain wrappers and httpx each raise their own
classes; all of them carry either an HTTP status (and response headers) or are transport errors,
so classification goes by status code and transport type rather than by a list of class names.
This keeps new SDK error subclasses (anthropic 2.x has dozens) classified without edits here.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import httpx

from agents.models.base import ErrorKind, ProviderError


def _loaded(name: str) -> Any:
    """The module if something already imported it, else None.

    An exception can only be an SDK's if that SDK was imported, so classification looks the
    SDKs up here instead of importing them: importing openai and anthropic costs over a second,
    which every ``icm`` command (``--help`` included) would otherwise pay.
    """
    return sys.modules.get(name)


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI) or ``retry-after`` (seconds or date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    millis = lower.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def kind_for_status(status: int) -> ErrorKind:
    """The retry class of an HTTP status."""
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status in (408,):
        return "timeout"
    if status == 409 or status >= 500:
        return "server"
    return "bad_request"


def provider_message(body: Any, fallback: str) -> str:
    """The provider's own error text from an error body (OpenAI and Anthropic shapes)."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            kind = error.get("type") or error.get("code")
            return f"{kind}: {error['message']}" if kind else error["message"]
        if isinstance(error, str):
            return error
    return fallback


def http_error(
    status: int, headers: Mapping[str, str] | None, body: Any, fallback: str
) -> ProviderError:
    """The classified error of an HTTP error answer (``body``: its decoded JSON, if any)."""
    return ProviderError(
        kind_for_status(status),
        f"HTTP {status}: {provider_message(body, fallback)}",
        status_code=status,
        retry_after=parse_retry_after(headers) if status in (429, 503, 529) else None,
    )


def _with_loaded(
    base: tuple[type[BaseException], ...], *names: tuple[str, str]
) -> tuple[type[BaseException], ...]:
    """``base`` plus each (module, class) of ``names`` whose module is loaded."""
    extra = (getattr(_loaded(module), cls, None) for module, cls in names)
    return (*base, *(t for t in extra if t is not None))


def _timeout_types() -> tuple[type[BaseException], ...]:
    return _with_loaded(
        (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError),
        ("httpx2", "TimeoutException"),  # the SDKs ship on httpx2, a fork with its own classes
        ("openai", "APITimeoutError"),
        ("anthropic", "APITimeoutError"),
    )


def _connection_types() -> tuple[type[BaseException], ...]:
    return _with_loaded(
        (httpx.TransportError, ConnectionError),
        ("httpx2", "TransportError"),
        ("openai", "APIConnectionError"),
        ("anthropic", "APIConnectionError"),
        ("aiohttp", "ClientConnectionError"),  # client=raw (incl. a server that hung up)
        ("aiohttp", "ClientPayloadError"),
    )


def classify(exc: BaseException) -> ProviderError:
    """Map an exception from an SDK, LangChain or httpx to a classified :class:`ProviderError`."""
    if isinstance(exc, ProviderError):
        return exc
    refusal = getattr(_loaded("langchain_core.exceptions"), "ModelRefusalError", None)
    if refusal is not None and isinstance(exc, refusal):
        return ProviderError("refused", str(exc) or "the model refused")
    content_filter = getattr(_loaded("openai"), "ContentFilterFinishReasonError", None)
    if content_filter is not None and isinstance(exc, content_filter):
        return ProviderError("refused", "the provider's content filter stopped the answer")
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)  # httpx or httpx2 (the SDKs' fork) response
    if status is None:
        status = getattr(response, "status_code", None)
    if isinstance(status, int) and status < 400:
        # a 2xx whose body could not be read (cut off mid-JSON, say): a server fault worth
        # retrying, not a bad request (the SDK raises APIResponseValidationError for it)
        return ProviderError("server", f"unreadable answer (HTTP {status}): {exc}"[:500])
    if isinstance(status, int):
        headers = getattr(response, "headers", None)
        return http_error(status, headers, getattr(exc, "body", None), str(exc))
    if isinstance(exc, _timeout_types()):
        return ProviderError("timeout", f"request timed out ({type(exc).__name__})")
    if isinstance(exc, _connection_types()):
        return ProviderError("connection", f"connection failed: {exc}")
    return ProviderError("bad_request", f"{type(exc).__name__}: {exc}")


_REFUSAL = re.compile(
    r"^\W*(?:(?:i[’']?m|i am)\s+(?:very\s+|really\s+)?sorry|sorry|i\s+apologi[sz]e|unfortunately)?"
    r"[\s,.!-]*(?:but\s+)?(?:as an ai[^,.]*,\s*)?"
    r"i\s+(?:can(?:[’']?t|not| not)|won[’']?t|will not|"
    r"am (?:not able|unable) to|[’']?m (?:not able|unable) to)"
    r"\s+(?:help|assist|comply|provide|do|fulfil+|describe|process|analy[sz]e|create|generate|"
    r"engage|support|answer|continue|view|look|identify|discuss)",
    re.IGNORECASE,
)


def looks_like_refusal(text: str) -> bool:
    """True for a plain-text refusal ("I'm sorry, but I can't help with that").

    Only an answer that does not start a JSON value is checked: a JSON object that quotes a
    refusal inside a field is an answer, and the critic judges its content.
    """
    stripped = text.lstrip()
    if stripped.startswith(("{", "[", "```")):
        return False
    return bool(_REFUSAL.match(stripped[:300]))
