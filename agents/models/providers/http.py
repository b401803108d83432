"""The HTTP client under the OpenAI and Anthropic SDKs, chosen by the ``http_transport`` setting.

Generation is many short requests in flight at once. httpx's connection pool checks every pooled
connection for expiry on each request, which at 32 concurrent calls cost more CPU than the rest of
a call; the SDKs' own aiohttp-backed client (``DefaultAioHttpClient``, the SDKs' documented choice
for concurrency) does not. Measured by ``benchmarks/bench_generate.py``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from agents.models.settings import RoleSettings


def async_http_client(sdk: ModuleType, settings: RoleSettings) -> Any:
    """A new async HTTP client for ``sdk`` (the ``openai`` or ``anthropic`` module)."""
    if settings.http_transport == "aiohttp":
        return sdk.DefaultAioHttpClient(timeout=settings.timeout_s)
    return sdk.DefaultAsyncHttpxClient(timeout=settings.timeout_s)
