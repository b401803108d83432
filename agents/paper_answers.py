"""The paper pipeline's image-seeing call: three questions about one image, answered in turn.

Reproduces ``moderation explanation generation/vllm_data_generation.py`` of the authors'
release (zhaoyuzhi/ICM-Assistant): one request per image, the image attached, seeded with the
category's sentence (``short_desc[...]``: "It is known that ..."), asking in order for (1) the
explicit description (movements, clothes), (2) the implicit description (overall atmosphere) and
(3) why the image is or is not <term> from both. The verdict is not named: the model argues from
the seed and what it sees. The release answers in free text; we ask for the same three answers
as one pydantic object (``agents.schemas.paper_answers_model``), one field per question.

Each answer then goes through the seed-leak filter (``evaluators.seed_leak``, the release's
``check_all_MLLM_output_content.py``); the unfiltered answers stay in the stage's output row and
trace. The explanation is stored under the sample's first rule variant with the rule table's
verdict as its label (the release labels every image by its category), and no conclusion
sentence is added (the release adds none).
"""

from __future__ import annotations

from typing import Any

from agents.describer import category_attributes_text
from agents.explainer import required_category
from agents.models.result import CallResult
from agents.role_call import ask_role
from agents.schemas import PaperAnswersValue, paper_answers_model
from agents.stages import Inputs, StageCall, StageSpec
from evaluators.seed_leak import filter_seed_leaks

NAME = "paper_answers"


def first_rule(inputs: Inputs) -> str:
    """The rule variant the paper pipeline's explanation (and so its Q-A) is about: the
    sample's first."""
    return str(inputs["sample"].rules[0])


def _category(inputs: Inputs) -> str:
    return required_category(
        inputs, "the paper pipeline is seeded with the category's sentence, and the sample has "
        "no category",
    )  # fmt: skip


async def _ask(call: StageCall, inputs: Inputs) -> CallResult[PaperAnswersValue]:
    category = _category(inputs)
    images = call.images()
    sees = bool(images) and await call.layer.sees_images(NAME)
    variables = {
        "has_image": sees,
        "term": call.policy.term,
        "seed": call.policy.categories[category].description,
        "given_description": inputs["sample"].given_description,
        "evidence": inputs.get("evidence_text"),
        "category": category,
        "category_attributes": category_attributes_text(call.policy, category),
        "feedback": call.feedback,
    }
    return await ask_role(
        call.layer,
        role=NAME,
        schema=paper_answers_model(call.policy.term, call.lengths),
        variables=variables,
        images=images,
        sample_id=call.sample_id,
        stage=NAME,
        attempt=call.attempt,
    )


def _write(value: PaperAnswersValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    """The filtered answers as the sample's description, context and explanation; a sample
    whose explanation the filter empties ends ``rejected`` with that reason."""
    mode = call.paper.seed_leak_filter
    explicit = filter_seed_leaks(value.explicit_description, mode)
    implicit = filter_seed_leaks(value.implicit_description, mode)
    explanation = filter_seed_leaks(value.explanation, mode)
    dropped = [*explicit.dropped, *implicit.dropped, *explanation.dropped]
    update: dict[str, Any] = {
        "description": explicit.text,
        "context": implicit.text,
        "seed_leaks": dropped,
    }
    if not explanation.text:
        reason = f"{NAME}: the seed-leak filter ({mode}) left no explanation: {dropped[:2]}"
        return update | {"status": "rejected", "reasons": [reason]}
    rule = first_rule(inputs)
    verdict = call.policy.verdict(_category(inputs), rule)
    item = {
        "explanation": explanation.text,
        "argument": explanation.text,
        "verdict": verdict,
        "verdict_source": "rule_table",
        "expected": verdict,
        "question": f"{call.policy.question} Explain why.",  # the release's base question
    }
    return update | {"explanations": {rule: item}}


STAGE = StageSpec(
    name=NAME,
    order=10,
    reads=("sample", "category", "evidence_text"),
    writes={"description": None, "context": None, "explanations": {}, "seed_leaks": []},
    schema=lambda call, inputs: paper_answers_model(call.policy.term, call.lengths),
    ask=_ask,
    write=_write,
    summary="three questions (explicit, implicit, explanation)",
    about_rule=first_rule,
)
