"""The describer: the explicit description of an image (what is visibly there).

Seeded by the category's explicit-description sentence (the paper's seed) and grounded in the
perception evidence and, where the manifest gives one, a person's note of what the image shows:
for a text-only model those are all it gets to "see", and the note is the only source it may
state as seen beyond the detectors' certain facts. Without an annotation the
describer also proposes the category (``category_source = "proposed"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.models.base import ImageInput
from agents.models.result import CallResult
from agents.perception.evidence import Evidence
from agents.role_call import LayerLike, ask_role
from agents.schemas import (
    FULL,
    DescriptionValue,
    Lengths,
    ProposalValue,
    description_model,
    description_with_proposal_model,
)
from agents.stages import Inputs, StageCall, StageSpec
from data.policy_models import Policy
from evaluators.text_checks import attribute_mentions, content_lemmas, key_element_problem

#: synonyms shown per annotated attribute: enough to show the kind of words, short enough for
#: a 2-core prefill
HINT_PHRASES = 4


def category_attributes_text(policy: Policy, category: str) -> str:
    """``region=upper, exposure=leg`` for prompts and checks."""
    return ", ".join(f"{k}={v}" for k, v in policy.categories[category].attributes.items())


def attribute_hints(policy: Policy, category: str) -> str:
    """``region=upper (e.g. upper body, upper, chest, breast)``: the words the critic accepts as
    mentioning each annotated attribute (:func:`evaluators.text_checks.attribute_mentions`).

    A model describing from detector evidence alone was told the annotation but not that the
    description must say it: "a person in a military uniform" was rejected for never
    mentioning region=upper. Attributes without phrases ("subject=none") need no mention."""
    return "; ".join(
        f"{key} (e.g. {', '.join(phrases[:HINT_PHRASES])})"
        for key, phrases in attribute_mentions(policy, category).items()
        if phrases
    )


def description_schema(
    policy: Policy, lengths: Lengths, category: str | None
) -> type[DescriptionValue]:
    """The plain description, or (without an annotation) description plus proposed category."""
    if category:
        return description_model(lengths)
    return description_with_proposal_model(tuple(policy.categories), lengths)


async def describe(
    layer: LayerLike,
    policy: Policy,
    *,
    category: str | None,
    evidence_text: str | None,
    images: Sequence[ImageInput],
    note: str | None = None,
    feedback: str | None,
    sample_id: str,
    attempt: int,
    lengths: Lengths = FULL,
) -> CallResult[DescriptionValue]:
    """Ask for a description; without an annotation the schema also asks for a category."""
    schema = description_schema(policy, lengths, category)
    sees = bool(images) and await layer.sees_images("describer")
    variables = {
        "has_image": sees,
        "policy_title": policy.title,
        "category": category,
        "category_attributes": category_attributes_text(policy, category) if category else "",
        "category_description": policy.categories[category].description if category else "",
        "attribute_hints": attribute_hints(policy, category) if category else "",
        "category_choices": ", ".join(policy.categories),
        "evidence": evidence_text,
        "note": note,
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


def _evidence_for(note: str | None, inputs: Inputs) -> str | None:
    """All the detector evidence, or, beside a person's note, only its certain facts."""
    evidence = inputs.get("evidence")
    if note and evidence:
        return Evidence.load(evidence).certain_text()
    return inputs.get("evidence_text")


async def _ask(call: StageCall, inputs: Inputs) -> CallResult[DescriptionValue]:
    sample = inputs["sample"]
    return await describe(
        call.layer,
        call.policy,
        category=sample.category,
        evidence_text=_evidence_for(sample.note, inputs),
        images=call.images(),
        note=sample.note,
        feedback=call.feedback,
        sample_id=call.sample_id,
        attempt=call.attempt,
        lengths=call.lengths,
    )


def kept_key_elements(elements: Sequence[str], description: str) -> list[str]:
    """The key elements that are phrases of the description, in order, each once.

    Key elements only summarise the description (no record or export carries them); one the
    description does not contain ("human" beside "a person", a detector label) is dropped here,
    as is a repeat of one already listed (the demo's board game listed 'dice' twice and was
    sent back for it), and the model's whole list stays in the trace. When none is left the
    list is kept as it was, so the critic's ``key_elements_in_description`` check sends the
    description back."""
    lemmas = content_lemmas(description)
    kept: list[str] = []
    seen: set[str] = set()
    for element in elements:
        key = " ".join(content_lemmas(element)) or element.strip().lower()
        if key not in seen and key_element_problem(element, lemmas) is None:
            seen.add(key)
            kept.append(element)
    return kept or list(elements)


def _write(value: DescriptionValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    update: dict[str, Any] = {
        "description": value.description,
        "key_elements": kept_key_elements(value.key_elements, value.description),
    }
    if inputs["sample"].category is None and isinstance(value, ProposalValue):
        update |= {"category": value.proposed_category, "category_source": "proposed"}
    return update


STAGE = StageSpec(
    name="describer",
    order=10,
    reads=("sample", "evidence_text", "evidence"),
    # also ``category`` and ``category_source`` when it proposes one (never reset: an
    # annotated category stays, a proposed one is proposed again on a redo)
    writes={"description": None, "key_elements": []},
    schema=lambda call, inputs: description_schema(
        call.policy, call.lengths, inputs["sample"].category
    ),
    ask=_ask,
    write=_write,
    summary="describer",
    describes_image=True,
)
