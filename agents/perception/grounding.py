"""The grounding check: a text written without sight may say only what the evidence supports.

A text-only describer knows the image from the detector evidence and the annotation. Given
ImageNet guesses it repeated them as fact: a colour photo of a dahlia (classifier: "daisy 0.19,
hen-of-the-woods 0.09, mushroom 0.04, sea anemone 0.03, chambered nautilus 0.03") became "A
black and white image with a daisy, a hen-of-the-woods, a mushroom, a sea anemone, and a
chambered nautilus". Each detector's vocabulary is known, so such claims are decidable:

``low_confidence_label``
    The text names an ImageNet label the classifier gave under its threshold
    (:data:`agents.perception.evidence.OBJECT_NAMED`), unless the annotation, the image's own
    text (OCR) or the policy's wording also uses the word (a lottery ticket's annotation says
    "ticket"; "rule" is the pipeline's word, not a guess).
``colour``
    The text calls a measured colour image black and white (or greyscale, monochrome), or gives
    a measured greyscale image a colour.
``no_person``
    The text puts a person in a flat graphic (a drawing, a text card) where no face and no body
    part was detected at all. In a photograph people are missed (backs, small figures), so there
    it is not decidable and not checked.
``no_text``
    The text quotes or reports writing where OCR ran and read nothing at all.

Negated mentions ("no people", "not a daisy") are not claims. :func:`find_ungrounded` is the
critic's interface; :func:`ungrounded_claims` gives the typed findings (the run audit lists
them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from agents.perception.contradictions import Contradiction, _negated, _sentence
from agents.perception.evidence import OBJECT_NAMED, Evidence

#: words of the pipeline itself that are also ImageNet labels
PIPELINE_WORDS = frozenset({"rule"})

_GREY_CLAIM = re.compile(
    r"\b(black[- ]and[- ]white|grayscale|greyscale|monochrome|monochromatic|"
    r"black[- ]and[- ]white (image|photo|photograph|picture))\b"
)
_HUES = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "violet", "turquoise")
_HUE_CLAIM = re.compile(r"\b(" + "|".join(_HUES) + r")(dish)?\b")
_PERSON_NOUNS = (
    "woman", "women", "man", "men", "person", "persons", "people", "girl", "girls", "boy",
    "boys", "lady", "ladies", "child", "children", "kid", "kids", "individual", "individuals",
    "model", "models", "guy", "guys", "human", "humans", "couple", "crowd", "player",
    "players", "family", "friends",
)  # fmt: skip
_PERSON_CLAIM = re.compile(r"\b(" + "|".join(_PERSON_NOUNS) + r")\b")
#: a person noun right after these words names an audience ("a card for players", "appeals to
#: families"), not someone shown in the image
_AUDIENCE_BEFORE = re.compile(r"\b(for|to|among|toward|towards|targeting|targets)\s+(\w+\s+)?$")
#: a person noun that qualifies a thing ("a child-friendly warning", "family-oriented") names
#: who the thing suits, not someone shown (the demo's warning sign was rejected for it)
_AUDIENCE_AFTER = re.compile(r"-(friendly|safe|proof|oriented|appropriate|suitable)\b")
_TEXT_CLAIM = re.compile(
    r"\b((text|words?|writing|caption|slogan|lettering|inscription|sign)\s+"
    r"(reads?|reading|says?|saying|states?|stating)|"
    r"(the|a|some)\s+(text|caption|slogan|lettering|inscription|writing)\b)"
)


def _word_pattern(name: str) -> re.Pattern[str]:
    """A label name as whole words, any case, with a plural ``s``/``es`` allowed."""
    parts = [re.escape(p) for p in re.split(r"[\s_]+", name.lower()) if p]
    return re.compile(r"\b" + r"[\s-]+".join(parts) + r"(s|es)?\b")


def _allowed(name: str, allowed: str) -> bool:
    """Whether the words of ``name`` are used by the texts the model was right to rely on."""
    if name.lower() in PIPELINE_WORDS:
        return True
    return bool(allowed) and bool(_word_pattern(name).search(allowed.lower()))


def _claims(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    lowered = text.lower()
    return (m for m in pattern.finditer(lowered) if not _negated(lowered, m.start()))


def ungrounded_claims(
    text: str, evidence: Evidence | Mapping[str, Any], allowed: str = ""
) -> list[Contradiction]:
    """Every claim of ``text`` the evidence does not ground (see the module docstring).

    ``allowed``: the other texts the writer was given and may repeat (annotation, policy
    wording); the image's OCR text is added here."""
    seen = Evidence.load(evidence)
    allowed = " ".join([allowed, *(line.text for line in seen.ocr or [])])
    found: list[Contradiction] = []
    named: list[str] = []
    first: int | None = None
    for label in seen.unnamed_labels():
        if _allowed(label.name, allowed):
            continue
        match = next(_claims(_word_pattern(label.name), text), None)
        if match is not None:
            named.append(f"'{label.name}' ({label.score:.2f})")
            first = match.start() if first is None else min(first, match.start())
    if first is not None:
        found.append(
            Contradiction(
                check="low_confidence_label",
                claim=_sentence(text, first),
                evidence=f"it names {', '.join(named)}, the object classifier's guesses under "
                f"{OBJECT_NAMED} (not evidence): do not name them",
            )
        )
    found += _colour_claims(text, seen, allowed)
    found += _person_claims(text, seen, allowed)
    found += _text_claims(text, seen)
    return found


