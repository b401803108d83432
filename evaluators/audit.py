"""Audit an existing ICM-Instruct dataset with the critic's deterministic checks.

The released ICM-Instruct data was written by models and never checked; training on a record
whose Q-A contradict its own label teaches the contradiction. ``icm audit`` reads a JSONL file in
the released format (one record a line: ``image``, ``category``, ``label``, ``explanation``,
``qa`` = [{type, question, answer}], ``mc`` = [{question, choices, answer}]) and reports each
defect with the record (its image name), the question, the answer and why.

Kinds of finding, each from a check in :mod:`evaluators.consistency`:

- ``yes_no_contradicts_label``: a yes/no answer about the policy's term disagrees with the label
  (``check_yes_no_agreement``). Asymmetric on purpose: under a flagged label only questions that
  name the term itself count ("Is the image sexy? No."), since "sexual activity? No." does not
  deny "sexy"; under an unflagged label any word from the term's stem counts ("a sexual
  connotation? Yes." does contradict "not sexy").
- ``explanation_contradicts_label``: the explanation's last statement about the term affirms or
  denies it against the label (``check_explanation_stance``; negation-aware, unlike
  ``last_label_in``, which reads "not considered sexy" as ending on "sexy").
- ``label_contradicts_rule_table``: the label differs from the policy's base rule for the
  record's category (``check_verdict_matches_rule``).
- ``multiple_choice_invalid``: not four options, an empty or repeated option, or an answer that
  is not one of the option letters (``check_multiple_choice``).
- ``conflicting_repeated_answers``: the same question (with the same options) asked again in
  a record and answered the other way: another option letter, or yes after no.
- ``repeated_question``: the same question asked again in a record, answered alike (or in other
  free words, which may not disagree): a duplicated training pair.
- ``people_not_in_explanation``: a Q-A names a kind of person (woman, man, child, couple,
  several people) that the explanation never shows, pronouns included (``people_missing``, the
  reading ``check_people_in_explanation`` uses). Conservative: a bare "person" names no kind, a
  yes/no question answered "no" asserts nothing, "male or female?" asserts only the answer, and
  of a multiple-choice item only the question and the correct option are read. One finding per
  record and kind of person, however many Q-A repeat it.
- ``qa_type_mismatch``: a "Yes/No" item answered with something else ("Color."), or a What/How
  item answered yes or no. MQA scores yes/no items by the answer's first character, so both
  corrupt the metric.
- ``refusal``: refusal text in the explanation or an answer (``check_no_refusal``).
- ``looping_text``: the explanation repeats itself: a run of words back to back, a sentence
  written twice (``check_no_looping`` of :mod:`evaluators.text_checks`).
- ``states_two_labels``: the explanation states two verdict labels ("sexy, not sexy"; "the
  image is sexy ... the image is not sexy") (``check_states_one_label``).
- ``json_in_text``: JSON syntax or schema keywords in the explanation (``check_no_json``).
- ``malformed_qa``: a question, option or open answer that is empty, only punctuation, JSON
  residue, a question without "?", or an answer that breaks off (``check_qa_well_formed``).
- ``unknown_label``: the label is none of the policy's verdicts (the label checks are skipped).

A line that is not a valid record is reported as ``file:line: why`` and counted; the audit goes
on with the rest.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from data.policy import Policy
from evaluators.consistency import (
    check_explanation_stance,
    check_multiple_choice,
    check_no_refusal,
    check_verdict_matches_rule,
    check_yes_no_agreement,
    people_missing,
    yes_no_answer,
)
from evaluators.text_checks import (
    check_no_json,
    check_no_looping,
    check_qa_well_formed,
    check_states_one_label,
    released_qa,
)

KINDS: tuple[str, ...] = (
    "yes_no_contradicts_label",
    "explanation_contradicts_label",
    "label_contradicts_rule_table",
    "multiple_choice_invalid",
    "conflicting_repeated_answers",
    "repeated_question",
    "people_not_in_explanation",
    "qa_type_mismatch",
    "refusal",
    "looping_text",
    "states_two_labels",
    "json_in_text",
    "malformed_qa",
    "unknown_label",
)
"""Every kind of finding, in report order."""


class QAItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    question: str
    answer: str


class MCItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str
    choices: list[str]
    answer: str


class InstructRecord(BaseModel):
    """One ICM-Instruct record as released; fields we do not read are ignored."""

    model_config = ConfigDict(extra="ignore")

    image: str
    category: str | None = None
    label: str
    explanation: str
    qa: list[QAItem] = Field(default_factory=list)
    mc: list[MCItem] = Field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    """One defect: ``record`` is the image name, ``line`` its line in the file."""

    kind: str
    record: str
    line: int
    question: str
    answer: str
    why: str


Found = Callable[[str, str, str, str], Finding]
"""Makes a finding of the record being audited from (kind, question, answer, why)."""


@dataclass(frozen=True)
class BadLine:
    line: int
    message: str


@dataclass
class AuditReport:
    file: str
    policy: str
    records: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Findings per kind, every kind listed (zero included, so a clean kind is visible)."""
        counted = Counter(f.kind for f in self.findings)
        return {kind: counted.get(kind, 0) for kind in KINDS}

    def records_affected(self) -> dict[str, int]:
        """Distinct records per kind."""
        seen: dict[str, set[str]] = defaultdict(set)
        for f in self.findings:
            seen[f.kind].add(f"{f.line}:{f.record}")
        return {kind: len(seen.get(kind, ())) for kind in KINDS}

    def examples(self, n: int) -> dict[str, list[Finding]]:
        """The first ``n`` findings of each kind that has any, in file order."""
        out: dict[str, list[Finding]] = {}
        if n <= 0:
            return out
        for f in self.findings:
            bucket = out.setdefault(f.kind, [])
            if len(bucket) < n:
                bucket.append(f)
        return {kind: out[kind] for kind in KINDS if kind in out}

    def to_dict(self, examples: int = 3) -> dict[str, Any]:
        return {
            "file": self.file,
            "policy": self.policy,
            "records": self.records,
            "records_with_findings": len({(f.line, f.record) for f in self.findings}),
            "bad_lines": len(self.bad_lines),
            "bad_line_errors": [f"{self.file}:{b.line}: {b.message}" for b in self.bad_lines],
            "counts": self.counts(),
            "records_affected": self.records_affected(),
            "examples": {
                kind: [asdict(f) for f in found] for kind, found in self.examples(examples).items()
            },
        }


