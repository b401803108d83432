"""What a judge returns: one pydantic model per rubric, with hard bounds.

The bounds are part of the JSON schema the judge model is constrained by: a score outside 0-100
or a rationale past its length does not validate, so the answer is re-asked and, failing that,
kept as ``unscored`` rather than clipped into a number nobody gave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Score = int
RATIONALE_MAX = 600


def _score(meaning: str) -> Any:
    return Field(ge=0, le=100, description=f"0-100. {meaning}")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")

    if TYPE_CHECKING:  # every rubric declares it first, in its own place in the schema
        rationale: str


class MEQJudgment(_Out):
    """The paper's moderation-explanation-quality rubric: a candidate against a reference.

    The rationale comes first so the scores are written after, and conditioned on, the reasons
    (a model decodes fields in schema order).
    """

    rationale: str = Field(
        min_length=1,
        max_length=RATIONALE_MAX,
        description="Two or three sentences comparing the candidate with the reference, naming "
        "the details that agree and those that cost points.",
    )
    accuracy: Score = _score(
        "How closely the candidate agrees with the reference about the image and the verdict."
    )
    preciseness: Score = _score(
        "Lower for every detail the candidate states that the reference neither says nor implies."
    )
    comprehensiveness: Score = _score("How many of the reference's points the candidate covers.")
    fluency: Score = _score("How coherent, well-formed and readable the candidate is.")


class FreeJudgment(_Out):
    """The reference-free rubric: an explanation judged against the rule and the evidence."""

    rationale: str = Field(
        min_length=1,
        max_length=RATIONALE_MAX,
        description="Two or three sentences on the verdict, the reasons and what is unsupported.",
    )
    verdict_correctness: Score = _score(
        "100 when the explanation's verdict is the one the rule variant requires, 0 when not."
    )
    rule_faithfulness: Score = _score(
        "How far the explanation argues from the rule's audience (age, culture) and the "
        "image's attributes rather than generic statements."
    )
    grounding: Score = _score(
        "How far each claim rests on the image description and the detector evidence."
    )
    hallucination_free: Score = _score(
        "100 when nothing is invented; lower for each detail the description and evidence do "
        "not support."
    )


class PairwiseJudgment(_Out):
    """Which of two explanations of the same image under the same rule is better."""

    rationale: str = Field(min_length=1, max_length=RATIONALE_MAX)
    winner: Literal["A", "B", "tie"] = Field(
        description="A or B for the better explanation, tie when neither is better."
    )


MEQ_CRITERIA: tuple[str, ...] = ("accuracy", "preciseness", "comprehensiveness", "fluency")
FREE_CRITERIA: tuple[str, ...] = (
    "verdict_correctness",
    "rule_faithfulness",
    "grounding",
    "hallucination_free",
)

Rubric = Literal["meq", "free", "pairwise"]

#: rubric -> (schema, scored criteria, template base name in prompts/)
RUBRICS: dict[str, tuple[type[_Out], tuple[str, ...], str]] = {
    "meq": (MEQJudgment, MEQ_CRITERIA, "judge_meq"),
    "free": (FreeJudgment, FREE_CRITERIA, "judge_free"),
    "pairwise": (PairwiseJudgment, (), "judge_pairwise"),
}
