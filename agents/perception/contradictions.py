"""Flag claims in model-written text that the detectors clearly contradict.

The critic runs this over descriptions and explanations (DESIGN.md, principle 4). Detectors miss
things, so absence of a detection is weak evidence; a check fires only where the evidence is
strong and specific:

``text_absent``
    The text says there is no text/writing, but OCR read a line with confidence >= 0.9 and at
    least three letters or digits.
``no_person``
    The text says there are no people, but a face was found with confidence: the exposure
    detector saw a face at >= 0.7, or the face detector and the exposure detector both found
    faces (the face detector alone has false positives in textures).
``exposed_part``
    The text says a body part is exposed ("bare belly", "exposed breasts"), but the exposure
    detector saw that part *covered* (>= 0.5) and not exposed (nothing >= 0.25); or, for
    breasts, genitals and buttocks, it saw the person and no intimate exposure at all while the
    NSFW score is below 0.1.
``nudity``
    The text says the person is naked, nude or topless, but the exposure detector saw a person
    and no intimate exposure, and the NSFW score is below 0.1.
``covered``
    The text says the person is fully clothed or there is no nudity, but the exposure detector
    saw intimate exposure at >= 0.6 or the NSFW score is >= 0.9.

Negated mentions ("no exposed skin", "not naked") are read as such: a claim preceded within a
few words by a negation is not a claim of presence. Nothing here judges style or verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.perception.evidence import Detection, Evidence

TEXT_MIN_SCORE = 0.9
FACE_SURE = 0.7
FACE_AGREE = 0.3
COVERED_SURE = 0.5
EXPOSED_ANY = 0.25
NSFW_LOW = 0.1
EXPOSED_SURE = 0.6
NSFW_HIGH = 0.9

INTIMATE = (
    "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED", "ANUS_EXPOSED",
)  # fmt: skip

# word in the text -> (NudeNet part stem, is it an intimate part)
_PARTS = {
    "breast": ("FEMALE_BREAST", True),
    "breasts": ("FEMALE_BREAST", True),
    "nipple": ("FEMALE_BREAST", True),
    "nipples": ("FEMALE_BREAST", True),
    "genitals": ("GENITALIA", True),
    "genitalia": ("GENITALIA", True),
    "buttocks": ("BUTTOCKS", True),
    "buttock": ("BUTTOCKS", True),
    "belly": ("BELLY", False),
    "midriff": ("BELLY", False),
    "stomach": ("BELLY", False),
    "navel": ("BELLY", False),
    "armpits": ("ARMPITS", False),
    "feet": ("FEET", False),
}

_NEGATION = re.compile(
    r"\b(no|not|without|never|nor|neither|none|isn't|aren't|doesn't|don't|free of|instead of)\b"
)
_TEXT_ABSENT = re.compile(
    r"\b(no|without( any)?|(does|do) not (contain|include|show|have|display)( any)?)\s+"
    r"(visible\s+|legible\s+|readable\s+|written\s+)?"
    r"(text|words?|writing|captions?|letters|lettering|slogans?|inscriptions?)\b"
)
_NO_PERSON = re.compile(
    r"\b(nobody|no one|no-one|"
    r"(no|without( any)?|(does|do) not (contain|include|show|depict|feature)( any)?)\s+"
    r"(visible\s+)?(people|persons?|humans?|human figures?|faces?|individuals?))\b"
)
_EXPOSED_PART = re.compile(
    r"\b(exposed|bare|naked|nude|uncovered|visible|showing|reveals?|revealing)\s+"
    r"(female\s+|male\s+|her\s+|his\s+|the\s+)?(" + "|".join(_PARTS) + r")\b"
)
_PART_EXPOSED = re.compile(r"\b(" + "|".join(_PARTS) + r")\s+(is|are)\s+(exposed|bare|uncovered)\b")
_NUDITY = re.compile(r"\b(topless|naked|nude|nudity|unclothed|undressed)\b")
_COVERED = re.compile(
    r"\b(fully (clothed|covered|dressed)|no (nudity|exposed skin|bare skin)|"
    r"(is|are) not (nude|naked)|modestly dressed)\b"
)


class Contradiction(BaseModel):
    """A claim in the text and the detector evidence that contradicts it."""

    model_config = ConfigDict(frozen=True)

    check: str
    claim: str
    """The sentence that makes the claim."""
    evidence: str
    """What the detectors saw instead."""

    @property
    def message(self) -> str:
        return f"[{self.check}] the text says {self.claim!r}, but {self.evidence}"


def check_claims(text: str, evidence: Evidence | Mapping[str, Any]) -> list[Contradiction]:
    """Every clear contradiction between ``text`` and ``evidence`` (empty when consistent)."""
    seen = Evidence.load(evidence)
    lowered = text.lower()
    found: list[Contradiction] = []
    for check in (_check_text, _check_person, _check_parts, _check_nudity, _check_covered):
        found.extend(check(text, lowered, seen))
    return found


def find_contradictions(text: str, evidence: Evidence | Mapping[str, Any]) -> list[str]:
    """The critic's interface: one message per contradiction."""
    return [c.message for c in check_claims(text, evidence)]


