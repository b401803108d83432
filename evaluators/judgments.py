"""What a judge is and returns, apart from any model: items, judgments, the ``Judge`` protocol.

Calibration (``evaluators.calibration``) and the offline metric (``evaluators.embedding_judge``)
score through a :class:`Judge` they are handed; the LLM judge that calls a model through the
model layer lives above, in ``agents.judge``, and implements the same protocol. Keeping these
types here lets the scoring layer use them without importing the model layer.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

JudgmentStatus = Literal["scored", "unscored", "refused", "failed"]
Preference = Literal["first", "second", "tie"]


class UnsupportedRubricError(ValueError):
    """The judge cannot apply this rubric (an offline metric needs a reference)."""


# --------------------------------------------------------------------------- items and results
class _Item(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    sample_id: str | None = None
    rule_variant: str | None = None


class MEQItem(_Item):
    """A candidate explanation and the reference it is judged against."""

    reference: str
    candidate: str


class FreeItem(_Item):
    """An explanation with what a reference-free judge needs to check it."""

    explanation: str
    verdict: str | None
    term: str
    rule_id: str
    rule_description: str
    audience_age: str
    audience_culture: str
    category: str | None = None
    expected_verdict: str | None = None
    reason: str | None = None
    description: str = ""
    context: str | None = None
    evidence: str | None = None


class PairItem(_Item):
    """Two explanations of the same image under the same rule (``first`` = run A's)."""

    first: str
    second: str
    reference: str | None = None
    rule_text: str | None = None


class Judgment(BaseModel):
    """One judge call's outcome. ``scores`` only when ``status == "scored"``."""

    item_id: str
    rubric: str
    judge_spec: str
    status: JudgmentStatus
    scores: dict[str, float] | None = None
    preferred: Preference | None = None
    """Pairwise only: the preferred explanation in the item's own order (position undone)."""
    rationale: str | None = None
    call_id: str | None = None
    error: str | None = None
    sample_id: str | None = None
    rule_variant: str | None = None
    repeat_index: int = 0
    swapped: bool = False

    @property
    def scored(self) -> bool:
        return self.status == "scored"


# --------------------------------------------------------------------------- judges
class Judge(Protocol):
    """What calibration and scoring need from a judge, LLM or metric."""

    spec: str
    kind: Literal["llm", "metric"]

    def supports(self, rubric: str) -> bool: ...

    def check(self) -> None:
        """Raise before any work when the judge cannot run (a missing key, say)."""

    async def judge(
        self,
        rubric: str,
        items: Sequence[_Item],
        *,
        repeat_index: int = 0,
        swapped: bool = False,
    ) -> list[Judgment]: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- repeats
class RepeatSummary(BaseModel):
    """One item judged ``n`` times: mean and spread of the scored repeats only."""

    item_id: str
    n: int
    n_scored: int
    mean: dict[str, float] | None
    std: dict[str, float] | None
    """Sample standard deviation per criterion; None with fewer than two scored repeats."""


def summarize_repeats(judgments: Sequence[Judgment]) -> RepeatSummary:
    """Mean and std per criterion over the scored repeats of one item."""
    if not judgments:
        raise ValueError("no judgments to summarise")
    scored = [j.scores for j in judgments if j.scored and j.scores]
    mean = std = None
    if scored:
        criteria = list(scored[0])
        mean = {c: statistics.fmean(s[c] for s in scored) for c in criteria}
        if len(scored) >= 2:
            std = {c: statistics.stdev(s[c] for s in scored) for c in criteria}
    return RepeatSummary(
        item_id=judgments[0].item_id, n=len(judgments), n_scored=len(scored), mean=mean, std=std
    )


async def judge_repeated(
    judge: Judge,
    rubric: str,
    items: Sequence[_Item],
    repeats: int = 1,
    *,
    chunk: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[list[Judgment]]:
    """Each item judged ``repeats`` times; returns one list of judgments per item.

    Items go to the judge ``chunk`` at a time, so ``progress`` (called with each chunk's size)
    moves on slow judges and memory stays bounded on large sets.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    rounds: list[list[Judgment]] = []
    for r in range(repeats):
        judged: list[Judgment] = []
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            judged += await judge.judge(rubric, part, repeat_index=r)
            if progress:
                progress(len(part))
        rounds.append(judged)
    return [list(per_item) for per_item in zip(*rounds, strict=True)]
