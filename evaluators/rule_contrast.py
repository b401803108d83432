"""Rule contrast: when one image gets different verdicts under two rule variants (bare legs are
sexy under R1, not sexy under R2), each explanation must argue its own verdict and name what
differs between the variants' audiences, as the policy writes them (age group, culture), so a
rule-conditioned model can learn why the verdict flips rather than two unrelated texts.

The check is deterministic and reads only the texts and the policy:

1. *argues its verdict*: the explanation's last statement about the policy's term affirms it
   for a flagged verdict and denies it otherwise (:func:`evaluators.consistency.term_stance`);
   a text that never names the term does not argue a verdict.
2. *names the difference*: for every audience field on which the two rules differ, the text
   mentions its own rule's value (unless the value is ``any``): a word of that value that the
   other value lacks (``open``, ``conservative``, ``prohibited``), or, for an age group, a
   word for that age (``under 13``: child, children, kid, young...; ``13 and over``: teen,
   teenager, adolescent, older...; ``18 and over``: adult, grown-up...).

A sample is checked when at least two of its explanations carry different verdicts; it passes
when every explanation passes against every rule whose verdict differs from its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from data.policy import parse_policy
from data.policy_models import Audience, Policy, PolicyError
from data.store import Store, dataset_reads
from evaluators.consistency import term_stance
from evaluators.lemmas import content_lemmas, lemma

_AGE_NUMBER = re.compile(r"\d+")
UNRESTRICTED = frozenset({"any", "all", "every", "everyone", "any culture"})
"""Audience values that restrict nothing: a rule with ``culture: any`` is not asked to name it."""
_YOUNG = ("child", "children", "kid", "kids", "young", "younger", "minor", "minors", "underage")
_TEEN = ("teen", "teens", "teenager", "teenagers", "adolescent", "adolescents", "older", "youth")
_ADULT = ("adult", "adults", "grown-up", "grown-ups", "grownup", "older", "mature")
_CULTURE_WORDS = {
    "open": ("open", "liberal", "permissive", "diverse", "tolerant"),
    "conservative": ("conservative", "traditional", "strict", "modest"),
}


@dataclass(frozen=True)
class Explanation:
    rule: str
    verdict: str
    text: str


@dataclass
class ContrastResult:
    """One sample's outcome: checked (its verdicts differ across rules), passed, and why not."""

    sample_id: str
    checked: bool
    passed: bool
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "checked": self.checked,
            "passed": self.passed,
            "problems": self.problems,
        }


def age_words(age_group: str) -> list[str]:
    """Words that name this age group in prose: its own words and numbers, plus the common
    words for children, teenagers or adults its bound implies."""
    own = [age_group.lower()]
    numbers = [int(n) for n in _AGE_NUMBER.findall(age_group)]
    bound = numbers[0] if numbers else None
    text = age_group.lower()
    if bound is not None and re.search(r"\b(under|below|younger than|less than)\b", text):
        return [*own, f"under {bound}", f"below {bound}", *_YOUNG]
    if bound is not None and re.search(r"\b(over|older|and up|\+|or more|above)\b|\+", text):
        extra = _ADULT if bound >= 18 else _TEEN
        return [*own, f"{bound}+", f"over {bound}", f"{bound} and over", f"{bound} or older",
                *extra]  # fmt: skip
    return own


def _value_words(mine: str, other: str) -> list[str]:
    """Content words of ``mine`` that ``other`` lacks (a culture's distinguishing words), with
    common synonyms of the two cultures the paper names."""
    other_lemmas = set(content_lemmas(other))
    own = [w for w in content_lemmas(mine) if w not in other_lemmas]
    extra = [s for w in own for s in _CULTURE_WORDS.get(w, ())]
    return list(dict.fromkeys([*own, *extra]))


def differing_fields(a: Audience, b: Audience) -> list[str]:
    return [name for name in ("age_group", "culture") if getattr(a, name) != getattr(b, name)]


def mentions(text: str, phrases: Sequence[str]) -> str | None:
    """The first phrase the text mentions (word lemmas in order, or the phrase verbatim)."""
    lemmas = [lemma(w) for w in re.findall(r"[a-z0-9+'-]+", text.lower())]
    low = text.lower()
    for phrase in phrases:
        parts = [lemma(w) for w in re.findall(r"[a-z0-9+'-]+", phrase.lower())]
        if not parts:
            continue
        if any(lemmas[i : i + len(parts)] == parts for i in range(len(lemmas) - len(parts) + 1)):
            return phrase
        if not phrase.isalpha() and phrase.lower() in low:
            return phrase
    return None


