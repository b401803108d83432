"""Audit a run's accepted records for texts the detector evidence does not ground.

Over every accepted sample of a run: the description, each rule variant's explanation and each
Q-A item, read by the grounding check (:mod:`agents.perception.grounding`: classifier labels
named below their threshold, a colour image called black and white, a person in a text card,
writing where OCR read none) and by the contradiction check
(:mod:`agents.perception.contradictions`). The evidence is the run's stored perception
sections, completed with the appearance facts measured again from the image file when the run
predates them (they need no model).

``benchmarks/audit_grounding.py`` is the command-line front; the fixtures of issue 22 keep
what it finds in the demo's outputs at 4230e09.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.perception.contradictions import check_claims
from agents.perception.evidence import Evidence
from agents.perception.grounding import ungrounded_claims
from data.policy_models import Policy

if TYPE_CHECKING:
    from data.store import Store


@dataclass
class AuditRecord:
    """One accepted sample's texts and the evidence they should rest on."""

    sample_id: str
    image: str
    policy: str
    category: str | None
    description: str
    note: str | None = None
    explanations: dict[str, str] = field(default_factory=dict)
    qa: list[str] = field(default_factory=list)
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class Finding:
    sample_id: str
    image: str
    where: str
    check: str
    message: str


def supported_text(
    policy: Policy, category: str | None, rules: Iterable[str], note: str | None = None
) -> str:
    """What a writer without sight was given besides the evidence (the note of a person who saw
    the image, the annotation, rule words)."""
    parts = [note or "", policy.title, policy.term, " ".join(policy.verdicts)]
    if category and category in policy.categories:
        parts.append(policy.categories[category].description)
        for attribute, value in policy.categories[category].attributes.items():
            parts += [value.replace("_", " "), policy.attributes[attribute].values[value]]
    for rule in rules:
        if rule in policy.rules:
            spec = policy.rules[rule]
            parts += [spec.description, spec.audience.age_group, spec.audience.culture]
            if category and category in policy.categories:
                parts.append(policy.reason(category, rule))
    return " ".join(str(p) for p in parts)


def qa_claim_text(question: str, options: Iterable[object], answer: str) -> str:
    """What a Q-A item claims about the image: its question, its answer and, for a
    multiple-choice item, the option its answer letter picks. The other options are wrong by
    design: "A picture of a woman with pink hair" as a distractor for a text-only meme claims
    nothing about the image (the demo's meme was rejected for such distractors alone)."""
    listed = [str(o) for o in options]
    letter = answer.strip()[:1].upper()
    picked = (
        [listed["ABCD".index(letter)]]
        if listed and letter and letter in "ABCD"[: len(listed)]
        else []
    )
    return " ".join([question, *picked, answer])


def audit(records: Iterable[AuditRecord], policies: Mapping[str, Policy]) -> list[Finding]:
    """Every ungrounded or contradicted claim in the records' texts."""
    findings: list[Finding] = []
    for record in records:
        if record.evidence is None:
            continue
        evidence = Evidence.load(record.evidence)
        policy = policies[record.policy]
        allowed = supported_text(policy, record.category, record.explanations, record.note)
        texts = [("description", record.description)]
        texts += [(f"explanation {rule}", text) for rule, text in record.explanations.items()]
        texts += [(f"Q-A {n + 1}", text) for n, text in enumerate(record.qa)]
        for where, text in texts:
            if not text:
                continue
            claims = ungrounded_claims(text, evidence, allowed) + check_claims(text, evidence)
            findings += [
                Finding(record.sample_id, record.image, where, c.check, c.message) for c in claims
            ]
    return findings


def _evidence(store: Store, sha256: str | None, image_path: str | None) -> dict[str, Any] | None:
    from agents.perception.toolkit import TOOL_CLASSES  # loads every detector's module
    from data.store import queries  # duckdb and pandas load only once a store is given

    if not sha256:
        return None
    fields = {cls.name: cls for cls in TOOL_CLASSES}
    sections: dict[str, Any] = {}
    for row in sorted(queries.perception_rows(store, sha256), key=lambda r: r["created_at"]):
        cls = fields.get(row["tool"])
        if cls is not None:  # the latest version of each tool wins
            sections[cls.field] = json.loads(row["evidence_json"])
    if not sections:
        return None
    size = None
    if image_path and Path(image_path).is_file():
        from PIL import Image

        from agents.perception.appearance import measure  # only for runs that predate it

        with Image.open(image_path) as image:
            size = image.size
            if "appearance" not in sections:
                sections["appearance"] = measure(image.convert("RGB")).model_dump()
    width, height = size or (1, 1)
    return {"image_sha256": sha256, "width": width, "height": height, **sections}


def records_from_store(store: Store, run_id: str) -> list[AuditRecord]:
    """The accepted samples of ``run_id`` as :class:`AuditRecord` values."""
    from data.store import queries  # duckdb and pandas load only once a store is given

    samples, explanations, qa_rows = queries.export_rows(store, run_id, include_all=False)
    by_id: dict[str, AuditRecord] = {}
    for row in samples:
        by_id[row["sample_id"]] = AuditRecord(
            sample_id=row["sample_id"],
            image=Path(row["image_path"] or "").name,
            policy=row["policy_name"],
            category=row["category"],
            description=row["description"] or "",
            note=row.get("note"),
            evidence=_evidence(store, row["image_sha256"], row["image_path"]),
        )
    for row in explanations:
        if row["sample_id"] in by_id:
            by_id[row["sample_id"]].explanations[row["rule_variant"]] = row["explanation"] or ""
    for row in qa_rows:
        if row["sample_id"] in by_id:
            options = json.loads(row["options_json"]) if row["options_json"] else []
            text = qa_claim_text(row["question"], options, row["answer"])
            by_id[row["sample_id"]].qa.append(text)
    return list(by_id.values())
