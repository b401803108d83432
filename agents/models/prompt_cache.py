"""Provider prompt caching: the stable prefix of a request, and the cached tokens of its usage.

Every call of a role repeats the same start: the structured-output schema (a tool or a
``response_format``), then the role's system prompt (which carries the policy's wording). The
messages are built stable part first (``agents/role_call.py``, ``agents/judge.py``: the system
message, then the sample's own user message; a re-ask appends to the end), so that:

- OpenAI's automatic prompt caching applies on its own once that prefix reaches 1,024 tokens:
  nothing is marked; the answer's ``usage.prompt_tokens_details.cached_tokens`` says how many
  prompt tokens were read from the cache (they are part of ``prompt_tokens``).
- Anthropic caches only up to a block marked ``cache_control``: :func:`mark_stable_prefix` marks
  the last system block (the prefix is tools, then system). The answer's ``usage`` counts
  ``input_tokens`` (after the last breakpoint), ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` separately; :func:`anthropic_usage` adds them up so that
  ``input_tokens`` means the whole prompt for every provider.

Cached reads and cache writes are priced at their own rates (``prices.yaml``'s
``cached_input`` and ``cache_write``; ``agents.models.pricing``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage

#: Anthropic's marker for a cache breakpoint (the five-minute cache)
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}


@dataclass(frozen=True)
class InputUsage:
    """A request's prompt tokens: all of them, those read from the cache, those written to it."""

    input_tokens: int | None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def openai_usage(usage: Mapping[str, Any]) -> InputUsage:
    """Chat Completions ``usage``: ``prompt_tokens`` and its ``prompt_tokens_details``."""
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else None
    return InputUsage(_int(usage.get("prompt_tokens")), cached)


def anthropic_usage(usage: Mapping[str, Any]) -> InputUsage:
    """Messages API ``usage``: ``input_tokens`` excludes the cache's reads and writes, which
    are added back so the total is the whole prompt."""
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    rest = _int(usage.get("input_tokens"))
    total = None if rest is None else rest + (read or 0) + (write or 0)
    return InputUsage(total, read, write)


def langchain_usage(metadata: Mapping[str, Any]) -> InputUsage:
    """LangChain's ``usage_metadata``: ``input_tokens`` is already the whole prompt (both
    langchain-openai and langchain-anthropic add the cache's tokens in) and
    ``input_token_details`` holds ``cache_read`` / ``cache_creation``."""
    details = metadata.get("input_token_details")
    details = details if isinstance(details, Mapping) else {}
    return InputUsage(
        _int(metadata.get("input_tokens")),
        _int(details.get("cache_read")),
        _int(details.get("cache_creation")),
    )


def mark_stable_prefix(messages: list[BaseMessage]) -> list[BaseMessage]:
    """The messages with Anthropic's cache breakpoint on the last system message's last text
    block (tools and system form the prefix that repeats across a role's calls)."""
    last = max((i for i, m in enumerate(messages) if isinstance(m, SystemMessage)), default=None)
    if last is None:
        return messages
    system = messages[last]
    content = system.content
    blocks: list[Any] = (
        [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    )
    if not blocks or not isinstance(blocks[-1], dict):
        return messages
    blocks[-1] = {**blocks[-1], "cache_control": EPHEMERAL}
    out = list(messages)
    out[last] = SystemMessage(content=blocks)
    return out
