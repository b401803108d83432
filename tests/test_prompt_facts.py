"""What the explainer and the Q-A writer are told besides the texts, and why.

Reading only the description and the explanation of a text-only meme ("FEELING SEXY TODAY
;)"), the demo's Q-A writer wrote "the person is feeling sexy" and offered "a woman with pink
hair" as the answer. (Telling the explainer in words what its verdict means for the audience
was tried too and made it write about fitness all the more: 0 of the 4 ``icm_sexy`` samples.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from scripted_layer import Ask, ScriptedLayer

from agents.perception.evidence import Evidence
from agents.qa_writer import QACounts, _nobody_shown, write_qa
from data.policy import load_policy

FIXTURES = Path(__file__).parent / "fixtures" / "grounding"


def _evidence(image: str) -> dict[str, Any]:
    text = (FIXTURES / f"{image}.evidence.json").read_text(encoding="utf-8")
    return Evidence.load(text).model_dump()


def _qa_prompt(nobody_shown: bool) -> str:
    def answer(ask: Ask) -> dict[str, Any]:
        return {"yes_no": [{"question": "Is the image sexy?", "answer": "Yes"}],
                "multiple_choice": [], "what": [], "how": []}  # fmt: skip

    layer = ScriptedLayer(answer)
    asyncio.run(write_qa(layer, load_policy("icm_sexy"), rule="R1", description="A meme.",
                         explanation="It is sexy.", verdict="sexy", feedback=None,
                         counts=QACounts(1, 0, 0, 0), sample_id="s", attempt=1,
                         nobody_shown=nobody_shown))  # fmt: skip
    return layer.calls[0].user


def test_the_q_a_writer_is_told_when_nobody_is_in_the_image() -> None:
    assert "Nobody is in the image" in _qa_prompt(True)
    assert "Nobody is in the image" not in _qa_prompt(False)
    # decided from the evidence: the text-only meme (a flat graphic, no face, no body part)
    # shows nobody; a photograph never counts as showing nobody (people are missed in photos)
    assert _nobody_shown({"evidence": _evidence("teasing_meme")})
    assert not _nobody_shown({"evidence": _evidence("flower")})
    assert not _nobody_shown({})


def test_the_explainer_is_told_what_each_annotated_value_means() -> None:
    """Given ``region=whole, exposure=normal`` alone, the demo's explainer wrote of a man in a
    long coat "his body is fully exposed, which is not appropriate for children"."""
    from agents.explainer import explain

    def argument(ask: Ask) -> dict[str, Any]:
        return {"explanation": "Under 13 in a conservative culture, covering clothes are fine."}

    layer = ScriptedLayer(argument)
    asyncio.run(explain(layer, load_policy("icm_sexy"), rule="R1", category="whole_normal",
                        description="A man.", context=None, feedback=None, sample_id="s",
                        attempt=1))  # fmt: skip
    prompt = layer.calls[0].user
    assert "region=whole (the whole body, head to feet)" in prompt
    assert "exposure=normal (little skin is bare; ordinary covering clothes)" in prompt
