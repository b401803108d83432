"""The judge role: scores moderation explanations under a rubric, through the model layer.

Four rubrics (``evaluators.judge_schemas``): the MEQ rubric in our words (a candidate against a
reference: accuracy, preciseness, comprehensiveness, fluency), a reference-free rubric (verdict
correctness under the rule variant, rule faithfulness, grounding, freedom from hallucination),
a pairwise comparison, and ``meq-paper``: the paper's own MEQ prompt, answered as its
``Criteria | Score`` table with no rationale before it, at temperature 0.2.

A judgment ends in one of four statuses and only ``scored`` carries scores: ``unscored`` (the
answer never validated against the rubric's schema; its raw text stays in ``llm_calls``),
``refused`` and ``failed``. The other three are counted wherever scores are aggregated and are
never turned into 0 (inspect_ai's rule: unparseable is not wrong).

Judges are chosen by spec like any model (``openai:gpt-4o``, ``local:smollm2``), plus offline
metrics that need no LLM (``metric:minilm``, see ``evaluators.embedding_judge``), which answer the
same interface but say in every rationale that they are metrics, not LLM judges.

LLM judges are known to prefer their own text (self-preference) and, in pairwise comparisons,
the position an answer is shown in. :func:`self_preference_warnings` flags a judge that also
generated the run it judges; :func:`compare_pairs` asks in both orders and
:func:`disagreement_rate` says how often the order changed the answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from agents.models.base import Message
from agents.models.layer import ModelLayer
from agents.models.settings import ModelConfig
from agents.models.spec import parse_spec
from data.store import Store
from evaluators.judge_schemas import RUBRICS, PairwiseJudgment
from evaluators.judgments import (
    FreeItem,
    Judge,
    Judgment,
    JudgmentStatus,
    MEQItem,
    PairItem,
    Preference,
    UnsupportedRubricError,
    _Item,
)
from prompts import load_prompt

#: the layer's call status -> the judgment's status
_STATUS: dict[str, JudgmentStatus] = {
    "ok": "scored",
    "parse_failed": "unscored",
    "refused": "refused",
    "failed": "failed",
    "too_large": "failed",
}
METRIC_PREFIX = "metric:"


def _variables(item: _Item, swapped: bool) -> dict[str, Any]:
    if isinstance(item, PairItem):
        first, second = (item.second, item.first) if swapped else (item.first, item.second)
        return {
            "first": first,
            "second": second,
            "reference": item.reference,
            "has_reference": bool(item.reference),
            "rule_text": item.rule_text,
        }
    return item.model_dump(exclude={"item_id", "sample_id", "rule_variant"})


def _check_items(rubric: str, items: Sequence[_Item]) -> None:
    kind = {"meq": MEQItem, "meq-paper": MEQItem, "free": FreeItem, "pairwise": PairItem}.get(
        rubric
    )
    if kind is None:
        raise UnsupportedRubricError(f"unknown rubric {rubric!r} (rubrics: {', '.join(RUBRICS)})")
    wrong = [i.item_id for i in items if not isinstance(i, kind)]
    if wrong:
        raise TypeError(f"rubric {rubric} takes {kind.__name__} items, not {wrong[:3]}")


class LLMJudge:
    """A judge model behind the model layer, bound to the ``judge`` role."""

    kind: Literal["llm", "metric"] = "llm"

    def __init__(self, layer: ModelLayer) -> None:
        self.layer = layer
        self.spec = layer.config.for_role("judge").spec.spec

    def supports(self, rubric: str) -> bool:
        return rubric in RUBRICS

    def check(self) -> None:
        self.layer.check_credentials()

    async def judge(
        self,
        rubric: str,
        items: Sequence[_Item],
        *,
        repeat_index: int = 0,
        swapped: bool = False,
    ) -> list[Judgment]:
        """Judge every item concurrently (the layer bounds concurrency per model)."""
        _check_items(rubric, items)
        return list(
            await asyncio.gather(*(self._one(rubric, i, repeat_index, swapped) for i in items))
        )

    async def _one(self, rubric: str, item: _Item, repeat_index: int, swapped: bool) -> Judgment:
        schema, criteria, template = RUBRICS[rubric]
        system, user = load_prompt(f"{template}.system"), load_prompt(f"{template}.user")
        variables = _variables(item, swapped)
        result = await self.layer.call(
            role="judge",
            schema=schema,
            messages=[
                Message(role="system", text=system.render(**variables)),
                Message(role="user", text=user.render(**variables)),
            ],
            prompt=[system, user],
            sample_id=item.sample_id or item.item_id,
            stage=f"judge_{rubric}" + ("_swapped" if swapped else ""),
            # The attempt is part of the cache key: each repeat is a fresh sample.
            attempt=repeat_index + 1,
        )
        status = _STATUS[result.status]
        judgment = Judgment(
            item_id=item.item_id,
            rubric=rubric,
            judge_spec=self.spec,
            status=status,
            call_id=result.call_id or None,
            error=result.error,
            sample_id=item.sample_id,
            rule_variant=item.rule_variant,
            repeat_index=repeat_index,
            swapped=swapped,
        )
        if status != "scored" or result.value is None:
            return judgment
        value = result.value
        judgment.rationale = getattr(value, "rationale", None)  # meq-paper answers a table only
        if isinstance(value, PairwiseJudgment):
            judgment.preferred = _unswap(value.winner, swapped)
        else:
            judgment.scores = {c: float(getattr(value, c)) for c in criteria}
        return judgment

    async def aclose(self) -> None:
        await self.layer.aclose()


def _unswap(shown: str, swapped: bool) -> Preference:
    if shown == "tie":
        return "tie"
    first_shown = "A" if not swapped else "B"
    return "first" if shown == first_shown else "second"


def make_judge(
    spec: str,
    *,
    store: Store | None = None,
    run_id: str | None = None,
    use_cache: bool = True,
    settings: Sequence[str] = (),
    layer_options: Mapping[str, Any] | None = None,
) -> Judge:
    """A judge for ``spec``: ``metric:<name>`` for an offline metric, else any model spec.

    ``settings`` are ``KEY=VALUE`` role settings for the judge (``temperature=0.7`` for repeated
    sampling, ``max_tokens=300``); ``layer_options`` go to :class:`ModelLayer` (tests pass a
    no-wait ``sleep``).
    """
    if spec.startswith(METRIC_PREFIX):
        from evaluators.embedding_judge import metric_judge  # loads torch only when asked

        if settings:
            raise ValueError(f"{spec} is a metric and takes no judge settings ({list(settings)})")
        return metric_judge(spec)
    config = ModelConfig.from_args([f"judge={spec}"], [f"judge.{s}" for s in settings])
    layer = ModelLayer(config, store, run_id=run_id, use_cache=use_cache, **(layer_options or {}))
    return LLMJudge(layer)


# --------------------------------------------------------------------------- pairwise
class PairOutcome(BaseModel):
    """One pair judged in both orders."""

    item_id: str
    forward: Judgment
    backward: Judgment

    @property
    def both_scored(self) -> bool:
        return self.forward.scored and self.backward.scored

    @property
    def consistent(self) -> bool | None:
        """Whether both orders preferred the same explanation; None unless both scored."""
        if not self.both_scored:
            return None
        return self.forward.preferred == self.backward.preferred

    @property
    def preferred(self) -> Preference | None:
        """The order-independent preference: only when both orders agree."""
        return self.forward.preferred if self.consistent else None


async def compare_pairs(
    judge: Judge, items: Sequence[PairItem], *, repeat_index: int = 0
) -> list[PairOutcome]:
    """Ask for each pair as (first, second) and as (second, first)."""
    forward = await judge.judge("pairwise", items, repeat_index=repeat_index)
    backward = await judge.judge("pairwise", items, repeat_index=repeat_index, swapped=True)
    return [
        PairOutcome(item_id=i.item_id, forward=f, backward=b)
        for i, f, b in zip(items, forward, backward, strict=True)
    ]


class PairwiseSummary(BaseModel):
    n_pairs: int
    n_both_scored: int
    disagreement_rate: float | None
    """Share of pairs (both orders scored) where swapping the positions changed the answer."""
    preferred: dict[str, int]
    """Counts of order-independent preferences: first, second, tie, inconsistent, unscored."""


def disagreement_rate(outcomes: Sequence[PairOutcome]) -> PairwiseSummary:
    """How often the position decided the answer, and what the consistent answers were."""
    counts = {"first": 0, "second": 0, "tie": 0, "inconsistent": 0, "unscored": 0}
    both = [o for o in outcomes if o.both_scored]
    for outcome in outcomes:
        if not outcome.both_scored:
            counts["unscored"] += 1
        elif outcome.consistent:
            counts[outcome.preferred or "tie"] += 1
        else:
            counts["inconsistent"] += 1
    rate = counts["inconsistent"] / len(both) if both else None
    return PairwiseSummary(
        n_pairs=len(outcomes), n_both_scored=len(both), disagreement_rate=rate, preferred=counts
    )


# --------------------------------------------------------------------------- self-preference
def _identity(spec: str) -> tuple[str, str] | None:
    """(label, model name) of a model spec; None for metrics and unparseable text."""
    if spec.startswith(METRIC_PREFIX):
        return None
    try:
        parsed = parse_spec(spec)
    except ValueError:
        return None
    return parsed.label.lower(), parsed.model.rstrip("/").rsplit("/", 1)[-1].lower()


def generator_specs(role_bindings: str | Mapping[str, Any] | None) -> dict[str, str]:
    """role -> spec from a run's ``role_bindings_json`` (the judge role itself left out)."""
    if role_bindings is None:
        return {}
    data = json.loads(role_bindings) if isinstance(role_bindings, str) else role_bindings
    specs: dict[str, str] = {}
    for role, binding in (data or {}).items():
        spec = binding.get("spec") if isinstance(binding, Mapping) else binding
        if role != "judge" and isinstance(spec, str):
            specs[role] = spec
    return specs


def self_preference_warnings(judge_spec: str, generators: Mapping[str, str]) -> list[str]:
    """A warning when the judge's model also generated the judged run (same spec or model)."""
    judge = _identity(judge_spec)
    if judge is None:
        return []
    roles = sorted(
        role
        for role, spec in generators.items()
        if (other := _identity(spec)) is not None and (other[0] == judge[0] or other[1] == judge[1])
    )
    if not roles:
        return []
    return [
        f"self-preference: the judge {judge_spec} is the model that generated this run's "
        f"{', '.join(roles)} output; LLM judges tend to rate their own text higher. Judge with "
        "another model, or report the scores with this caveat."
    ]
