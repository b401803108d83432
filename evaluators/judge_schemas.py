"""What a judge returns: one pydantic model per rubric, with hard bounds.

The bounds are part of the JSON schema the judge model is constrained by: a score outside 0-100
or a rationale past its length does not validate, so the answer is re-asked and, failing that,
kept as ``unscored`` rather than clipped into a number nobody gave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


MEQ_TABLE_ROWS: dict[str, str] = {
    "accuracy": "Accuracy",
    "preciseness": "Preciseness",
    "comprehensiveness": "Comprehensiveness",
    "fluency": "Fluency",
}
"""criterion -> the row name the paper's table uses (matched as its eval script matches it)."""


def parse_meq_table(table: str) -> dict[str, int]:
    """The four scores of the paper's ``| Criteria | Score |`` table, read as its eval script
    (``eval_scripts/eval_meq/eval.py``) reads them: after the ``|---|`` line, a row with exactly
    three ``|`` whose text names the criterion gives the integer between its last two bars.

    Raises:
        ValueError: a criterion without a row, a score that is not an integer in 0-100.
    """
    scores: dict[str, int] = {}
    past_rule = False
    for line in table.splitlines():
        if "--" in line:
            past_rule = True
            continue
        if not past_rule or line.count("|") != 3:
            continue
        for key, name in MEQ_TABLE_ROWS.items():
            if name in line:
                cell = line.split("|")[-2].strip()
                try:
                    value = int(cell)
                except ValueError:
                    raise ValueError(f"{name}: score {cell!r} is not an integer") from None
                if not 0 <= value <= 100:
                    raise ValueError(f"{name}: score {value} is outside 0-100")
                scores[key] = value
    missing = [MEQ_TABLE_ROWS[k] for k in MEQ_TABLE_ROWS if k not in scores]
    if missing:
        raise ValueError(
            f"the table has no row for {', '.join(missing)}: write the two-column table "
            "| Criteria | Score |, a |---|---| line, then one row per criterion"
        )
    return scores


class MEQPaperJudgment(_Out):
    """The paper's MEQ answer as its judge gave it: the ``Criteria | Score`` table, no rationale
    before it. The table is parsed (and validated) by the paper's own reading rule, so an answer
    its script could not read is re-asked and, failing that, ``unscored``."""

    table: str = Field(
        min_length=1,
        max_length=RATIONALE_MAX,
        description='The markdown table with columns "Criteria" and "Score" and the rows '
        "Accuracy, Preciseness, Comprehensiveness and Fluency, each score an integer in 0-100.",
    )

    @field_validator("table")
    @classmethod
    def _readable(cls, table: str) -> str:
        parse_meq_table(table)
        return table

    def _scores(self) -> dict[str, int]:
        return parse_meq_table(self.table)

    @property
    def accuracy(self) -> int:
        return self._scores()["accuracy"]

    @property
    def preciseness(self) -> int:
        return self._scores()["preciseness"]

    @property
    def comprehensiveness(self) -> int:
        return self._scores()["comprehensiveness"]

    @property
    def fluency(self) -> int:
        return self._scores()["fluency"]


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

Rubric = Literal["meq", "meq-paper", "free", "pairwise"]
MEQ_RUBRICS: tuple[str, ...] = ("meq", "meq-paper")
"""The rubrics that judge a candidate against a reference on the four MEQ criteria."""

#: rubric -> (schema, scored criteria, template base name in prompts/)
RUBRICS: dict[str, tuple[type[_Out], tuple[str, ...], str]] = {
    "meq": (MEQJudgment, MEQ_CRITERIA, "judge_meq"),
    "meq-paper": (MEQPaperJudgment, MEQ_CRITERIA, "judge_meq_paper"),
    "free": (FreeJudgment, FREE_CRITERIA, "judge_free"),
    "pairwise": (PairwiseJudgment, (), "judge_pairwise"),
}

RUBRIC_SETTINGS: dict[str, dict[str, str]] = {"meq-paper": {"temperature": "0.2"}}
"""Judge settings a rubric comes with (the paper's GPT-4o call used temperature 0.2); a
``--judge-setting`` of the same key wins."""


def rubric_settings(rubric: str, settings: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``settings`` (``KEY=VALUE``) plus the rubric's own defaults for keys not given."""
    given = {s.partition("=")[0].strip() for s in settings}
    extra = [f"{k}={v}" for k, v in RUBRIC_SETTINGS.get(rubric, {}).items() if k not in given]
    return (*settings, *extra)