def check_pair(policy: Policy, mine: Explanation, other: Explanation) -> list[str]:
    """Problems of ``mine`` against a rule whose verdict differs (empty: it passes)."""
    problems = []
    flagged = policy.is_flagged(mine.verdict) if mine.verdict in policy.verdicts else None
    stance = term_stance(mine.text, policy.term)
    if flagged is None:
        problems.append(f"{mine.rule}: verdict {mine.verdict!r} is not a label of the policy")
    elif stance is None:
        problems.append(f"{mine.rule}: does not argue a verdict (never says '{policy.term}')")
    elif stance[0] != flagged:
        problems.append(
            f"{mine.rule}: argues the other verdict, not {mine.verdict!r}: '{stance[1]}'"
        )
    a, b = policy.rules[mine.rule].audience, policy.rules[other.rule].audience
    for name in differing_fields(a, b):
        value, contrast = getattr(a, name), getattr(b, name)
        if value.strip().lower() in UNRESTRICTED:
            continue  # "any culture": nothing of its own to name, the other rule has the cue
        words = age_words(value) if name == "age_group" else [*_value_words(value, contrast), value]
        if mentions(mine.text, words) is None:
            what = "audience age" if name == "age_group" else "culture"
            problems.append(
                f"{mine.rule}: does not name its {what} ({value!r}, where {other.rule} has "
                f"{contrast!r})"
            )
    return problems


def check_sample(
    policy: Policy, sample_id: str, explanations: Sequence[Explanation]
) -> ContrastResult:
    """The rule-contrast check of one sample (see the module docstring)."""
    usable = [e for e in explanations if e.rule in policy.rules and e.verdict]
    if len({e.verdict for e in usable}) < 2:
        return ContrastResult(sample_id, checked=False, passed=True)
    problems: list[str] = []
    for mine in usable:
        for other in usable:
            if other.verdict == mine.verdict:
                continue
            for problem in check_pair(policy, mine, other):
                if problem not in problems:
                    problems.append(problem)
    return ContrastResult(sample_id, checked=True, passed=not problems, problems=problems)


@dataclass
class ContrastSummary:
    """Pass rate over the checked samples of a run (None when none was checked)."""

    checked: int
    passed: int
    failures: list[ContrastResult]

    @property
    def rate(self) -> float | None:
        return self.passed / self.checked if self.checked else None

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "passed": self.passed, "rate": self.rate}


def summarise(policies: Mapping[str, Policy], rows: Sequence[Mapping[str, Any]]) -> ContrastSummary:
    """Check every sample in ``rows`` (sample_id, policy_name, rule_variant, verdict,
    explanation); samples of a policy not in ``policies`` are skipped."""
    by_sample: dict[str, list[Explanation]] = {}
    policy_of: dict[str, str] = {}
    for row in rows:
        sid = row["sample_id"]
        policy_of[sid] = row["policy_name"]
        by_sample.setdefault(sid, []).append(
            Explanation(row["rule_variant"], row["verdict"] or "", row["explanation"] or "")
        )
    checked = passed = 0
    failures = []
    for sid, explanations in by_sample.items():
        policy = policies.get(policy_of[sid])
        if policy is None:
            continue
        result = check_sample(policy, sid, explanations)
        if result.checked:
            checked += 1
            passed += result.passed
            if not result.passed:
                failures.append(result)
    return ContrastSummary(checked, passed, failures)


def run_contrast(store: Store, run_id: str) -> ContrastSummary:
    """The rule-contrast summary of one generation run's accepted samples, each judged by the
    policy text stored with the run (an edited policy file does not change an old run's rate)."""
    rows = dataset_reads.accepted_explanations(store, [run_id])
    names = sorted({r["policy_name"] for r in rows})
    policies = {}
    for name, text in dataset_reads.policy_texts(store, names).items():
        try:
            policies[name] = parse_policy(text, name=name)
        except PolicyError:
            continue  # a stored policy that no longer parses: its samples are not checked
    return summarise(policies, rows)
