"""Validate a model's answer against the call's pydantic schema, and ask again when it fails.

An answer that does not validate is never turned into a default: the layer keeps the raw text,
re-asks with the validation error (a bounded number of times), and otherwise ends the call as
``parse_failed``. Parsing is lenient only about packaging: surrounding prose or a code fence
around the first JSON object is tolerated (text-dialect endpoints and small models do this).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agents.models.base import Message, ProviderResponse

T = TypeVar("T", bound=BaseModel)

_DECODER = json.JSONDecoder()
_MAX_CANDIDATES = 20


def extract_json(text: str) -> Any | None:
    """The whole text as JSON, else the first JSON object found in it, else None."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    start = stripped.find("{")
    tried = 0
    while start != -1 and tried < _MAX_CANDIDATES:
        try:
            value, _ = _DECODER.raw_decode(stripped, start)
            return value
        except json.JSONDecodeError:
            tried += 1
            start = stripped.find("{", start + 1)
    return None


def _describe(exc: ValidationError) -> str:
    """A compact, model-readable list of what failed."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def validate_answer(response: ProviderResponse, schema: type[T]) -> tuple[T | None, str | None]:
    """(value, None) when the answer validates, else (None, why it did not)."""
    data = response.parsed if response.parsed is not None else extract_json(response.raw_text)
    if data is None:
        truncated = (
            " (the answer was cut off at max_tokens)"
            if response.finish_reason
            in (
                "length",
                "max_tokens",
            )
            else ""
        )
        return None, f"no JSON object in the answer{truncated}"
    try:
        return schema.model_validate(data), None
    except ValidationError as exc:
        return None, f"does not match {schema.__name__}: {_describe(exc)}"


def reask_messages(messages: list[Message], raw_text: str, problem: str) -> list[Message]:
    """The conversation plus the bad answer and a follow-up asking for a valid one."""
    follow_up = (
        f"Your answer could not be used: {problem}. Answer again with one JSON object that "
        "matches the schema exactly, and nothing else."
    )
    return [
        *messages,
        Message(role="assistant", text=raw_text),
        Message(role="user", text=follow_up),
    ]
