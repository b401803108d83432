"""The critic: deterministic checks first, then an LLM critique, then a routing decision.

The deterministic checks (``evaluators.consistency``) catch what can be proven: a verdict that
differs from the rule table, yes/no answers that contradict the verdict, malformed
multiple-choice items, annotated attributes never mentioned, refusal text, detector evidence
contradicted. Only a sample that passes them is shown to the LLM critic, which looks for
hallucination and contradiction between stages. Either way the result names the earliest stage
to redo and the feedback to give it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.role_call import LayerLike, ask_role
from agents.schemas import Critique
from data.policy_models import Policy
from evaluators.consistency import (
    Check,
    check_attributes_mentioned,
    check_explanation_states_verdict,
    check_length,
    check_multiple_choice,
    check_no_refusal,
    check_verdict_matches_rule,
    check_yes_no_agreement,
)

STAGE_ORDER = ("describer", "context_interpreter", "explainer", "qa_writer")
_STOP = {"with", "from", "that", "this", "only", "usually", "down", "little", "some", "their"}

#: (explanation text, evidence) -> contradiction messages; supplied by the perception toolkit
ContradictionFinder = Callable[[str, dict[str, Any]], list[str]]


@dataclass
class Verdict:
    """What the critic decided: pass, or which stage to redo with what feedback."""

    checks: list[Check]
    passed: bool
    stage: str | None = None
    feedback: str = ""
    rules: list[str] = field(default_factory=list)
    """For the explainer: the rule variants whose explanations failed."""


def attribute_words(policy: Policy, category: str) -> dict[str, Sequence[str]]:
    """Words that count as mentioning each annotated attribute value."""
    words: dict[str, Sequence[str]] = {}
    for attribute, value in policy.categories[category].attributes.items():
        description = policy.attributes[attribute].values[value]
        found = [w for w in value.split("_") if len(w) >= 3 and w != "and"]
        found += [
            w
            for w in re.findall(r"[a-z]{4,}", description.lower())
            if w not in _STOP and w not in found
        ]
        words[f"{attribute}={value}"] = found
    return words


def deterministic_checks(
    policy: Policy,
    state: dict[str, Any],
    *,
    contradiction_finder: ContradictionFinder | None = None,
) -> list[Check]:
    """Every provable check over the sample's current outputs."""
    checks: list[Check] = []
    description = state.get("description") or ""
    category = state.get("category")
    given = state["sample"].given_description is not None
    if not given:
        checks.append(check_no_refusal("describer", description))
        checks.append(check_length("describer", description, 8, 200))
        if category:
            checks.append(
                check_attributes_mentioned(description, attribute_words(policy, category))
            )
        if state.get("context"):
            checks.append(check_no_refusal("context_interpreter", state["context"]))
    for rule, item in state.get("explanations", {}).items():
        others = [label for label in policy.verdicts if label != item["verdict"]]
        checks.append(check_verdict_matches_rule(rule, item["verdict"], item["expected"]))
        checks.append(
            check_explanation_states_verdict(rule, item["explanation"], item["verdict"], others)
        )
        checks.append(check_no_refusal("explainer", item["explanation"]))
        if contradiction_finder and state.get("evidence"):
            for message in contradiction_finder(item["explanation"], state["evidence"]):
                checks.append(Check("evidence_consistent", "explainer", False, message))
    if contradiction_finder and state.get("evidence") and description and not given:
        for message in contradiction_finder(description, state["evidence"]):
            checks.append(Check("evidence_consistent", "describer", False, message))
    qa = state.get("qa")
    if qa:
        rule = state["qa_rule"]
        flagged = policy.is_flagged(state["explanations"][rule]["verdict"])
        pairs = [(item["question"], item["answer"]) for item in qa["yes_no"]]
        checks.extend(check_yes_no_agreement(pairs, policy.term, flagged, rule))
        for item in qa["multiple_choice"]:
            checks.append(check_multiple_choice(item["question"], item["options"], item["answer"]))
        all_text = " ".join(
            f"{i['question']} {i['answer']}" for kind in ("yes_no", "what", "how") for i in qa[kind]
        )
        checks.append(check_no_refusal("qa_writer", all_text))
    return checks


def decide(checks: Sequence[Check]) -> Verdict:
    """Pick the earliest failing stage; later stages are regenerated after it anyway."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        return Verdict(list(checks), True)
    stage = min(failed, key=lambda c: STAGE_ORDER.index(c.stage)).stage
    messages = [c.message for c in failed if c.stage == stage]
    rules = sorted({m.split("under ")[1].split()[0] for m in messages if "under R" in m})
    return Verdict(list(checks), False, stage, "; ".join(messages), rules)


def qa_lines(qa: dict[str, Any]) -> list[str]:
    lines = [f"[yes/no] {i['question']} -> {i['answer']}" for i in qa["yes_no"]]
    for item in qa["multiple_choice"]:
        options = " ".join(f"{'ABCD'[n]}. {o}" for n, o in enumerate(item["options"]))
        lines.append(f"[choice] {item['question']} {options} -> {item['answer']}")
    lines += [f"[what] {i['question']} -> {i['answer']}" for i in qa["what"]]
    lines += [f"[how] {i['question']} -> {i['answer']}" for i in qa["how"]]
    return lines


async def llm_critique(
    layer: LayerLike, state: dict[str, Any], *, sample_id: str, attempt: int
) -> Any:
    """Ask the critic model for hallucinations and contradictions between stages."""
    variables = {
        "evidence": state.get("evidence_text"),
        "description": state.get("description") or "",
        "context": state.get("context") or "(none)",
        "explanations": {r: e["explanation"] for r, e in state.get("explanations", {}).items()},
        "qa_lines": qa_lines(state["qa"]) if state.get("qa") else [],
    }
    return await ask_role(
        layer,
        role="critic",
        schema=Critique,
        variables=variables,
        sample_id=sample_id,
        stage="critic",
        attempt=attempt,
    )


def critique_to_checks(critique: Critique) -> list[Check]:
    """The LLM critic's problems as failed checks (source ``llm``), or one passed check."""
    if critique.consistent and not critique.problems:
        return [Check("llm_critique", "critic", True)]
    if not critique.problems:
        return [
            Check("llm_critique", "describer", False, "the critic found the stages inconsistent")
        ]
    return [Check("llm_critique", p.stage, False, p.issue) for p in critique.problems]
