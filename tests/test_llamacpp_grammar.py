"""Grammars for local:qwen2.5-1.5b: llama.cpp's parser refuses very long bounded strings, and
sampling with the refused grammar crashes the process (seen with the full profile's
1,400-character explanation), so such bounds are left out of the grammar (pydantic keeps
enforcing them)."""

from __future__ import annotations

import json

from agents.critic import critique_schema
from agents.models.providers.local_llamacpp import MAX_GRAMMAR_LENGTH, grammar_schema
from agents.schemas import (
    FULL,
    SHORT,
    context_model,
    description_model,
    explanation_model,
    qa_model,
)


def _max_lengths(node: object) -> list[int]:
    if isinstance(node, dict):
        own = [node["maxLength"]] if isinstance(node.get("maxLength"), int) else []
        return own + [n for v in node.values() for n in _max_lengths(v)]
    if isinstance(node, list):
        return [n for v in node for n in _max_lengths(v)]
    return []


def test_every_agent_schema_keeps_only_bounds_llama_cpp_can_parse() -> None:
    for lengths in (FULL, SHORT):
        for model in (description_model(lengths), context_model(lengths), critique_schema(),
                      explanation_model(("sexy", "not sexy"), lengths),
                      qa_model(3, 3, 2, 2, lengths)):  # fmt: skip
            raw = model.model_json_schema()
            kept = grammar_schema(raw)
            assert all(n <= MAX_GRAMMAR_LENGTH for n in _max_lengths(kept)), model.__name__
            # bounds within the limit are kept exactly; nothing else changes
            assert [n for n in _max_lengths(raw) if n <= MAX_GRAMMAR_LENGTH] == _max_lengths(kept)
    long = explanation_model(("sexy", "not sexy"), FULL).model_json_schema()
    assert max(_max_lengths(long)) > MAX_GRAMMAR_LENGTH  # the case this exists for
    assert json.dumps(grammar_schema({"type": "string", "maxLength": 5})) == json.dumps(
        {"type": "string", "maxLength": 5}
    )
