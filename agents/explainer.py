"""The explainer, for one rule variant: why the image is (not) <term> for that audience.

It runs once per selected rule variant, concurrently; the rule table's verdict for the sample's
category is in its prompt, and the deterministic critic checks the verdict it returns.
"""

from __future__ import annotations

from typing import Any

from agents.describer import category_attributes_text
from agents.models.result import CallResult
from agents.role_call import LayerLike, ask_role
from agents.schemas import FULL, ExplanationValue, Lengths, explanation_model
from agents.stages import Inputs, StageCall, StageSpec, Target
from data.policy_models import Policy


class MissingCategoryError(ValueError):
    """The explainer needs a category (annotated or proposed) to look the rule table up."""


def rule_question(policy: Policy, rule: str) -> str:
    """The instruction the explanation answers; also the first human turn of the export."""
    variant = policy.rules[rule]
    return (
        f"Under rule {rule} (audience: {variant.audience.age_group}, "
        f"{variant.audience.culture} culture), is the image {policy.term}? Explain why."
    )


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
) -> CallResult[ExplanationValue]:
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
        "category_attributes": category_attributes_text(policy, category),
        "expected_verdict": ruling.verdict,
        "reason": ruling.reason,
        "description": description,
        "context": context,
        "question": rule_question(policy, rule),
        "feedback": feedback,
    }
    return await ask_role(
        layer,
        role="explainer",
        schema=explanation_model(tuple(policy.verdicts), lengths),
        variables=variables,
        sample_id=sample_id,
        stage=Target("explainer", rule).label,
        attempt=attempt,
    )


def _category(inputs: Inputs) -> str:
    """The sample's category, narrowed: without one there is no rule-table row to explain."""
    category = inputs.get("category")
    if not category:
        raise MissingCategoryError(
            f"sample {inputs['sample'].sample_id}: the explainer needs a category, but the "
            "sample has no annotation and the describer proposed none"
        )
    return str(category)


async def _ask(call: StageCall, inputs: Inputs) -> CallResult[ExplanationValue]:
    if call.rule is None:
        raise ValueError("the explainer runs per rule variant: StageCall.rule is required")
    return await explain(
        call.layer,
        call.policy,
        rule=call.rule,
        category=_category(inputs),
        description=inputs.get("description") or "",
        context=inputs.get("context"),
        feedback=call.feedback,
        sample_id=call.sample_id,
        attempt=call.attempt,
        lengths=call.lengths,
    )


def _write(value: ExplanationValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    """The item stored under the rule in ``explanations``."""
    assert call.rule is not None  # per-rule stage: the node always sets it
    return {
        "explanation": value.explanation,
        "verdict": value.verdict,
        "expected": call.policy.verdict(_category(inputs), call.rule),
        "question": rule_question(call.policy, call.rule),
    }


STAGE = StageSpec(
    name="explainer",
    order=30,
    reads=("sample", "category", "description", "context"),
    writes={"explanations": {}},
    schema=lambda call, inputs: explanation_model(tuple(call.policy.verdicts), call.lengths),
    ask=_ask,
    write=_write,
    summary="explainer (per rule variant)",
    per_rule=True,
)
