"""A no-LLM baseline: category and verdict per rule variant from detector evidence alone.

What a generated explanation or a fine-tuned model must beat: if shipped detectors plus a rule
table already give the verdict, the language model adds only the explanation.

Method. Evidence is mapped to attribute values (``attributes.map_attributes``). A value's
*support* is its confidence minus the strongest confidence of a competing value of the same
attribute (so "exposure=normal 0.6" counts against "exposure=bust"); a value nothing speaks to
has support 0. A category's score is the mean support of the values it fixes: categories are
attribute products, so the category whose fixed values the detectors back best wins. Verdicts
then come from the policy's table for that category. Where several categories are within
``tie_margin`` of the best, a rule's verdict is confident only as far as they agree on it.

The baseline abstains (category and verdicts ``None``) when nothing in the evidence bears on
the policy or the best score is below ``min_support``: detector silence is not a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from agents.perception.attributes import AttributeEvidence, by_attribute, map_attributes
from agents.perception.evidence import Evidence
from data.policy_models import Policy

MIN_SUPPORT = 0.25
TIE_MARGIN = 0.05


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class CategoryScore(_Model):
    category: str
    score: float


class RuleVerdict(_Model):
    """The baseline's verdict under one rule variant; ``verdict`` None means abstain."""

    rule: str
    verdict: str | None
    flagged: bool | None
    confidence: float


class BaselinePrediction(_Model):
    policy: str
    category: str | None
    """Best-supported category, None when abstaining."""
    confidence: float
    candidates: list[CategoryScore]
    """The best few categories with their scores (ties and near misses)."""
    verdicts: dict[str, RuleVerdict]
    attributes: list[AttributeEvidence]
    abstain_reason: str | None = None

    @property
    def abstained(self) -> bool:
        return self.category is None


def category_scores(policy: Policy, attributes: Sequence[AttributeEvidence]) -> list[CategoryScore]:
    """Every category's mean support, best first (ties keep the policy's category order)."""
    table = by_attribute(attributes)
    scores = []
    for key, category in policy.categories.items():
        supports = [_support(table.get(a, {}), v) for a, v in category.attributes.items()]
        scores.append(CategoryScore(category=key, score=round(sum(supports) / len(supports), 4)))
    return sorted(scores, key=lambda s: -s.score)


def predict(
    evidence: Evidence,
    policy: Policy,
    *,
    rules: Sequence[str] | None = None,
    min_support: float = MIN_SUPPORT,
    tie_margin: float = TIE_MARGIN,
) -> BaselinePrediction:
    """The baseline's category and verdict per rule variant (all variants by default)."""
    chosen = list(policy.rules) if rules is None else list(rules)
    attributes = map_attributes(evidence, policy)
    scores = category_scores(policy, attributes)
    best = scores[0]
    reason = None
    if not attributes:
        reason = "no detector evidence bears on this policy's attributes"
    elif best.score < min_support:
        reason = f"best category {best.category} has support {best.score:.2f} < {min_support}"
    if reason:
        return BaselinePrediction(
            policy=policy.name,
            category=None,
            confidence=0.0,
            candidates=scores[:3],
            verdicts={
                r: RuleVerdict(rule=r, verdict=None, flagged=None, confidence=0.0) for r in chosen
            },
            attributes=attributes,
            abstain_reason=reason,
        )
    contenders = [s for s in scores if s.score >= max(best.score - tie_margin, min_support)]
    verdicts = {}
    for rule in chosen:
        mass: dict[str, float] = {}
        for contender in contenders:
            label = policy.verdict(contender.category, rule)
            mass[label] = mass.get(label, 0.0) + contender.score
        label = policy.verdict(best.category, rule)
        agreement = mass[label] / sum(mass.values())
        verdicts[rule] = RuleVerdict(
            rule=rule,
            verdict=label,
            flagged=policy.is_flagged(label),
            confidence=round(best.score * agreement, 4),
        )
    return BaselinePrediction(
        policy=policy.name,
        category=best.category,
        confidence=best.score,
        candidates=scores[:3],
        verdicts=verdicts,
        attributes=attributes,
    )


def _support(values: dict[str, AttributeEvidence], value: str) -> float:
    own = values[value].confidence if value in values else 0.0
    rival = max((e.confidence for v, e in values.items() if v != value), default=0.0)
    return max(-1.0, min(1.0, own - rival))
