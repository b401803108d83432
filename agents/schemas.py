"""What each generation role must return, as pydantic models with hard bounds.

The bounds (``max_length``, item counts) are part of the JSON schema the model is constrained
by: a small local model under grammar-constrained decoding cannot ramble past them, and a hosted
model is told the same limits. :class:`Lengths` holds them; ``FULL`` suits hosted models (the
released ICM-Instruct explanations run to ~1,200 characters), ``SHORT`` keeps the offline demo
on two CPU cores within minutes. Models whose fields depend on the policy (verdict labels,
category keys) or on the lengths are built by the cached ``*_model`` functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


@dataclass(frozen=True)
class Lengths:
    """Character limits of the generated texts."""

    description: int = 900
    element: int = 60
    context_field: int = 300
    explanation: int = 1400
    question: int = 200
    answer: int = 300
    option: int = 100


FULL = Lengths()
SHORT = Lengths(description=350, element=40, context_field=120, explanation=450, question=120,
                answer=120, option=60)  # fmt: skip
LENGTH_PROFILES: dict[str, Lengths] = {"full": FULL, "short": SHORT}


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _text(limit: int, description: str, min_length: int = 3) -> Any:
    return (str, Field(min_length=min_length, max_length=limit, description=description))


@cache
def description_model(lengths: Lengths = FULL) -> type[BaseModel]:
    """The describer's explicit description: what is visibly in the image."""
    element = Annotated[str, Field(min_length=2, max_length=lengths.element)]
    return create_model(
        "Description",
        __base__=_Out,
        description=_text(
            lengths.description,
            "What the image shows: people, clothing, exposure, pose, actions, objects, text. "
            "Only what is visible.",
            min_length=20,
        ),
        key_elements=(
            list[element],  # type: ignore[valid-type]
            Field(
                min_length=1,
                max_length=6,
                description="Short noun phrases for the visible elements that matter.",
            ),
        ),
    )


@cache
def context_model(lengths: Lengths = FULL) -> type[BaseModel]:
    """The context interpreter's implicit description: what the image suggests."""
    n = lengths.context_field
    return create_model(
        "Context",
        __base__=_Out,
        setting=_text(n, "Where the scene takes place."),
        atmosphere=_text(n, "The mood or atmosphere the image conveys."),
        intent=_text(n, "The apparent purpose of the image or its poses."),
        audience_cues=_text(
            n, "Anything that makes the image more or less suitable for some audiences."
        ),
    )


@cache
def explanation_model(labels: tuple[str, ...], lengths: Lengths = FULL) -> type[BaseModel]:
    """The explainer's output: an explanation ending in a verdict from ``labels``."""
    return create_model(
        "Explanation",
        __base__=_Out,
        explanation=_text(
            lengths.explanation,
            "Why the verdict holds for this audience, citing what is seen; the last sentence "
            "states the verdict.",
            min_length=40,
        ),
        verdict=(Literal[labels], Field(description="The verdict under the rule.")),  # type: ignore[valid-type]
    )


@cache
def description_with_proposal_model(
    categories: tuple[str, ...], lengths: Lengths = FULL
) -> type[BaseModel]:
    """For images without an annotation: the description plus a proposed category."""
    return create_model(
        "DescriptionWithProposal",
        __base__=description_model(lengths),
        proposed_category=(
            Literal[categories],  # type: ignore[valid-type]
            Field(description="The policy category that best matches what is visible."),
        ),
    )


@cache
def qa_model(
    n_yes_no: int, n_mc: int, n_what: int, n_how: int, lengths: Lengths = FULL
) -> type[BaseModel]:
    """The Q-A writer's output with exactly the configured number of items of each kind."""
    question = _text(lengths.question, "A question answerable from the texts.", min_length=8)
    yes_no = create_model(
        "YesNoItem", __base__=_Out, question=question, answer=(Literal["Yes", "No"], ...)
    )
    choice = create_model(
        "MultipleChoiceItem",
        __base__=_Out,
        question=question,
        options=(
            list[Annotated[str, Field(min_length=1, max_length=lengths.option)]],  # type: ignore[valid-type]
            Field(
                min_length=4,
                max_length=4,
                description="Four distinct answer options, without letters.",
            ),
        ),
        answer=(Literal["A", "B", "C", "D"], Field(description="Letter of the correct option.")),
    )
    open_item = create_model(
        "OpenItem", __base__=_Out, question=question, answer=_text(lengths.answer, "The answer.")
    )

    def items(kind: type[BaseModel], n: int) -> tuple[object, object]:
        return (list[kind], Field(min_length=n, max_length=n))  # type: ignore[valid-type]

    return create_model(
        "QASet",
        __base__=_Out,
        yes_no=items(yes_no, n_yes_no),
        multiple_choice=items(choice, n_mc),
        what=items(open_item, n_what),
        how=items(open_item, n_how),
    )


class CriticProblem(_Out):
    stage: Literal["describer", "context_interpreter", "explainer", "qa_writer"]
    issue: str = Field(min_length=5, max_length=300)


class Critique(_Out):
    """The LLM critic's judgement of a whole sample."""

    consistent: bool = Field(
        description="True when the stages agree with each other and with the evidence."
    )
    problems: list[CriticProblem] = Field(
        default_factory=list,
        max_length=4,
        description="Hallucinations or contradictions found; empty when consistent.",
    )


Description = description_model(FULL)
Context = context_model(FULL)
