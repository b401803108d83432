"""The explainer: for one rule variant, why the image is (not) <term> for that audience."""

from __future__ import annotations

from typing import Any

from agents.describer import category_attributes_text
from agents.role_call import LayerLike, ask_role
from agents.schemas import FULL, Lengths, explanation_model
from data.policy_models import Policy


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
) -> Any:
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
        stage=f"explainer:{rule}",
        attempt=attempt,
    )
