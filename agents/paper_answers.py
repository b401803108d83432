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
sentence is added (the release adds none). With ``paper.explanation: merged`` (the paper
preset) the stored explanation is the three answers merged, the text the release trained on
and wrote its Q-A from; ``paper.seeds: release`` seeds with the release script's sentences;
``paper.image_call: release`` sends the image first in one user message, no system message.
"""

from __future__ import annotations

from typing import Any

from agents.describer import category_attributes_text
from agents.explainer import required_category
from agents.models.result import CallResult
from agents.role_call import ask_role
from agents.schemas import PaperAnswersValue, paper_answers_model
from agents.stages import Inputs, StageCall, StageSpec
from evaluators.seed_leak import Filtered, LeakMode, filter_seed_leaks

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
        "seed": seed_sentence(call, category),
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
        one_message=call.paper.image_call == "release",
    )


def seed_sentence(call: StageCall, category: str) -> str:
    """The release's sentence for ``category`` when its seeds were read (``paper.seeds:
    release``), else (or for a category the release has none for) the policy's own."""
    seeds = call.paper.seeds or {}
    return seeds.get(category) or call.policy.categories[category].description


def merged_answers(*answers: str) -> str:
    """The three answers as one text, as the release's ``post_process_MLLM_output_4LLM_all_
    categories.py`` merges a model's answer lines: joined with spaces, double spaces made one.
    (It also deletes "1. " and "2. ", the numbering of its free-text answers; ours come as
    separate fields, unnumbered.)"""
    text = " ".join(a.strip() for a in answers if a and a.strip())
    return text.replace("  ", " ").strip()


def _explanation(
    value: PaperAnswersValue, mode: LeakMode, merged: bool
) -> tuple[Filtered, Filtered, Filtered]:
    """(explicit, implicit, explanation) after the filter. ``merged``: the explanation is the
    three answers merged; under ``release`` the filter runs once over that merged text (a leak
    in answer 1 cuts answers 2 and 3, as in the release), otherwise over each answer apart."""
    explicit = filter_seed_leaks(value.explicit_description, mode)
    implicit = filter_seed_leaks(value.implicit_description, mode)
    answer = filter_seed_leaks(value.explanation, mode)
    if not merged:
        return explicit, implicit, answer
    if mode == "release":
        raw = merged_answers(value.explicit_description, value.implicit_description,
                             value.explanation)  # fmt: skip
        return explicit, implicit, filter_seed_leaks(raw, mode)
    text = merged_answers(explicit.text, implicit.text, answer.text)
    return explicit, implicit, Filtered(text, ())


def _write(value: PaperAnswersValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    """The filtered answers as the sample's description, context and explanation; a sample
    whose explanation the filter empties ends ``rejected`` with that reason."""
    mode = call.paper.seed_leak_filter
    explicit, implicit, explanation = _explanation(value, mode, call.paper.explanation == "merged")
    dropped = list(dict.fromkeys([*explicit.dropped, *implicit.dropped, *explanation.dropped]))
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
