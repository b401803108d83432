"""The critic: deterministic checks first, then an LLM critique, then a routing decision.

The deterministic checks (``evaluators.consistency``) catch what can be proven: a verdict that
differs from the rule table, yes/no answers that contradict the verdict, malformed
multiple-choice items, annotated attributes never mentioned, refusal text, detector evidence
contradicted. Only a sample that passes them is shown to the LLM critic, which looks for
hallucination and contradiction between stages. Either way :func:`decide` names the earliest
stage to redo (in the registry's chain order) and the feedback to give it, as typed
:class:`~agents.stages.Target` values: a per-rule stage's failing rule variants come from the
checks themselves (:class:`RuleCheck`), never from their message text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.injection_check import check_argument_not_instructed, image_texts
from agents.models.result import CallResult
from agents.perception.grounding_audit import qa_claim_text, supported_text
from agents.role_call import LayerLike, ask_role
from agents.schemas import CritiqueValue, critique_model
from agents.stages import CRITIC, StageRegistry, Target, default_registry
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
    wanted,
)
from evaluators.record_checks import record_checks
from evaluators.text_checks import stated_labels

_STOP = {"with", "from", "that", "this", "only", "usually", "down", "little", "some", "their"}

#: (explanation text, evidence) -> contradiction messages; supplied by the perception toolkit
ContradictionFinder = Callable[[str, dict[str, Any]], list[str]]
#: (text, evidence, allowed words) -> ungrounded-claim messages
#: (``agents.perception.grounding.find_ungrounded``); run only for a describer without sight
GroundingFinder = Callable[[str, dict[str, Any], str], list[str]]


@dataclass(frozen=True)
class RuleCheck(Check):
    """A check about one rule variant's output: its target names the rule as a value."""

    rule: str | None = None


def target_of(check: Check) -> Target:
    """The stage (and rule variant, when the check knows it) a failed check sends back."""
    return Target(check.stage, check.rule if isinstance(check, RuleCheck) else None)


def about_rule(rule: str, check: Check) -> RuleCheck:
    """``check`` tagged with the rule variant whose output it judged."""
    return RuleCheck(check.name, check.stage, check.passed, check.message, rule)


@dataclass
class CriticDecision:
    """What the critic decided: pass, or which stage to redo with what feedback.

    (Not to be confused with a moderation verdict: this is the critic's accept/redo call.)
    """

    checks: list[Check]
    passed: bool
    stage: str | None = None
    feedback: str = ""
    rules: list[str] = field(default_factory=list)
    """For a per-rule stage: the rule variants whose outputs failed (empty: not known, so
    every rule variant is redone)."""


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


def check_argument_verdict(rule: str, argument: str, expected: str, labels: Sequence[str]) -> Check:
    """``verdict_matches_rule`` for a rule-table verdict: the verdict is the table's by
    construction, so what is checked is the verdict the argument argues for. The argument needs
    no verdict sentence (code writes the conclusion); every label it states of the image must be
    the table's. "Stated" is :func:`evaluators.text_checks.stated_labels`: a denial ("does not
    meet the criteria for being considered sexy") states the other label, and a hedge ("could
    be considered gambling-related") or an adjective ("a sexy pose") states none, so a correct
    argument that merely names the other label is not rejected."""
    wrong = [label for label in stated_labels(argument, labels) if label != expected]
    if not wrong:
        return Check("verdict_matches_rule", "explainer", True)
    return check_verdict_matches_rule(rule, wrong[-1], expected)


