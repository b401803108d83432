"""Issue 28: a pattern skipped where a text holds none of its hint words finds exactly what the
pattern finds (``evaluators/hinted_search.py``; the refusal and pipeline-talk checks)."""

from __future__ import annotations

import random
import re

import pytest

from evaluators import record_checks
from evaluators.consistency import REFUSAL_HINTS, REFUSAL_PATTERNS, check_no_refusal
from evaluators.hinted_search import hinted_search

_WORDS = (
    "I I'm am sorry but , can't cannot help assist comply provide describe not able "
    "unable to as an AI language model won't with reviewer the critic rejection "
    "was were rejected previous description answer explanation questions version "
    "corrected given schema detector evidence annotation says image is safe ſorry"
)
VOCABULARY = [
    *_WORDS.split(),
    # fragments, so that whole alternatives occur often
    "I'm sorry,", "I am sorry", "I cannot", "I can't", "I'm not able to", "I am unable to",
    "as an AI", "I won't", "cannot assist with", "the given schema", "was rejected",
]  # fmt: skip

PATTERNS = [
    (REFUSAL_PATTERNS, REFUSAL_HINTS),
    (record_checks._PIPELINE_TALK, record_checks._PIPELINE_TALK_HINTS),
]


def _random_case(rng: random.Random, word: str) -> str:
    return "".join(ch.upper() if rng.random() < 0.3 else ch for ch in word)


@pytest.mark.parametrize(("pattern", "hints"), PATTERNS)
def test_the_hinted_search_finds_what_the_pattern_finds(
    pattern: re.Pattern[str], hints: tuple[str, ...]
) -> None:
    rng = random.Random(28)
    matched = 0
    for _ in range(20_000):
        words = [_random_case(rng, rng.choice(VOCABULARY)) for _ in range(rng.randint(1, 6))]
        text = " ".join(words)
        expected = pattern.search(text)
        found = hinted_search(pattern, hints, text)
        assert (found and found.group(0)) == (expected and expected.group(0)), text
        matched += expected is not None
    assert matched > 300  # the texts did exercise the pattern


def test_a_non_ascii_text_is_always_searched() -> None:
    # under re.IGNORECASE the long s matches "s"; str.lower() keeps it, so no hint is seen
    assert REFUSAL_PATTERNS.search("I am ſorry, but no")
    assert hinted_search(REFUSAL_PATTERNS, REFUSAL_HINTS, "I am ſorry, but no")
    assert not check_no_refusal("describer", "I am ſorry, but no").passed


def test_the_checks_still_catch_their_texts() -> None:
    assert not check_no_refusal("describer", "I'm sorry, but I cannot describe this.").passed
    assert check_no_refusal("describer", "A person stands on a beach.").passed
    assert record_checks.pipeline_talk("Unlike the previous description, it") == (
        "previous description"
    )
    assert record_checks.pipeline_talk("The REVIEWER was right.") == "REVIEWER"
    assert record_checks.pipeline_talk("A beach at noon.") is None
