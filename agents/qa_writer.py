"""The Q-A writer: question-answer pairs answerable from the description and explanation.

The model writes the configured number of yes/no, multiple-choice, what and how items (the
paper's 3/3/2/2 by default). One yes/no question per selected rule variant about the verdict is
added from the rule table itself (``verdict_questions``): its answer is known, so it is written
by the table, not guessed by a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.explainer import rule_question
from agents.role_call import LayerLike, ask_role
from agents.schemas import FULL, Lengths, qa_model
from data.policy_models import Policy


@dataclass(frozen=True)
class QACounts:
    yes_no: int = 3
    multiple_choice: int = 3
    what: int = 2
    how: int = 2


def verdict_questions(policy: Policy, rules: list[str], verdicts: dict[str, str]) -> list[dict]:
    """One yes/no item per rule variant whose answer comes from the rule table's verdict."""
    items = []
    for rule in rules:
        question = rule_question(policy, rule).removesuffix(" Explain why.")
        answer = "Yes." if policy.is_flagged(verdicts[rule]) else "No."
        items.append({"qa_type": "yes_no", "question": question, "answer": answer, "rule": rule})
    return items


async def write_qa(
    layer: LayerLike,
    policy: Policy,
    *,
    rule: str,
    description: str,
    explanation: str,
    verdict: str,
    counts: QACounts,
    feedback: str | None,
    sample_id: str,
    attempt: int,
    lengths: Lengths = FULL,
) -> Any:
    variables = {
        "term": policy.term,
        "rule_id": rule,
        "rule_description": policy.rules[rule].description,
        "description": description,
        "explanation": explanation,
        "verdict": verdict,
        "n_yes_no": counts.yes_no,
        "n_mc": counts.multiple_choice,
        "n_what": counts.what,
        "n_how": counts.how,
        "feedback": feedback,
    }
    schema = qa_model(counts.yes_no, counts.multiple_choice, counts.what, counts.how, lengths)
    return await ask_role(
        layer,
        role="qa_writer",
        schema=schema,
        variables=variables,
        sample_id=sample_id,
        stage="qa_writer",
        attempt=attempt,
    )