# ---------------------------------------------------------------------- checks
def _check_text(text: str, lowered: str, evidence: Evidence) -> list[Contradiction]:
    if evidence.ocr is None:
        return []
    read = [line for line in evidence.text_lines() if line.score >= TEXT_MIN_SCORE]
    if not read:
        return []
    quoted = "; ".join(f'"{line.text}" ({line.score:.2f})' for line in read[:3])
    return [
        Contradiction(
            check="text_absent",
            claim=_sentence(text, match.start()),
            evidence=f"OCR read {quoted}",
        )
        for match in _TEXT_ABSENT.finditer(lowered)
    ][:1]


def _check_person(text: str, lowered: str, evidence: Evidence) -> list[Contradiction]:
    proof = _person_proof(evidence)
    if proof is None:
        return []
    for match in _NO_PERSON.finditer(lowered):
        return [
            Contradiction(check="no_person", claim=_sentence(text, match.start()), evidence=proof)
        ]
    return []


def _person_proof(evidence: Evidence) -> str | None:
    exposure_faces = [d for d in evidence.exposure or [] if d.label.startswith("FACE_")]
    best = max(exposure_faces, key=lambda d: d.score, default=None)
    if best is not None and best.score >= FACE_SURE:
        return f"the exposure detector saw a {best.part} ({best.score:.2f})"
    cascade = evidence.faces.count if evidence.faces else 0
    if cascade and best is not None and best.score >= FACE_AGREE:
        return (
            f"the face detector found {cascade} face(s) and the exposure detector a "
            f"{best.part} ({best.score:.2f})"
        )
    return None


def _check_parts(text: str, lowered: str, evidence: Evidence) -> list[Contradiction]:
    if evidence.exposure is None:
        return []
    found = []
    claims = [(m, m.group(3)) for m in _EXPOSED_PART.finditer(lowered)]
    claims += [(m, m.group(1)) for m in _PART_EXPOSED.finditer(lowered)]
    reported: set[str] = set()
    for match, word in claims:
        if _negated(lowered, match.start()):
            continue
        stem, intimate = _PARTS[word]
        if stem in reported:
            continue
        exposed = _best(evidence.exposure, lambda label, s=stem: s in label and "EXPOSED" in label)
        if exposed is not None and exposed.score >= EXPOSED_ANY:
            continue
        covered = _best(evidence.exposure, lambda label, s=stem: s in label and "COVERED" in label)
        reason = None
        if covered is not None and covered.score >= COVERED_SURE:
            reason = f"the exposure detector saw the {covered.part} covered ({covered.score:.2f})"
        elif intimate:
            reason = _no_nudity_reason(evidence)
        if reason:
            reported.add(stem)
            found.append(
                Contradiction(
                    check="exposed_part", claim=_sentence(text, match.start()), evidence=reason
                )
            )
    return found


def _check_nudity(text: str, lowered: str, evidence: Evidence) -> list[Contradiction]:
    reason = _no_nudity_reason(evidence)
    if reason is None:
        return []
    for match in _NUDITY.finditer(lowered):
        if _negated(lowered, match.start()):
            continue
        return [
            Contradiction(check="nudity", claim=_sentence(text, match.start()), evidence=reason)
        ]
    return []


def _check_covered(text: str, lowered: str, evidence: Evidence) -> list[Contradiction]:
    reasons = []
    intimate = _best(evidence.exposure or [], lambda label: label in INTIMATE)
    if intimate is not None and intimate.score >= EXPOSED_SURE:
        reasons.append(f"the exposure detector saw {intimate.part} exposed ({intimate.score:.2f})")
    if evidence.nsfw_score is not None and evidence.nsfw_score >= NSFW_HIGH:
        reasons.append(f"the NSFW score is {evidence.nsfw_score:.2f}")
    if not reasons:
        return []
    for match in _COVERED.finditer(lowered):
        return [
            Contradiction(
                check="covered",
                claim=_sentence(text, match.start()),
                evidence=" and ".join(reasons),
            )
        ]
    return []


# ---------------------------------------------------------------------- helpers
def _no_nudity_reason(evidence: Evidence) -> str | None:
    """Why the evidence rules out nudity, or None when it cannot."""
    if evidence.exposure is None or evidence.nsfw_score is None:
        return None
    if not evidence.people.present or evidence.nsfw_score >= NSFW_LOW:
        return None
    if _best(evidence.exposure, lambda label: label in INTIMATE, minimum=EXPOSED_ANY):
        return None
    return (
        "the exposure detector saw the person and no exposed breasts, genitals or buttocks, "
        f"and the NSFW score is {evidence.nsfw_score:.2f}"
    )


def _best(detections: list[Detection], wanted: Any, minimum: float = 0.0) -> Detection | None:
    hits = [d for d in detections if wanted(d.label) and d.score >= minimum]
    return max(hits, key=lambda d: d.score, default=None)


def _negated(lowered: str, start: int) -> bool:
    window = lowered[max(0, start - 30) : start]
    window = re.split(r"[.;!?]", window)[-1]  # negation does not cross a sentence
    return bool(_NEGATION.search(window))


def _sentence(text: str, position: int) -> str:
    start = max(
        text.rfind(".", 0, position), text.rfind("!", 0, position), text.rfind("?", 0, position)
    )
    ends = [
        i
        for i in (text.find(".", position), text.find("!", position), text.find("?", position))
        if i != -1
    ]
    end = min(ends) + 1 if ends else len(text)
    return text[start + 1 : end].strip()