def explanation_checks(policy: Policy, rule: str, item: dict[str, Any]) -> list[Check]:
    """The checks of one rule variant's explanation item.

    A rule-table verdict (``verdict_source = "rule_table"``) is right by construction: what can
    still be wrong is an argument that argues for another label. A model verdict (a proposed
    category, or an item without a source) must equal the table's and be stated by the text.
    """
    verdict = item["verdict"]
    argument = item.get("argument") or item["explanation"]
    refusal = check_no_refusal("explainer", argument)
    if item.get("verdict_source") == "rule_table":
        return [
            check_argument_verdict(rule, argument, item["expected"], list(policy.verdicts)),
            refusal,
        ]
    others = [label for label in policy.verdicts if label != verdict]
    return [
        check_verdict_matches_rule(rule, verdict, item["expected"]),
        check_explanation_states_verdict(rule, argument, verdict, others),
        refusal,
    ]


def deterministic_checks(
    policy: Policy,
    state: dict[str, Any],
    *,
    contradiction_finder: ContradictionFinder | None = None,
    grounding_finder: GroundingFinder | None = None,
    want: Callable[[str], bool] | None = None,
) -> list[Check]:
    """Every provable check over the sample's current outputs.

    ``grounding_finder`` (given only when the describer did not see the image) holds the
    description and each explanation to what the evidence supports; the words the writer was
    given besides the evidence (annotation, rule wording) count as supported.

    ``want`` (a stage name -> whether its checks are wanted; None: every stage's) leaves out
    the work of checks about other stages: the checks it keeps are the same as those of the
    whole list (:func:`graphs.pipeline.stage_check` asks for one stage's)."""
    checks: list[Check] = []
    description = state.get("description") or ""
    category = state.get("category")
    given = state["sample"].given_description is not None
    if not given and wanted(want, "describer"):
        checks.append(check_no_refusal("describer", description))
        checks.append(check_length("describer", description, 8, 200))
        if category:
            checks.append(
                check_attributes_mentioned(description, attribute_words(policy, category))
            )
    if not given and state.get("context") and wanted(want, "context_interpreter"):
        checks.append(check_no_refusal("context_interpreter", state["context"]))
    explanations = state.get("explanations", {})
    if not wanted(want, "explainer"):
        explanations = {}
    texts = image_texts(state.get("evidence"), description) if explanations else ()
    for rule, item in explanations.items():
        per_rule = explanation_checks(policy, rule, item)
        argument = item.get("argument") or item["explanation"]
        per_rule.append(check_argument_not_instructed(argument, texts))
        if contradiction_finder and state.get("evidence"):
            for message in contradiction_finder(item["explanation"], state["evidence"]):
                per_rule.append(Check("evidence_consistent", "explainer", False, message))
        checks.extend(about_rule(rule, c) for c in per_rule)
    describer = not given and wanted(want, "describer")
    if contradiction_finder and state.get("evidence") and description and describer:
        for message in contradiction_finder(description, state["evidence"]):
            checks.append(Check("evidence_consistent", "describer", False, message))
    if grounding_finder and state.get("evidence"):
        checks.extend(_grounding_checks(policy, state, grounding_finder, want))
    for check, rule in record_checks(policy, state, want):
        checks.append(about_rule(rule, check) if rule else check)
    qa = state.get("qa")
    if qa and wanted(want, "qa_writer"):
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


def supported_words(policy: Policy, state: dict[str, Any]) -> str:
    """The texts a writer without sight was given besides the evidence: the note of a person
    who saw the image, the annotation (the category and its attributes) and the policy's wording
    of verdicts and rules (the same words the run-level grounding audit allows:
    ``grounding_audit.supported_text``)."""
    sample = state.get("sample")
    note = getattr(sample, "note", None)
    return supported_text(policy, state.get("category"), state.get("explanations") or {}, note)


