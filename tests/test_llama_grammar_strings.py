"""Strings under llama.cpp's grammar hold only what JSON allows (issue 22's demo run).

llama-cpp-python 0.3's JSON-schema converter writes ``char ::= [^"\\\\] | ...``: a raw newline
is a character of a string. qwen ended a 1,000-character explanation (the grammar's bound) with
one, the answer was not JSON, and the whole sample failed as ``parse_failed``."""

from __future__ import annotations

import json

import pytest

from agents.models.providers.local_llamacpp import grammar_schema, json_string_chars
from agents.schemas import MEDIUM, argument_model, qa_model


def _gbnf(schema: type) -> str:
    pytest.importorskip("llama_cpp")
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(json.dumps(grammar_schema(schema.model_json_schema())))


@pytest.mark.parametrize("schema", [argument_model(MEDIUM), qa_model(1, 1, 1, 1, MEDIUM)])
def test_the_string_character_rule_excludes_control_characters(schema: type) -> None:
    loose = _gbnf(schema)
    assert 'char ::= [^"\\\\] |' in loose  # the converter's rule, as this test found it
    strict = json_string_chars(loose)
    (char,) = [line for line in strict.splitlines() if line.startswith("char ::=")]
    assert char.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] |')
    # only that rule changes: the question patterns keep their own classes
    assert sorted(set(loose.splitlines()) - set(strict.splitlines())) == [
        line for line in loose.splitlines() if line.startswith("char ::=")
    ]
    from llama_cpp.llama_grammar import LlamaGrammar

    LlamaGrammar.from_string(strict, verbose=False)  # llama.cpp parses it