def read_records(path: Path) -> Iterator[tuple[int, InstructRecord | BadLine]]:
    """Each non-blank line as a record, or as a :class:`BadLine` saying what is wrong with it."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            yield number, _parse(number, text)


def _parse(number: int, text: str) -> InstructRecord | BadLine:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadLine(number, f"not JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(raw, dict):
        return BadLine(number, f"a JSON {type(raw).__name__}, not a record object")
    if "conversations" in raw and "qa" not in raw:
        return BadLine(
            number,
            "a LLaVA conversation record; the audit reads ICM-Instruct records "
            "(image, label, explanation, qa, mc)",
        )
    try:
        return InstructRecord.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(record)'}: {e['msg']}" for e in exc.errors()
        )
        return BadLine(number, problems)


def audit_file(path: Path, policy: Policy) -> AuditReport:
    """Run every check over every record of ``path``."""
    report = AuditReport(file=str(path), policy=policy.name)
    for number, item in read_records(path):
        if isinstance(item, BadLine):
            report.bad_lines.append(item)
            continue
        report.records += 1
        report.findings.extend(audit_record(item, number, policy))
    return report


def audit_record(record: InstructRecord, line: int, policy: Policy) -> list[Finding]:
    """The findings of one record, in :data:`KINDS` order."""

    def found(kind: str, question: str, answer: str, why: str) -> Finding:
        return Finding(kind, record.image, line, question, answer, why)

    findings = _label_findings(record, policy, found)
    findings += _multiple_choice_findings(record, found)
    findings += _repeat_findings(record, found)
    findings += _people_findings(record, found)
    findings += _type_findings(record, found)
    findings += _refusal_findings(record, found)
    findings += _garbage_findings(record, policy, found)
    order = {kind: n for n, kind in enumerate(KINDS)}
    return sorted(findings, key=lambda f: order[f.kind])


def _label_findings(record: InstructRecord, policy: Policy, found: Found) -> list[Finding]:
    if record.label not in policy.verdicts:
        known = ", ".join(repr(v) for v in policy.verdicts)
        why = f"label {record.label!r} is not a verdict of {policy.name} ({known})"
        return [found("unknown_label", "", record.label, why)]
    flagged = policy.is_flagged(record.label)
    out = []
    for q in record.qa:
        if yes_no_answer(q.answer) is None:
            continue  # not answered yes/no: reported as qa_type_mismatch instead
        if flagged and not _names_term(q.question, policy.term):
            continue
        for check in check_yes_no_agreement([(q.question, q.answer)], policy.term, flagged):
            if not check.passed:
                why = f"label is '{record.label}': {check.message}"
                out.append(found("yes_no_contradicts_label", q.question, q.answer, why))
    stance = check_explanation_stance(record.explanation, policy.term, flagged)
    if not stance.passed:
        why = f"label is '{record.label}', but {stance.message}"
        out.append(found("explanation_contradicts_label", "", record.explanation, why))
    base = policy.base_rule
    if base and record.category in policy.categories:
        expected = policy.verdict(record.category, base)
        check = check_verdict_matches_rule(base, record.label, expected)
        if not check.passed:
            why = f"category {record.category}: {check.message}"
            out.append(found("label_contradicts_rule_table", "", record.label, why))
    return out


def _names_term(question: str, term: str) -> bool:
    """Whether the question uses the term itself ("sexy"), not only a word from its stem."""
    return re.search(r"\b" + re.escape(term) + r"\b", question, re.IGNORECASE) is not None


def _multiple_choice_findings(record: InstructRecord, found: Found) -> list[Finding]:
    out = []
    for mc in record.mc:
        check = check_multiple_choice(mc.question, mc.choices, mc.answer)
        if not check.passed:
            answer = f"{mc.answer}  (options: {' | '.join(mc.choices)})"
            out.append(found("multiple_choice_invalid", mc.question, answer, check.message))
    return out


def _repeat_findings(record: InstructRecord, found: Found) -> list[Finding]:
    """Repeated questions: the same key asked again, answered the same or differently."""
    asked: list[tuple[str, str, str]] = [
        (q.question.strip().lower(), q.question, q.answer) for q in record.qa
    ]
    asked += [
        (mc.question.strip().lower() + " || " + " | ".join(mc.choices).lower(), mc.question,
         mc.answer)
        for mc in record.mc
    ]  # fmt: skip
    first: dict[str, str] = {}
    out = []
    for key, question, answer in asked:
        if key not in first:
            first[key] = answer
            continue
        before = first[key]
        if _scored_alike(key, before, answer) and _first_char(before) != _first_char(answer):
            why = f"asked again and answered '{answer}' after '{before}'"
            out.append(found("conflicting_repeated_answers", question, answer, why))
        else:
            why = "the same question is asked again in this record"
            out.append(found("repeated_question", question, answer, why))
    return out


def _scored_alike(key: str, *answers: str) -> bool:
    """Answers MQA compares by first character: option letters and yes/no. Two free-text
    answers to a repeated What/How question may differ in words and agree in meaning."""
    return " || " in key or all(yes_no_answer(a) is not None for a in answers)


def _first_char(answer: str) -> str:
    return answer.strip()[:1].upper()


def _people_findings(record: InstructRecord, found: Found) -> list[Finding]:
    items = [(q.question, q.answer) for q in record.qa]
    items += [(mc.question, _chosen(mc)) for mc in record.mc]
    first: dict[str, tuple[str, str]] = {}
    times: Counter[str] = Counter()
    for question, answer in items:
        missing = people_missing(question, answer, record.explanation)
        if not missing:
            continue
        key = " and ".join(missing)
        times[key] += 1
        first.setdefault(key, (question, answer))
    out = []
    for key, (question, answer) in first.items():
        why = f"names {key}, which the explanation never mentions"
        if times[key] > 1:
            why += f" ({times[key]} Q-A in this record do)"
        out.append(found("people_not_in_explanation", question, answer, why))
    return out


def _chosen(mc: MCItem) -> str:
    """The text of the option the answer picks ("C." -> "C. Sensual"), or the answer itself."""
    letter = _first_char(mc.answer)
    for choice in mc.choices:
        if _first_char(choice) == letter:
            return choice
    return mc.answer


def _type_findings(record: InstructRecord, found: Found) -> list[Finding]:
    out = []
    for q in record.qa:
        answered = yes_no_answer(q.answer)
        if q.type.lower().replace(" ", "") in ("yes/no", "yesno", "yes_no"):
            if answered is None:
                why = "a Yes/No item whose answer is neither yes nor no"
                out.append(found("qa_type_mismatch", q.question, q.answer, why))
        elif answered is not None:
            why = f"a {q.type} item answered {'yes' if answered else 'no'}"
            out.append(found("qa_type_mismatch", q.question, q.answer, why))
    return out


def _refusal_findings(record: InstructRecord, found: Found) -> list[Finding]:
    texts = [("", record.explanation)] + [(q.question, q.answer) for q in record.qa]
    out = []
    for question, text in texts:
        check = check_no_refusal("explainer" if not question else "qa_writer", text)
        if not check.passed:
            out.append(found("refusal", question, text, check.message))
    return out


def _garbage_findings(record: InstructRecord, policy: Policy, found: Found) -> list[Finding]:
    """The garbage checks of :mod:`evaluators.text_checks` that read released records."""
    text, where = record.explanation, "the explanation"
    checks = [
        ("looping_text", check_no_looping("explainer", text, where)),
        ("states_two_labels", check_states_one_label("explainer", text, list(policy.verdicts),
                                                      where)),
        ("json_in_text", check_no_json("explainer", text, where)),
    ]  # fmt: skip
    out = [found(kind, "", text, check.message) for kind, check in checks if not check.passed]
    qa = released_qa(
        [(q.type, q.question, q.answer) for q in record.qa],
        [(m.question, m.choices, m.answer) for m in record.mc],
    )
    check = check_qa_well_formed(qa)
    if not check.passed:
        out.append(found("malformed_qa", "", "", check.message))
    return out
