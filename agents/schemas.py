"""What each generation role must return, as pydantic models with hard bounds.

The bounds (``max_length``, item counts) are part of the JSON schema the model is constrained
by: a small local model under grammar-constrained decoding cannot ramble past them, and a hosted
model is told the same limits. Models whose fields depend on the policy (verdict labels,
category keys) are built per policy by the ``*_model`` functions and cached.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Description(_Out):
    """The describer's explicit description: what is visibly in the image."""

    description: str = Field(
        min_length=20,
        max_length=700,
        description="What the image shows: people, clothing, exposure, pose, actions, objects, "
        "text. Only what is visible.",
    )
    key_elements: list[str] = Field(
        min_length=1,
        max_length=6,
        description="Short noun phrases for the visible elements that matter for moderation.",
    )


class Context(_Out):
    """The context interpreter's implicit description: what the image suggests."""

    setting: str = Field(min_length=3, max_length=200, description="Where the scene takes place.")
    atmosphere: str = Field(
        min_length=3, max_length=300, description="The mood or atmosphere the image conveys."
    )
    intent: str = Field(
        min_length=3, max_length=300, description="The apparent purpose of the image or its poses."
    )
    audience_cues: str = Field(
        min_length=3,
        max_length=300,
        description="Anything that makes the image more or less suitable for some audiences.",
    )


class YesNoItem(_Out):
    question: str = Field(min_length=8, max_length=200)
    answer: Literal["Yes", "No"]


class MultipleChoiceItem(_Out):
    question: str = Field(min_length=8, max_length=200)
    options: list[str] = Field(
        min_length=4, max_length=4, description="Four distinct answer options, without letters."
    )
    answer: Literal["A", "B", "C", "D"] = Field(description="Letter of the correct option.")


class OpenItem(_Out):
    question: str = Field(min_length=8, max_length=200)
    answer: str = Field(min_length=2, max_length=300)


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


@cache
def explanation_model(labels: tuple[str, ...]) -> type[BaseModel]:
    """The explainer's output: an explanation ending in a verdict from ``labels``."""
    return create_model(
        "Explanation",
        __base__=_Out,
        explanation=(
            str,
            Field(
                min_length=40,
                max_length=900,
                description="Why the verdict holds for this audience, citing what is seen; "
                "the last sentence states the verdict.",
            ),
        ),
        verdict=(Literal[labels], Field(description="The verdict under the rule.")),  # type: ignore[valid-type]
    )


@cache
def description_with_proposal_model(categories: tuple[str, ...]) -> type[BaseModel]:
    """For images without an annotation: the description plus a proposed category."""
    return create_model(
        "DescriptionWithProposal",
        __base__=Description,
        proposed_category=(
            Literal[categories],  # type: ignore[valid-type]
            Field(description="The policy category that best matches what is visible."),
        ),
    )


@cache
def qa_model(n_yes_no: int, n_mc: int, n_what: int, n_how: int) -> type[BaseModel]:
    """The Q-A writer's output with exactly the configured number of items of each kind."""

    def items(kind: type[BaseModel], n: int) -> tuple[object, object]:
        return (list[kind], Field(min_length=n, max_length=n))  # type: ignore[valid-type]

    return create_model(
        "QASet",
        __base__=_Out,
        yes_no=items(YesNoItem, n_yes_no),
        multiple_choice=items(MultipleChoiceItem, n_mc),
        what=items(OpenItem, n_what),
        how=items(OpenItem, n_how),
    )
