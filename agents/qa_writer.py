"""The Q-A writer: question-answer pairs answerable from the description and explanation.

The model writes the configured number of yes/no, multiple-choice, what and how items (the
paper's 3/3/2/2 by default). One yes/no question per selected rule variant about the verdict is
added from the rule table itself (``verdict_questions``): its answer is known, so it is written
by the table, not guessed by a model. The model writes about the sample's first rule variant.
"""

from __future__ import annotations

import re
from dataclasses import astuple
from typing import Any

from agents.explainer import rule_question
from agents.models.result import CallResult
from agents.perception.evidence import Evidence
from agents.role_call import LayerLike, ask_role
from agents.schemas import FULL, Lengths, QACounts, QAValue, qa_model
from agents.stages import Inputs, StageCall, StageSpec
from data.policy_models import Policy

__all__ = ["STAGE", "QACounts", "verdict_questions", "write_qa"]


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
    nobody_shown: bool = False,
) -> CallResult[QAValue]:
    """``nobody_shown``: the detectors found no person in a flat graphic. The writer reads only
    the texts, and of the demo's text-only meme ("FEELING SEXY TODAY ;)") it wrote "the person
    is feeling sexy" and "a woman with pink hair" until told that nobody is in the image."""
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
        "nobody_shown": nobody_shown,
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


def _rule(inputs: Inputs) -> str:
    return str(inputs["sample"].rules[0])


async def _ask(call: StageCall, inputs: Inputs) -> CallResult[QAValue]:
    rule = _rule(inputs)
    explanation = inputs["explanations"][rule]
    return await write_qa(
        call.layer,
        call.policy,
        rule=rule,
        description=inputs.get("description") or "",
        explanation=explanation["explanation"],
        verdict=explanation["verdict"],
        counts=call.qa_counts,
        feedback=call.feedback,
        sample_id=call.sample_id,
        attempt=call.attempt,
        lengths=call.lengths,
        nobody_shown=_nobody_shown(inputs),
    )


def _nobody_shown(inputs: Inputs) -> bool:
    evidence = inputs.get("evidence")
    return evidence is not None and Evidence.load(evidence).nobody_shown()


#: a letter a model put in front of an option ("A. Card game"): the record lists options
#: under their own letters, so it would read "A. A. Card game"
_OPTION_LETTER = re.compile(r"^\(?[A-Da-d][.):]\s+(?=\S)")


def unlettered(option: str) -> str:
    """An option without the letter a model wrote in front of it (the trace keeps it)."""
    return _OPTION_LETTER.sub("", option, count=1)


def unlettered_options(options: list[str]) -> list[str]:
    """The options without the letters a model wrote in front of them: "A. ...", and, when
    the second to fourth each start with their own letter and a bare space ("B a pink
    background", "C a pink ...", the demo's meme), those too ("A " alone is an article)."""
    out = [unlettered(o) for o in options]
    own = [re.match(rf"^[{c}{c.lower()}]\s+\S", o) for c, o in zip("BCD", out[1:4], strict=False)]
    if len(out) == 4 and all(own):
        out[1:] = [o[1:].lstrip() for o in out[1:]]
        if re.match(r"^[Aa]\s+[Aa]\b", out[0]):  # "A a pink ...": the article follows the letter
            out[0] = out[0][1:].lstrip()
    return out


def _write(value: QAValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    qa = value.model_dump()
    for item in qa["multiple_choice"]:
        item["options"] = unlettered_options(item["options"])
    return {"qa": qa, "qa_rule": _rule(inputs)}


STAGE = StageSpec(
    name="qa_writer",
    order=40,
    reads=("sample", "description", "explanations"),
    writes={"qa": None, "qa_rule": None},
    schema=lambda call, inputs: qa_model(*astuple(call.qa_counts), call.lengths),
    ask=_ask,
    write=_write,
    summary="Q-A writer",
    about_rule=_rule,
)