def find_ungrounded(
    text: str, evidence: Evidence | Mapping[str, Any], allowed: str = ""
) -> list[str]:
    """The critic's interface: one message per ungrounded claim."""
    return [c.message for c in ungrounded_claims(text, evidence, allowed)]


def _colour_claims(text: str, evidence: Evidence, allowed: str) -> list[Contradiction]:
    look = evidence.appearance
    if look is None:
        return []
    if not look.greyscale:
        match = next(_claims(_GREY_CLAIM, text), None)
        if match is None:
            return []
        colours = ", ".join(c.name for c in look.colours)
        return [
            Contradiction(
                check="colour",
                claim=_sentence(text, match.start()),
                evidence=f"the image is measured to be in colour ({colours})",
            )
        ]
    for match in _claims(_HUE_CLAIM, text):
        if _allowed(match.group(1), allowed):
            continue
        return [
            Contradiction(
                check="colour",
                claim=_sentence(text, match.start()),
                evidence="the image is measured to be greyscale: it has no "
                f"'{match.group(1)}' in it",
            )
        ]
    return []


def _person_claims(text: str, evidence: Evidence, allowed: str) -> list[Contradiction]:
    if not evidence.nobody_shown():  # a flat graphic where no people detector saw anything
        return []
    lowered = text.lower()
    for match in _claims(_PERSON_CLAIM, text):
        if _allowed(match.group(1), allowed):
            continue
        if _AUDIENCE_BEFORE.search(lowered, max(0, match.start() - 40), match.start()):
            continue
        if _AUDIENCE_AFTER.match(lowered, match.end()):
            continue
        return [
            Contradiction(
                check="no_person",
                claim=_sentence(text, match.start()),
                evidence="the image is a flat graphic in which neither the face nor the body "
                "detector found anything: write about what it shows (its text, shapes, "
                "colours), not about a person",
            )
        ]
    return []


def _text_claims(text: str, evidence: Evidence) -> list[Contradiction]:
    if evidence.ocr is None or evidence.ocr:
        return []
    match = next(_claims(_TEXT_CLAIM, text), None)
    if match is None:
        return []
    return [
        Contradiction(
            check="no_text",
            claim=_sentence(text, match.start()),
            evidence="OCR read no text at all in the image",
        )
    ]