def _grounding_checks(
    policy: Policy,
    state: dict[str, Any],
    finder: GroundingFinder,
    want: Callable[[str], bool] | None = None,
) -> list[Check]:
    """``grounded_in_evidence`` over the description and each rule's explanation (of the
    stages ``want`` keeps)."""

    allowed = supported_words(policy, state)
    evidence = state["evidence"]
    checks: list[Check] = []
    description = state.get("description") or ""
    if description and state["sample"].given_description is None and wanted(want, "describer"):
        found = finder(description, evidence, allowed)
        checks.append(Check("grounded_in_evidence", "describer", not found, "; ".join(found)))
    explanations = (state.get("explanations") or {}) if wanted(want, "explainer") else {}
    for rule, item in explanations.items():
        found = finder(item.get("argument") or item["explanation"], evidence, allowed)
        if found:
            message = f"under {rule} the explanation: " + "; ".join(found)
            checks.append(RuleCheck("grounded_in_evidence", "explainer", False, message, rule))
    # the Q-A items as the audit reads them (question, picked option, answer): the demo
    # accepted "What is the image about?" -> "a child ... being sexually excited" of a
    # text-only meme
    qa = (state.get("qa") or {}) if wanted(want, "qa_writer") else {}
    for kind in ("yes_no", "multiple_choice", "what", "how"):
        for item in qa.get(kind) or []:
            text = qa_claim_text(item["question"], item.get("options") or [], item["answer"])
            found = finder(text, evidence, allowed)
            if found:
                message = f"the Q-A item '{item['question']}': " + "; ".join(found)
                checks.append(Check("grounded_in_evidence", "qa_writer", False, message))
    return checks


def decide(checks: Sequence[Check], registry: StageRegistry | None = None) -> CriticDecision:
    """Pick the earliest failing stage; later stages are regenerated after it anyway.

    A failed check naming a stage the registry does not know raises ``ValueError`` naming it.
    """
    registry = registry or default_registry()
    failed = [c for c in checks if not c.passed]
    if not failed:
        return CriticDecision(list(checks), True)
    # a check names the stage of our pipeline that does the job; another registry (the
    # paper's) maps it onto its own stage (``StageRegistry.aliases``)
    stage = registry.canonical(min(failed, key=lambda c: registry.position(c.stage)).stage)
    at_stage = [c for c in failed if registry.canonical(c.stage) == stage]
    messages = [c.message for c in at_stage]
    rules = sorted({t.rule for t in map(target_of, at_stage) if t.rule is not None})
    return CriticDecision(list(checks), False, stage, "; ".join(messages), rules)


def qa_lines(qa: dict[str, Any]) -> list[str]:
    lines = [f"[yes/no] {i['question']} -> {i['answer']}" for i in qa["yes_no"]]
    for item in qa["multiple_choice"]:
        options = " ".join(f"{'ABCD'[n]}. {o}" for n, o in enumerate(item["options"]))
        lines.append(f"[choice] {item['question']} {options} -> {item['answer']}")
    lines += [f"[what] {i['question']} -> {i['answer']}" for i in qa["what"]]
    lines += [f"[how] {i['question']} -> {i['answer']}" for i in qa["how"]]
    return lines


def critique_schema(registry: StageRegistry | None = None) -> type[CritiqueValue]:
    """The LLM critic's output model: its problems may name any registered stage."""
    return critique_model((registry or default_registry()).names)


async def llm_critique(
    layer: LayerLike,
    state: dict[str, Any],
    *,
    sample_id: str,
    attempt: int,
    registry: StageRegistry | None = None,
) -> CallResult[CritiqueValue]:
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
        role=CRITIC,
        schema=critique_schema(registry),
        variables=variables,
        sample_id=sample_id,
        stage=CRITIC,
        attempt=attempt,
    )


def critique_to_checks(
    critique: CritiqueValue, registry: StageRegistry | None = None
) -> list[Check]:
    """The LLM critic's problems as failed checks (source ``llm``), or one passed check.

    "Inconsistent" without a named problem sends the sample back to the first stage."""
    if critique.consistent and not critique.problems:
        return [Check("llm_critique", CRITIC, True)]
    if not critique.problems:
        first = (registry or default_registry()).names[0]
        return [Check("llm_critique", first, False, "the critic found the stages inconsistent")]
    return [Check("llm_critique", p.stage, False, p.issue) for p in critique.problems]
