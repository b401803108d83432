"""Each Q-A kind's question word is part of the schema (issue 22, item 3).

The offline demo's Q-A writer filed "What is the purpose of the image?" as a How item in three
of fourteen samples, after the critic's retry too; the critic rejected them, so nothing bad was
kept, but three samples were lost. With the question word in the schema as a pattern, the
grammar llama.cpp builds cannot produce such an item and a hosted model is shown the rule.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents.schemas import MEDIUM, QUESTION_STARTS, qa_model, question_pattern
from evaluators.record_checks import question_set_problems

ITEMS = {
    "yes_no": [{"question": "Is the image sexy under R1?", "answer": "No"}],
    "multiple_choice": [
        {
            "question": "What does she hold?",
            "options": ["A helmet", "A cup", "A ball", "A hat"],
            "answer": "A",
        }
    ],
    "what": [{"question": "What does the astronaut wear?", "answer": "An orange flight suit."}],
    "how": [{"question": "How is the astronaut dressed?", "answer": "In a covering suit."}],
}


def test_items_with_their_own_question_word_validate() -> None:
    qa_model(1, 1, 1, 1, MEDIUM).model_validate(ITEMS)


@pytest.mark.parametrize(
    ("kind", "question"),
    [
        ("how", "What is the purpose of the image?"),  # quoted from the demo's outputs
        ("how", "What is the age group of the audience?"),
        ("what", "How is the astronaut dressed?"),
        ("yes_no", "What is shown?"),
        ("how", "How is the suit"),  # no question mark
        ("how", 'How does the sign say "DANGER"?'),  # a double quote: not in the grammar
    ],
)
def test_a_question_of_another_kind_does_not_validate(kind: str, question: str) -> None:
    items = {k: [dict(v[0])] for k, v in ITEMS.items()}
    items[kind][0]["question"] = question
    with pytest.raises(ValidationError, match="pattern"):
        qa_model(1, 1, 1, 1, MEDIUM).model_validate(items)


def test_the_length_bound_is_inside_the_pattern() -> None:
    # llama.cpp's converter uses a string's pattern instead of its maxLength: the bound must be
    # in the pattern, or a looping question would run to max_tokens
    for kind, starts in QUESTION_STARTS.items():
        pattern = question_pattern(kind, 200)
        assert pattern.endswith(r"{2," + str(200 - max(map(len, starts)) - 2) + r"}\?$")
    long = "How " + "x" * 300 + "?"
    items = {k: [dict(v[0])] for k, v in ITEMS.items()}
    items["how"][0]["question"] = long
    with pytest.raises(ValidationError):
        qa_model(1, 1, 1, 1, MEDIUM).model_validate(items)


def test_llama_cpp_builds_a_grammar_that_starts_how_items_with_how() -> None:
    pytest.importorskip("llama_cpp")
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from agents.models.providers.local_llamacpp import grammar_schema, schema_grammar

    schema = qa_model(1, 1, 1, 1, MEDIUM)
    gbnf = json_schema_to_gbnf(json.dumps(grammar_schema(schema.model_json_schema())))
    rules = {line.split(" ::= ")[0]: line for line in gbnf.splitlines() if " ::= " in line}
    assert rules["HowItem-question"].startswith('HowItem-question ::= "\\"" ("How") " "')
    assert '("Wha" "t" | "Whic" "h") " "' in rules["WhatItem-question"]
    assert schema_grammar(schema) is not None  # llama.cpp parses it


def test_the_usual_multiple_choice_stem_is_not_about_the_questions() -> None:
    stem = {"multiple_choice": [{"question": "Which of the following options best describes "
                                 "the image according to rule R1?"}]}  # fmt: skip
    assert question_set_problems(stem) == []
    about = {"multiple_choice": [{"question": "What are the four options of the question?"}]}
    assert question_set_problems(about)


def test_letters_a_model_puts_before_its_options_are_not_kept() -> None:
    # the demo's accepted records read "A. A. Card game" in an export
    from agents.qa_writer import unlettered, unlettered_options
    from evaluators.consistency import check_multiple_choice

    assert unlettered("A. Card game") == "Card game"
    assert unlettered("(b) Board game") == "Board game"
    assert unlettered("D: Dice") == "Dice"
    assert unlettered("A helmet") == "A helmet"  # an article is not a letter
    assert unlettered("C.") == "C."  # nothing after it: left for the checks to judge
    # the demo's meme: its own letter and a bare space in front of options B-D
    meme = ["A pink background with the words 'FEELING SEXY TODAY ;)'",
            "B a pink background with the words 'Feeling sexy today ;)'",
            "C a pink background with the words FEELING SEXY TODAY ;)",
            "D a pink background with the words feeling sexy today ;)"]  # fmt: skip
    assert [o[:16] for o in unlettered_options(meme)] == ["A pink backgroun"] + [
        "a pink backgroun"
    ] * 3
    # ... and after that they are one option four times
    assert not check_multiple_choice("What does the image show?", unlettered_options(meme),
                                     "A").passed  # fmt: skip
    # a single option that starts with a letter-like word keeps it
    keys = ["C major", "D minor", "B flat", "E minor"]
    assert unlettered_options(keys) == keys
