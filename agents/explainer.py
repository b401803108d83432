"""The explainer, for one rule variant: why the image is (not) <term> for that audience.

It runs once per selected rule variant, concurrently. The verdict comes from the rule table,
not from the model: the category annotation and the rule variant fix it, the explainer writes
the argument for it (its schema has no verdict field), and the record's conclusion sentence
("Conclusion: The picture is <verdict>.") is written here, by code. A sample whose category the
describer proposed (``category_source = "proposed"``) keeps a model verdict, constrained to the
policy's labels and checked against the table by the critic; its item says
``verdict_source = "model"``.
"""

from __future__ import annotations

from typing import Any, Literal

from agents.models.result import CallResult
from agents.role_call import LayerLike, ask_role
from agents.schemas import (
    FULL,
    ArgumentValue,
    ExplanationValue,
    Lengths,
    argument_model,
    explanation_model,
)
from agents.stages import Inputs, StageCall, StageSpec, Target
from data.policy_models import Policy
from evaluators.text_checks import trim_cut_text

VerdictSource = Literal["rule_table", "model"]


class MissingCategoryError(ValueError):
    """The explainer needs a category (annotated or proposed) to look the rule table up."""


def rule_question(policy: Policy, rule: str) -> str:
    """The instruction the explanation answers; also the first human turn of the export."""
    variant = policy.rules[rule]
    return (
        f"Under rule {rule} (audience: {variant.audience.age_group}, "
        f"{variant.audience.culture} culture), is the image {policy.term}? Explain why."
    )


def conclusion(verdict: str) -> str:
    """The record's last sentence, written by code from the verdict."""
    return f"Conclusion: The picture is {verdict}."


def verdict_source(category_source: str | None) -> VerdictSource:
    """Where a sample's verdicts come from: the rule table, unless the category itself was
    proposed by a model (then the explainer's verdict is the model's too)."""
    return "model" if category_source == "proposed" else "rule_table"


def explainer_schema(
    policy: Policy, lengths: Lengths, source: VerdictSource
) -> type[ArgumentValue]:
    """The argument alone when the table fixes the verdict; argument plus verdict otherwise."""
    if source == "rule_table":
        return argument_model(lengths)
    return explanation_model(tuple(policy.verdicts), lengths)


def category_meaning(policy: Policy, category: str) -> str:
    """``region=whole (the whole body, head to feet); exposure=normal (little skin is bare;
    ordinary covering clothes)``: each attribute with what its value means in an image.

    Given ``region=whole, exposure=normal`` alone, the demo's explainer read "whole" and
    "exposure" together and wrote of a man in a long coat "his body is fully exposed, which is
    not appropriate for children", on every retry."""
    parts = []
    for key, value in policy.categories[category].attributes.items():
        attribute = policy.attributes.get(key)
        meaning = attribute.values.get(value) if attribute else None
        parts.append(f"{key}={value} ({meaning})" if meaning else f"{key}={value}")
    return "; ".join(parts)


async def explain(
    layer: LayerLike,
    policy: Policy,
    *,
    rule: str,
    category: str,
    description: str,
    context: str | None,
    feedback: str | None,
    sample_id: str,
    attempt: int,
    lengths: Lengths = FULL,
    source: VerdictSource = "rule_table",
) -> CallResult[ArgumentValue]:
    """Ask for the argument under ``rule`` (and, for a ``model`` verdict source, the verdict)."""
    variant = policy.rules[rule]
    ruling = policy.ruling(category, rule)
    variables = {
        "term": policy.term,
        "rule_id": rule,
        "rule_description": variant.description,
        "audience_age": variant.audience.age_group,
        "audience_culture": variant.audience.culture,
        "labels": ", ".join(f'"{label}"' for label in policy.verdicts),
        "category": category,
        "category_attributes": category_meaning(policy, category),
        "expected_verdict": ruling.verdict,
        "reason": ruling.reason,
        "description": description,
        "context": context,
        "question": rule_question(policy, rule),
        "feedback": feedback,
        "table_verdict": source == "rule_table",
    }
    return await ask_role(
        layer,
        role="explainer",
        schema=explainer_schema(policy, lengths, source),
        variables=variables,
        sample_id=sample_id,
        stage=Target("explainer", rule).label,
        attempt=attempt,
    )


def required_category(
    inputs: Inputs,
    why: str = "the explainer needs a category, but the sample has no annotation and the "
    "describer proposed none",
) -> str:
    """The sample's category, narrowed: without one there is no rule-table row to explain."""
    category = inputs.get("category")
    if not category:
        raise MissingCategoryError(f"sample {inputs['sample'].sample_id}: {why}")
    return str(category)


async def _ask(call: StageCall, inputs: Inputs) -> CallResult[ArgumentValue]:
    if call.rule is None:
        raise ValueError("the explainer runs per rule variant: StageCall.rule is required")
    return await explain(
        call.layer,
        call.policy,
        rule=call.rule,
        category=required_category(inputs),
        description=inputs.get("description") or "",
        context=inputs.get("context"),
        feedback=call.feedback,
        sample_id=call.sample_id,
        attempt=call.attempt,
        lengths=call.lengths,
        source=verdict_source(inputs.get("category_source")),
    )


def _write(value: ArgumentValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    """The item stored under the rule in ``explanations``: the model's argument, the verdict
    (the table's, or the model's for a proposed category) and the conclusion written by code."""
    assert call.rule is not None  # per-rule stage: the node always sets it
    expected = call.policy.verdict(required_category(inputs), call.rule)
    source = verdict_source(inputs.get("category_source"))
    if source == "model":
        if not isinstance(value, ExplanationValue):
            raise TypeError(f"explainer under {call.rule}: a model verdict needs a verdict field")
        verdict = value.verdict
    else:
        verdict = expected
    argument = value.explanation.strip()
    trimmed = trim_cut_text(argument, call.lengths.explanation)
    if trimmed is not None:  # cut by the grammar's bound: its whole sentences are the argument
        argument = trimmed
    return {
        "explanation": f"{argument} {conclusion(verdict)}",
        "argument": argument,
        "verdict": verdict,
        "verdict_source": source,
        "expected": expected,
        "question": rule_question(call.policy, call.rule),
    }


STAGE = StageSpec(
    name="explainer",
    order=30,
    reads=("sample", "category", "category_source", "description", "context"),
    writes={"explanations": {}},
    schema=lambda call, inputs: explainer_schema(
        call.policy, call.lengths, verdict_source(inputs.get("category_source"))
    ),
    ask=_ask,
    write=_write,
    summary="explainer (per rule variant)",
    per_rule=True,
)
