"""The describer: the explicit description of an image (what is visibly there).

Seeded by the category's explicit-description sentence (the paper's seed) and grounded in the
perception evidence, which is all a text-only model gets to "see".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.models.base import ImageInput
from agents.role_call import LayerLike, ask_role
from agents.schemas import FULL, Lengths, description_model, description_with_proposal_model
from data.policy_models import Policy


def category_attributes_text(policy: Policy, category: str) -> str:
    """``region=upper, exposure=leg`` for prompts and checks."""
    return ", ".join(f"{k}={v}" for k, v in policy.categories[category].attributes.items())


async def describe(
    layer: LayerLike,
    policy: Policy,
    *,
    category: str | None,
    evidence_text: str | None,
    images: Sequence[ImageInput],
    feedback: str | None,
    sample_id: str,
    attempt: int,
    lengths: Lengths = FULL,
) -> Any:
    """Ask for a description; without an annotation the schema also asks for a category."""
    schema = (
        description_model(lengths)
        if category
        else description_with_proposal_model(tuple(policy.categories), lengths)
    )
    sees = bool(images) and await layer.sees_images("describer")
    variables = {
        "has_image": sees,
        "policy_title": policy.title,
        "category": category,
        "category_attributes": category_attributes_text(policy, category) if category else "",
        "category_description": policy.categories[category].description if category else "",
        "category_choices": ", ".join(policy.categories),
        "evidence": evidence_text,
        "feedback": feedback,
    }
    return await ask_role(
        layer,
        role="describer",
        schema=schema,
        variables=variables,
        images=images,
        sample_id=sample_id,
        stage="describer",
        attempt=attempt,
    )
