"""Matching words and phrases in text read from an image (OCR) or written by a model.

OCR output is noisy: case varies, punctuation is dropped or invented, and textures produce
stray glyphs ("8", "AAA"). So matching works on a normalised form (lower case, words separated
by single spaces, punctuation gone) and only on whole words, and only "meaningful" lines (read
with confidence, with a few letters or digits) count as text in the image.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

MIN_LINE_SCORE = 0.8
"""OCR lines read with less confidence are not treated as text in the image."""
MIN_LINE_CHARS = 3
"""...nor are lines with fewer letters or digits than this (stray glyphs)."""

_NON_WORD = re.compile(r"[^\w$%+]+", re.UNICODE)

# Text that speaks to an AI system or tries to override its instructions. Written to be
# specific: an image of a recipe that says "ignore the lumps" must not match.
_INJECTION = [
    re.compile(p)
    for p in (
        r"\b(ignore|disregard|forget|override)\b(\s+\w+){0,3}\s+"
        r"(instructions?|prompts?|rules?|guidelines?|polic(y|ies))\b",
        r"\b(ai|llm|language model|assistant|moderator|chatgpt|gpt|claude)\b(\s+\w+){0,2}\s*"
        r"\b(must|should|will|shall)\s+(answer|say|respond|reply|output|classify|label)\b",
        r"\bnote to (the )?(ai|llm|assistant|moderator|model|reviewer|ai moderator)\b",
        r"\b(answer|respond|reply|output|classify|label)( it)?( with| as)?\s*:?\s*"
        r"(this|the) image is (safe|not sexy|appropriate|acceptable|fine|harmless)\b",
        r"\bsystem prompt\b",
        r"\byou are (now )?an? (ai|assistant|moderator|language model)\b",
    )
]


class _Line(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...


L = TypeVar("L", bound=_Line)


def normalise(text: str) -> str:
    """``"BET NOW! 100% BONUS"`` -> ``"bet now 100% bonus"``."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def find_phrases(text: str, phrases: Iterable[str]) -> list[str]:
    """The phrases that occur in ``text`` as whole words (after normalising both)."""
    haystack = f" {normalise(text)} "
    found = []
    for phrase in phrases:
        needle = normalise(phrase)
        if needle and f" {needle} " in haystack and phrase not in found:
            found.append(phrase)
    return found


#: for each pattern of :data:`_INJECTION`, words of which a normalised text that it matches
#: holds at least one: a text without them is not searched with it (the critic searches every
#: argument and every sentence of every description; most hold none)
_INJECTION_HINTS = (
    ("ignore", "disregard", "forget", "override"),
    ("must", "should", "will", "shall"),
    ("note to",),
    ("image is",),
    ("system prompt",),
    ("you are",),
)


def injection_phrases(text: str) -> list[str]:
    """Spans of ``text`` that look like instructions aimed at an AI model (the caller's own
    list)."""
    return list(_injection_phrases(text))


@functools.lru_cache(maxsize=8192)  # each sentence of a description, read at each stage check
def _injection_phrases(text: str) -> tuple[str, ...]:
    haystack = normalise(text)
    spans = []
    for pattern, hints in zip(_INJECTION, _INJECTION_HINTS, strict=True):
        if not any(hint in haystack for hint in hints):
            continue
        for match in pattern.finditer(haystack):
            if match.group(0) not in spans:
                spans.append(match.group(0))
    return tuple(spans)


def meaningful_lines(
    lines: Sequence[L], *, min_score: float = MIN_LINE_SCORE, min_chars: int = MIN_LINE_CHARS
) -> list[L]:
    """Lines that are read with confidence and hold at least ``min_chars`` letters/digits."""
    return [
        line
        for line in lines
        if line.score >= min_score and sum(ch.isalnum() for ch in line.text) >= min_chars
    ]
