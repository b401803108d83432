"""The context interpreter: implicit content (setting, atmosphere, intent, audience cues)."""

from __future__ import annotations

from typing import Any

from agents.describer import category_attributes_text
from agents.models.result import CallResult
from agents.role_call import LayerLike, ask_role
from agents.schemas import FULL, ContextValue, Lengths, context_model
from agents.stages import Inputs, StageCall, StageSpec
from data.policy_models import Policy


def context_text(context: dict[str, str]) -> str:
    """One paragraph from the four fields, as later stages and exports read it."""
    return (
        f"Setting: {context['setting']} Atmosphere: {context['atmosphere']} "
        f"Intent: {context['intent']} Audience cues: {context['audience_cues']}"
    )


async def interpret(
    layer: LayerLike,
    policy: Policy,
    *,
    category: str | None,
    description: str,
    feedback: str | None,
    sample_id: str,
    attempt: int,
    lengths: Lengths = FULL,
) -> CallResult[ContextValue]:
    variables = {
        "description": description,
        "category": category,
        "category_attributes": category_attributes_text(policy, category) if category else "",
        "feedback": feedback,
    }
    return await ask_role(
        layer,
        role="context_interpreter",
        schema=context_model(lengths),
        variables=variables,
        sample_id=sample_id,
        stage="context_interpreter",
        attempt=attempt,
    )


async def _ask(call: StageCall, inputs: Inputs) -> CallResult[ContextValue]:
    return await interpret(
        call.layer,
        call.policy,
        category=inputs.get("category"),
        description=inputs.get("description") or "",
        feedback=call.feedback,
        sample_id=call.sample_id,
        attempt=call.attempt,
        lengths=call.lengths,
    )


def _write(value: ContextValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    return {"context": context_text(value.model_dump())}


STAGE = StageSpec(
    name="context_interpreter",
    order=20,
    reads=("category", "description"),
    writes={"context": None},
    schema=lambda call, inputs: context_model(call.lengths),
    ask=_ask,
    write=_write,
    summary="context interpreter",
    describes_image=True,
)
