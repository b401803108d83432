"""Evidence -> policy attribute values, with confidence and the observations behind them.

The mapping is data (``attribute_cues.yaml``, one cue list per policy name) and this module is
its interpreter, so a researcher tunes "BELLY_EXPOSED supports exposure=shoulders_and_belly at
0.8" without touching code. The table is checked against each policy (an attribute or value the
policy lacks is an error naming the cue), and every supported value carries ``because``: the
detector findings that fired, which is what the critic and the describer quote.

Missing tools make the mapping silent, never negative: a condition on a tool that did not run
does not hold, so "no exposure detector" is not read as "nothing exposed".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from agents.perception.evidence import Evidence
from agents.perception.objects import ANIMAL_GROUP, CLASS_GROUPS
from agents.perception.text_cues import find_phrases
from data.policy_models import Policy

CUES_FILE = Path(__file__).with_name("attribute_cues.yaml")

DEFAULT_EXPOSURE_MIN = 0.35
EXPOSURE_ABSENT_MAX = 0.25
"""``exposure_absent`` holds when no listed part scored at or above this."""
DEFAULT_OBJECTS_MIN = 0.2
OBJECTS_ABSENT_MAX = 0.1

NUDENET_LABELS = frozenset(
    {
        "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
        "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
        "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
        "BUTTOCKS_COVERED",
    }
)  # fmt: skip
"""The 18 classes of NudeNet 3.4's 320n model."""

_CONDITIONS = {
    "exposure", "exposure_absent", "objects", "objects_absent", "text", "text_absent",
    "nsfw_at_least", "nsfw_below", "people", "face", "face_area_at_least", "min_score",
}  # fmt: skip


class CueTableError(ValueError):
    """The cue table is malformed or names something a policy or detector does not have."""


class AttributeEvidence(BaseModel):
    """Support for one attribute value from the detectors."""

    model_config = ConfigDict(frozen=True)

    attribute: str
    value: str
    confidence: float
    """0..1, noisy-OR of the cues that fired."""
    because: list[str]
    """The findings behind it, e.g. ``exposure detector: belly exposed 0.81``."""


@dataclass(frozen=True)
class Cue:
    """One row of the table: if every condition holds, support the ``sets`` values."""

    policy: str
    position: int
    sets: Mapping[str, str]
    when: Mapping[str, Any]
    confidence: float

    def where(self) -> str:
        return f"{CUES_FILE.name}: policies.{self.policy}[{self.position}]"


@dataclass(frozen=True)
class CueTable:
    keywords: Mapping[str, tuple[str, ...]]
    groups: Mapping[str, tuple[str, ...]]
    policies: Mapping[str, tuple[Cue, ...]]


