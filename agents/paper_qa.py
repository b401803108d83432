"""The paper pipeline's first Q-A pass: yes/no, what and how questions from the explanation.

Reproduces ``moderation q-a pair generation/vllm_data_generation.py --q_type qa`` of the
authors' release (zhaoyuzhi/ICM-Assistant): a text-only model, the system message of a content
moderator, asked for 6 yes/no, 2 what and 2 how questions with answers, all derivable from the
text it is given (the counts come from ``GenerateConfig.qa``; ``--preset paper`` sets 6/2/2).
The release asks for a table; we ask for the same items as a pydantic object
(``agents.schemas.qa_model`` with no multiple-choice item). Its multiple-choice questions come
from a separate pass (``agents.paper_mc``), or, with ``paper.qa_passes: mixed`` (the release's
``--q_type mix``), from this pass, which then asks all four kinds. "All questions are related to
content moderation" is a sentence of the release's mixed prompt only
(``PaperOptions.moderation_focus``).
"""

from __future__ import annotations

from typing import Any

from agents.models.result import CallResult
from agents.paper_answers import first_rule
from agents.role_call import ask_role
from agents.schemas import QAValue, qa_model
from agents.stages import Inputs, StageCall, StageSpec

NAME = "paper_qa"


qa_rule = first_rule  # the Q-A is about the explanation's rule


def source_text(call: StageCall, inputs: Inputs) -> str:
    """What the Q-A passes read: the stored explanation (which under ``paper.explanation:
    merged`` already is the three answers merged), or all three answers in order."""
    explanation = inputs["explanations"][qa_rule(inputs)]["explanation"]
    if call.paper.qa_from == "explanation" or call.paper.explanation == "merged":
        return str(explanation)
    parts = (inputs.get("description"), inputs.get("context"), explanation)
    return " ".join(str(p) for p in parts if p)


def mixed(call: StageCall) -> bool:
    """Whether this pass asks every kind at once (``paper.qa_passes: mixed``)."""
    return call.paper.qa_passes == "mixed" and call.qa_counts.multiple_choice > 0


def variables(call: StageCall, inputs: Inputs, *, mixed_pass: bool = False) -> dict[str, Any]:
    """The pass's template variables; the moderation sentence goes where ``paper.
    moderation_focus`` says: every pass, a mixed pass only (the release's way), or none."""
    counts = call.qa_counts
    focus = call.paper.moderation_focus
    return {
        "source": source_text(call, inputs),
        "n_yes_no": counts.yes_no,
        "n_mc": counts.multiple_choice,
        "n_what": counts.what,
        "n_how": counts.how,
        "mixed": mixed_pass,
        "moderation_focus": focus == "always" or (focus == "mixed" and mixed_pass),
        "feedback": call.feedback,
    }


def _schema(call: StageCall) -> type[QAValue]:
    counts = call.qa_counts
    n_mc = counts.multiple_choice if mixed(call) else 0
    return qa_model(counts.yes_no, n_mc, counts.what, counts.how, call.lengths)


async def ask_pass(
    name: str, schema: type[QAValue], call: StageCall, inputs: Inputs
) -> CallResult[QAValue]:
    """One Q-A pass (this one or the multiple-choice one): role ``name``'s templates over the
    pass's source text."""
    return await ask_role(
        call.layer,
        role=name,
        schema=schema,
        variables=variables(call, inputs, mixed_pass=name == NAME and mixed(call)),
        sample_id=call.sample_id,
        stage=name,
        attempt=call.attempt,
    )


async def _ask(call: StageCall, inputs: Inputs) -> CallResult[QAValue]:
    return await ask_pass(NAME, _schema(call), call, inputs)


def _write(value: QAValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    return {"qa": value.model_dump(), "qa_rule": qa_rule(inputs)}


STAGE = StageSpec(
    name=NAME,
    order=40,
    reads=("sample", "description", "context", "explanations"),
    writes={"qa": None, "qa_rule": None},
    schema=lambda call, inputs: _schema(call),
    ask=_ask,
    write=_write,
    summary="Q-A (yes/no, what, how)",
    about_rule=qa_rule,
)
