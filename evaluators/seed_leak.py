"""The paper's seed-leak filter: drop sentences that mention the seed the model was given.

The released generation (zhaoyuzhi/ICM-Assistant, ``moderation explanation generation/
vllm_data_generation.py``) seeds the image-seeing model with the category's sentence ("It is
known that ..."); models then write "based on the prior information, ...", which gives away that
the text was prompted. The release's ``check_all_MLLM_output_content.py`` removes such text: it
splits each answer on ``.``, and from the first piece containing one of its "black words" it
keeps nothing (its keep-flag is set to False and never reset), so a leak drops the rest of the
answer too. :func:`filter_seed_leaks` does both that (``rest``) and the narrower removal of only
the leaking sentences (``sentence``).

Our own prompt calls the seed "what is known about the image", so the default phrase list is
the release's black words plus the phrases a model would echo from our wording.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: the release's black words (check_all_MLLM_output_content.py), matched case-insensitively
RELEASE_PHRASES = (
    "prior information",
    "prior description",
    "prior knowledge",
    "prior assumption",
    "prior statement",
    "prior prompt",
    "priority information",
    "based on the information",
    "based on the prior",
)
#: what a model echoes of our own seed wording (prompts/paper_answers.user.j2)
OUR_PROMPT_PHRASES = (
    "known about the image",
    "it is known that",
    "as is known",
    "given description",
    "given information",
    "provided description",
    "provided information",
)
DEFAULT_PHRASES = (*RELEASE_PHRASES, *OUR_PROMPT_PHRASES)

#: a sentence ends at ., ! or ? followed by space (the release splits on every ".", which also
#: cuts "e.g." and "1.5"; a sentence is the unit it means to drop)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

LeakMode = Literal["rest", "sentence", "release", "off"]


@dataclass(frozen=True)
class Filtered:
    """A text after the filter, and the sentences it dropped (kept for traces, never lost)."""

    text: str
    dropped: tuple[str, ...]


def sentences(text: str) -> list[str]:
    """``text`` split into sentences (whitespace between them dropped)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def leaks(sentence: str, phrases: Sequence[str] = DEFAULT_PHRASES) -> bool:
    """Whether ``sentence`` mentions the seed (one of ``phrases``, any case)."""
    lowered = sentence.lower()
    return any(phrase in lowered for phrase in phrases)


def filter_seed_leaks(
    text: str, mode: LeakMode = "rest", phrases: Sequence[str] = DEFAULT_PHRASES
) -> Filtered:
    """Drop the sentences of ``text`` that mention the seed: from the first such sentence to
    the end (``rest``, the release's behaviour), only those sentences (``sentence``), or none
    (``off``); ``release`` is :func:`release_filter` (its pieces, its black words)."""
    if mode == "off":
        return Filtered(text.strip(), ())
    if mode == "release":
        return release_filter(text)
    kept: list[str] = []
    dropped: list[str] = []
    cut = False
    for sentence in sentences(text):
        cut = cut or (mode == "rest" and leaks(sentence, phrases))
        if cut or leaks(sentence, phrases):
            dropped.append(sentence)
        else:
            kept.append(sentence)
    return Filtered(" ".join(kept), tuple(dropped))


def release_filter(text: str, phrases: Sequence[str] = RELEASE_PHRASES) -> Filtered:
    """``check_all_MLLM_output_content.py`` as it runs: ``text`` split on every ``.`` (also
    inside "e.g." or "1.5"), nothing kept from the first piece holding a black word on, the
    kept pieces joined again with ``.`` (so a cut text ends without its last full stop, as in
    the release). Matched case-insensitively against the release's own black words."""
    pieces = text.strip().split(".")
    cut = next((n for n, piece in enumerate(pieces) if leaks(piece, phrases)), len(pieces))
    dropped = tuple(p.strip() for p in pieces[cut:] if p.strip())
    return Filtered(".".join(pieces[:cut]).strip(), dropped)
