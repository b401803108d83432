"""The paper pipeline's separate multiple-choice pass: four-option questions from the same text.

Reproduces ``moderation q-a pair generation/vllm_data_generation.py --q_type mc`` of the
authors' release (zhaoyuzhi/ICM-Assistant): 5 multiple-choice questions (4 choices, A-D) with
their answers, asked apart from the yes/no/what/how pass (``agents.paper_qa``) and from the same
text. The items join the sample's Q-A set (state key ``qa``), so the store, the checks and every
export see one set.
"""

from __future__ import annotations

from typing import Any

from agents.models.result import CallResult
from agents.paper_qa import ask_pass, qa_rule
from agents.schemas import QAValue, qa_model
from agents.stages import Inputs, StageCall, StageSpec

NAME = "paper_mc"


def _schema(call: StageCall) -> type[QAValue]:
    return qa_model(0, call.qa_counts.multiple_choice, 0, 0, call.lengths)


async def _ask(call: StageCall, inputs: Inputs) -> CallResult[QAValue]:
    return await ask_pass(NAME, _schema(call), call, inputs)


def _write(value: QAValue, call: StageCall, inputs: Inputs) -> dict[str, Any]:
    """The first pass's items with these multiple-choice items added."""
    qa = dict(inputs.get("qa") or {"yes_no": [], "what": [], "how": []})
    return {"qa": qa | {"multiple_choice": value.model_dump()["multiple_choice"]}}


STAGE = StageSpec(
    name=NAME,
    order=50,
    reads=("sample", "description", "context", "explanations", "qa"),
    # ``qa`` is the first pass's key: a redo of this pass rewrites it from the first pass's
    # items (kept in the state), a redo of an earlier stage resets it with the first pass
    writes={"qa": None},
    schema=lambda call, inputs: _schema(call),
    ask=_ask,
    write=_write,
    summary="Q-A (multiple choice)",
    about_rule=qa_rule,
)
