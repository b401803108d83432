"""Loopback fakes of the hosted model APIs, for tests and benchmarks.

Usage::

    from tests.fakes import FakeOpenAIServer, reply, error
    with FakeOpenAIServer() as server:
        server.push(error(429, headers={"retry-after": "0"}), reply({"label": "ok"}))
        ...  # point a client at server.base_url
        assert server.chat_requests()[0].body["response_format"]["type"] == "json_schema"
"""

from .anthropic_server import FakeAnthropicServer
from .base import (
    Action,
    FakeServer,
    RecordedRequest,
    content_filter,
    error,
    hang,
    raw,
    refuse,
    reply,
)
from .openai_server import FakeOpenAIServer
from .schema_values import example_from_schema

__all__ = [
    "Action",
    "FakeAnthropicServer",
    "FakeOpenAIServer",
    "FakeServer",
    "RecordedRequest",
    "content_filter",
    "error",
    "example_from_schema",
    "hang",
    "raw",
    "refuse",
    "reply",
]
