"""The sample page's record: per rule variant, the verdict, its argument and that rule's Q-A.

What a sample produced is what a person opens its page for, so the page shows it first and the
timeline (how it was produced) after it. Each rule's block also says when the argument argues
for another label than the verdict above it (a rejected sample keeps such an argument: the
critic's ``verdict_matches_rule`` check is why it was rejected). "Argues for" is read as the
critic reads it (:func:`evaluators.text_checks.stated_labels`: a denial states the other
label), so the page and the critic cannot disagree about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from data.policy import PolicyError, load_policy
from evaluators.text_checks import stated_labels


def policy_labels(policy_name: str | None) -> list[str]:
    """The policy's verdict labels, or none when it cannot be loaded (a renamed policy file):
    the page then shows no disagreement rather than a guessed one."""
    if not policy_name:
        return []
    try:
        return list(load_policy(policy_name).verdicts)
    except (PolicyError, OSError, ValueError):
        return []


def argued_against(explanation: str, verdict: str | None, labels: Sequence[str]) -> list[str]:
    """The labels other than ``verdict`` that the explanation states of the image."""
    if not verdict or not labels or verdict not in labels:
        return []
    return [label for label in stated_labels(explanation or "", labels) if label != verdict]


def rule_records(
    explanations: list[dict[str, Any]], qa: list[dict[str, Any]], labels: Sequence[str]
) -> dict[str, Any]:
    """``{"rules": [...], "shared": [...]}``: one block per rule variant (its explanation, the
    labels its argument states against the verdict, its own Q-A items) and the Q-A items
    written for every rule (``rule_variant`` empty). A rule with Q-A but no explanation still
    gets its block."""
    by_rule: dict[str, dict[str, Any]] = {}
    for x in explanations:
        by_rule[x["rule_variant"]] = {
            **x,
            "argued_against": argued_against(x["explanation"], x["verdict"], labels),
            "qa": [],
        }
    shared = []
    for item in qa:
        rule = item.get("rule_variant")
        if not rule:
            shared.append(item)
            continue
        block = by_rule.setdefault(
            rule,
            {"rule_variant": rule, "verdict": None, "expected_verdict": None, "question": None,
             "explanation": None, "argued_against": [], "qa": []},
        )  # fmt: skip
        block["qa"].append(item)
    return {"rules": [by_rule[r] for r in sorted(by_rule)], "shared": shared}