# ---------------------------------------------------------------------- loading and checking
@cache
def cue_table(path: Path = CUES_FILE) -> CueTable:
    """Parse and check the table's own consistency (keyword sets, groups, labels, syntax)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    keywords = {k: tuple(str(p) for p in v) for k, v in (raw.get("keywords") or {}).items()}
    groups = {k: tuple(v) for k, v in (raw.get("groups") or {}).items()}
    for name, labels in groups.items():
        unknown = sorted(set(labels) - NUDENET_LABELS)
        if unknown:
            raise CueTableError(f"{path.name}: groups.{name}: unknown NudeNet labels {unknown}")
    policies: dict[str, tuple[Cue, ...]] = {}
    for policy, rows in (raw.get("policies") or {}).items():
        cues = []
        for position, row in enumerate(rows or []):
            cue = Cue(
                policy=policy,
                position=position,
                sets=dict(row.get("set") or {}),
                when=dict(row.get("when") or {}),
                confidence=float(row.get("confidence", 0)),
            )
            _check_syntax(cue, keywords, groups)
            cues.append(cue)
        policies[policy] = tuple(cues)
    return CueTable(keywords=keywords, groups=groups, policies=policies)


def _check_syntax(
    cue: Cue, keywords: Mapping[str, tuple[str, ...]], groups: Mapping[str, tuple[str, ...]]
) -> None:
    problems = []
    if not cue.sets:
        problems.append("`set` is empty")
    if not 0 < cue.confidence <= 1:
        problems.append(f"confidence {cue.confidence} is not in (0, 1]")
    if not cue.when:
        problems.append("`when` is empty: a cue must rest on an observation")
    for key, value in cue.when.items():
        if key not in _CONDITIONS:
            problems.append(f"unknown condition {key!r} (known: {sorted(_CONDITIONS)})")
        elif key in ("exposure", "exposure_absent"):
            unknown = [v for v in value if v not in NUDENET_LABELS and v not in groups]
            if unknown:
                problems.append(f"{key}: unknown NudeNet labels or groups {unknown}")
        elif key in ("objects", "objects_absent"):
            known = set(CLASS_GROUPS) | {ANIMAL_GROUP}
            unknown = [v for v in value if v not in known]
            if unknown:
                problems.append(f"{key}: unknown class groups {unknown}")
        elif key in ("text", "text_absent"):
            unknown = [v for v in value if v not in keywords]
            if unknown:
                problems.append(f"{key}: unknown keyword sets {unknown}")
        elif key in ("people", "face") and value not in ("present", "absent"):
            problems.append(f"{key} must be 'present' or 'absent', not {value!r}")
    if problems:
        raise CueTableError(f"{cue.where()}: " + "; ".join(problems))


def check_cues(policy: Policy) -> list[str]:
    """Where the table disagrees with ``policy`` (attribute or value it lacks); empty is good."""
    problems = []
    for cue in cue_table().policies.get(policy.name, ()):
        for attribute, value in cue.sets.items():
            if attribute not in policy.attributes:
                problems.append(f"{cue.where()}: {policy.name} has no attribute {attribute!r}")
            elif value not in policy.attributes[attribute].values:
                problems.append(
                    f"{cue.where()}: {policy.name} attribute {attribute!r} has no value {value!r}"
                )
    return problems


# ---------------------------------------------------------------------- mapping
def map_attributes(evidence: Evidence, policy: Policy) -> list[AttributeEvidence]:
    """Every attribute value of ``policy`` the evidence supports, strongest first per attribute.

    Raises:
        CueTableError: the table names an attribute or value ``policy`` does not have.
    """
    problems = check_cues(policy)
    if problems:
        raise CueTableError("\n".join(problems))
    table = cue_table()
    support: dict[tuple[str, str], tuple[float, list[str]]] = {}
    for cue in table.policies.get(policy.name, ()):
        fired = _fire(cue, evidence, table)
        if fired is None:
            continue
        strength, reasons = fired
        confidence = cue.confidence * strength
        for attribute, value in cue.sets.items():
            previous, because = support.get((attribute, value), (0.0, []))
            combined = 1.0 - (1.0 - previous) * (1.0 - confidence)
            support[(attribute, value)] = (
                combined,
                because + [r for r in reasons if r not in because],
            )
    found = [
        AttributeEvidence(attribute=a, value=v, confidence=round(c, 4), because=because)
        for (a, v), (c, because) in support.items()
    ]
    order = list(policy.attributes)
    return sorted(found, key=lambda e: (order.index(e.attribute), -e.confidence, e.value))


def by_attribute(found: Sequence[AttributeEvidence]) -> dict[str, dict[str, AttributeEvidence]]:
    """``{attribute: {value: evidence}}`` for lookups."""
    table: dict[str, dict[str, AttributeEvidence]] = {}
    for item in found:
        table.setdefault(item.attribute, {})[item.value] = item
    return table


def attributes_text(found: Sequence[AttributeEvidence], min_confidence: float = 0.3) -> str:
    """The supported values as prompt lines, so a text-only describer sees which policy values
    the detectors back and why (empty when nothing reaches ``min_confidence``)."""
    lines = [
        f"- {item.attribute}={item.value} ({item.confidence:.2f}): {'; '.join(item.because)}"
        for item in found
        if item.confidence >= min_confidence
    ]
    if not lines:
        return ""
    return "Policy attributes the detectors support:\n" + "\n".join(lines)


def _fire(cue: Cue, evidence: Evidence, table: CueTable) -> tuple[float, list[str]] | None:
    """(strength, reasons) when every condition holds, else None."""
    strength = 1.0
    reasons: list[str] = []
    min_score = cue.when.get("min_score")
    for key, value in cue.when.items():
        if key == "min_score":
            continue
        result = _CHECKS[key](evidence, value, table, min_score)
        if result is None:
            return None
        score, reason = result
        strength *= score
        reasons.append(reason)
    return strength, reasons


Result = tuple[float, str] | None


def _labels(names: Sequence[str], table: CueTable) -> set[str]:
    labels: set[str] = set()
    for name in names:
        labels.update(table.groups.get(name, (name,)))
    return labels


def _exposure(evidence: Evidence, names: Sequence[str], table: CueTable, min_score: Any) -> Result:
    if evidence.exposure is None:
        return None
    wanted = _labels(names, table)
    threshold = DEFAULT_EXPOSURE_MIN if min_score is None else float(min_score)
    hits = [d for d in evidence.exposure if d.label in wanted and d.score >= threshold]
    if not hits:
        return None
    best = max(hits, key=lambda d: d.score)
    state = "exposed" if best.exposed else ("covered" if "COVERED" in best.label else "seen")
    return best.score, f"exposure detector: {best.part} {state} {best.score:.2f}"


def _exposure_absent(
    evidence: Evidence, names: Sequence[str], table: CueTable, _min: Any
) -> Result:
    if evidence.exposure is None:
        return None
    wanted = _labels(names, table)
    if any(d.label in wanted and d.score >= EXPOSURE_ABSENT_MAX for d in evidence.exposure):
        return None
    return 1.0, f"exposure detector: none of {', '.join(names)}"


def _objects(evidence: Evidence, groups: Sequence[str], _table: CueTable, min_score: Any) -> Result:
    if evidence.objects is None:
        return None
    threshold = DEFAULT_OBJECTS_MIN if min_score is None else float(min_score)
    total = min(1.0, sum(evidence.objects.groups.get(g, 0.0) for g in groups))
    if total < threshold:
        return None
    named = [c for c in evidence.objects.flagged if c.group in groups]
    detail = ", ".join(f"{c.name} {c.score:.2f}" for c in named[:3]) or "/".join(groups)
    return total, f"image classifier: {'/'.join(groups)} {total:.2f} ({detail})"


def _objects_absent(
    evidence: Evidence, groups: Sequence[str], _table: CueTable, _min: Any
) -> Result:
    if evidence.objects is None:
        return None
    if any(evidence.objects.groups.get(g, 0.0) >= OBJECTS_ABSENT_MAX for g in groups):
        return None
    return 1.0, f"image classifier: no {'/'.join(groups)}"


def _text(evidence: Evidence, sets: Sequence[str], table: CueTable, _min: Any) -> Result:
    if evidence.ocr is None:
        return None
    phrases = [p for s in sets for p in table.keywords[s]]
    best: tuple[float, str] | None = None
    for line in evidence.text_lines():
        found = find_phrases(line.text, phrases)
        if found and (best is None or line.score > best[0]):
            best = (line.score, f'OCR: "{line.text}" ({", ".join(found)})')
    return best


def _text_absent(evidence: Evidence, sets: Sequence[str], table: CueTable, _min: Any) -> Result:
    if evidence.ocr is None:
        return None
    phrases = [p for s in sets for p in table.keywords[s]]
    if any(find_phrases(line.text, phrases) for line in evidence.text_lines()):
        return None
    return 1.0, f"OCR: no {'/'.join(sets)} words"


def _nsfw_at_least(evidence: Evidence, bound: Any, _table: CueTable, _min: Any) -> Result:
    if evidence.nsfw_score is None or evidence.nsfw_score < float(bound):
        return None
    return evidence.nsfw_score, f"NSFW score {evidence.nsfw_score:.2f}"


def _nsfw_below(evidence: Evidence, bound: Any, _table: CueTable, _min: Any) -> Result:
    if evidence.nsfw_score is None or evidence.nsfw_score >= float(bound):
        return None
    return 1.0, f"NSFW score {evidence.nsfw_score:.2f}"


def _people(evidence: Evidence, state: Any, _table: CueTable, _min: Any) -> Result:
    present = evidence.people.present
    if present is None or present != (state == "present"):
        return None
    return 1.0, "; ".join(evidence.people.sources) if present else "no person detected"


def _face(evidence: Evidence, state: Any, _table: CueTable, _min: Any) -> Result:
    if evidence.people.present is None:
        return None
    seen = evidence.people.count > 0
    if seen != (state == "present"):
        return None
    return 1.0, f"{evidence.people.count} face(s) found" if seen else "no face found"


def _face_area(evidence: Evidence, bound: Any, _table: CueTable, _min: Any) -> Result:
    if not evidence.faces or not evidence.faces.faces:
        return None
    largest = max(f.area_fraction for f in evidence.faces.faces)
    if largest < float(bound):
        return None
    return 1.0, f"face detector: largest face covers {largest:.0%} of the image"


_CHECKS = {
    "exposure": _exposure,
    "exposure_absent": _exposure_absent,
    "objects": _objects,
    "objects_absent": _objects_absent,
    "text": _text,
    "text_absent": _text_absent,
    "nsfw_at_least": _nsfw_at_least,
    "nsfw_below": _nsfw_below,
    "people": _people,
    "face": _face,
    "face_area_at_least": _face_area,
}
