"""The describer is told which words count as mentioning each annotated attribute (issue 15):
qwen, describing from detector evidence, wrote "a person wearing a military uniform" for an
``upper_normal`` image and was rejected for never mentioning region=upper."""

from __future__ import annotations

import asyncio

from scripted_layer import Ask, ScriptedLayer

from agents.describer import attribute_hints, describe
from data.policy import load_policy
from evaluators.text_checks import attribute_mentions, check_attributes_mentioned


def test_hints_name_the_phrases_the_check_accepts() -> None:
    policy = load_policy("horrifying")
    hints = attribute_hints(policy, "normal_person")
    assert hints == "subject=human (e.g. human, person, people, man)"  # depiction=normal: none
    # a description using a hinted phrase passes the check the hint is for
    text = "A person in a coat films with a camera on a tripod."
    assert check_attributes_mentioned(text, attribute_mentions(policy, "normal_person")).passed


def test_the_prompt_carries_the_hints_only_with_an_annotation() -> None:
    policy = load_policy("icm_sexy")
    answer = {"description": "The upper body of a woman in a covering uniform.", "key_elements":
              ["upper body"]}  # fmt: skip
    layer = ScriptedLayer(
        lambda ask: (
            answer | {"proposed_category": "upper_normal"}
            if "proposed_category" in ask.schema.model_fields
            else answer
        )
    )

    def ask(category: str | None) -> Ask:
        asyncio.run(
            describe(layer, policy, category=category, evidence_text=None, images=(),
                     feedback=None, sample_id="s", attempt=1)
        )  # fmt: skip
        return layer.calls[-1]

    annotated = ask("upper_normal").user
    assert "region=upper (e.g. upper body, upper, chest, breast)" in annotated
    assert "exposure=normal (e.g. normal, covered, covering, fully clothed)" in annotated
    assert "Say in the description" not in ask(None).user
