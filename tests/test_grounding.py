"""The grounding check and the evidence text: detector guesses are not facts (issue 22).

The evidence fixtures are the perception toolkit's output on the bundled images; the texts
are the demo's outputs the issue quotes (``tests/fixtures/grounding/issue22_quoted.json``).
No model and no perception extra is needed: evidence is read from JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.perception.evidence import OBJECT_NAMED, Evidence
from agents.perception.grounding import find_ungrounded, ungrounded_claims

FIXTURES = Path(__file__).parent / "fixtures" / "grounding"
QUOTED = json.loads((FIXTURES / "issue22_quoted.json").read_text(encoding="utf-8"))


def evidence(image: str) -> Evidence:
    return Evidence.load((FIXTURES / f"{image}.evidence.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", QUOTED["ungrounded"], ids=lambda c: c["image"])
def test_quoted_ungrounded_texts_fail(case: dict[str, Any]) -> None:
    found = {c.check for c in ungrounded_claims(case["text"], evidence(case["image"]))}
    assert set(case["checks"]) <= found


@pytest.mark.parametrize("case", QUOTED["grounded"], ids=lambda c: c["image"])
def test_texts_that_keep_to_the_evidence_pass(case: dict[str, Any]) -> None:
    assert find_ungrounded(case["text"], evidence(case["image"])) == []


def test_a_low_label_the_annotation_uses_is_not_a_guess() -> None:
    seen = evidence("flower")
    text = "A close-up of a daisy."
    assert find_ungrounded(text, seen)
    assert find_ungrounded(text, seen, allowed="It is known that the image shows a daisy.") == []


def test_negated_mentions_are_not_claims() -> None:
    seen = evidence("teasing_meme")
    assert find_ungrounded("A pink card with text; there are no people in it.", seen) == []
    assert find_ungrounded("The card shows a woman.", seen)


def test_greyscale_image_may_not_be_given_a_colour() -> None:
    found = find_ungrounded("A man films on a green lawn.", evidence("camera"))
    assert found and "greyscale" in found[0]


def test_message_names_each_guess_and_its_score() -> None:
    case = QUOTED["ungrounded"][0]
    message = find_ungrounded(case["text"], evidence("flower"))[0]
    assert "'daisy' (0.19)" in message and "'chambered nautilus' (0.03)" in message


def test_evidence_text_marks_confidence_and_leaves_out_guesses() -> None:
    flower = evidence("flower").as_text()
    assert "measured fact" not in flower
    assert "daisy" not in flower and "hen-of-the-woods" not in flower
    assert "measured: in colour" in flower
    rocket = evidence("rocket").as_text()
    assert "missile (0.31, uncertain guess)" in rocket
    assert "drilling platform" not in rocket
    camera = evidence("camera").as_text()
    assert "greyscale" in camera and "tripod (0.95, likely)" in camera
    meme = evidence("teasing_meme").as_text()
    assert "flat graphic" in meme and "covers" in meme


def test_low_exposure_scores_are_marked_as_guesses() -> None:
    data = json.loads((FIXTURES / "flower.evidence.json").read_text(encoding="utf-8"))
    data["exposure"] = [
        {"label": "MALE_GENITALIA_EXPOSED", "part": "male genitalia", "exposed": True,
         "score": 0.29, "box": {"x": 0, "y": 0, "w": 10, "h": 10}},
        {"label": "BELLY_EXPOSED", "part": "belly", "exposed": True, "score": 0.4,
         "box": {"x": 0, "y": 0, "w": 10, "h": 10}},
    ]  # fmt: skip
    text = Evidence.load(data).as_text()
    assert "male genitalia" not in text  # under the reporting threshold: left out
    assert "belly 0.40 (uncertain guess)" in text


def test_threshold_splits_named_and_unnamed_labels() -> None:
    seen = evidence("chelsea")
    assert all(label.score >= OBJECT_NAMED for label in seen.named_labels())
    assert all(label.score < OBJECT_NAMED for label in seen.unnamed_labels())
    assert len(seen.named_labels()) + len(seen.unnamed_labels()) == len(seen.objects.top)


def test_audit_lists_the_quoted_defects_and_nothing_in_clean_records() -> None:
    from agents.perception.grounding_audit import AuditRecord, audit
    from data.policy import load_policy

    policies = {"general_safety": load_policy("general_safety")}

    def record(image: str, text: str) -> AuditRecord:
        return AuditRecord(
            sample_id=image, image=image, policy="general_safety", category="everyday",
            description=text, explanations={"R2": text}, qa=[],
            evidence=evidence(image).model_dump(),
        )  # fmt: skip

    bad = [record(c["image"], c["text"]) for c in QUOTED["ungrounded"]
           if c["image"] != "teasing_meme"]  # fmt: skip
    found = audit(bad, policies)
    assert {f.image for f in found} == {r.image for r in bad}
    assert {f.where for f in found} == {"description", "explanation R2"}
    good = [record(c["image"], c["text"]) for c in QUOTED["grounded"]
            if c["image"] not in ("teasing_meme", "lottery_ticket")]  # fmt: skip
    assert audit(good, policies) == []


def _meme_grounding_failures(qa: dict[str, list[dict[str, Any]]]) -> list[Any]:
    """The critic's failed ``grounded_in_evidence`` checks of the text-only meme (no person
    found) under R1 with ``qa`` as its Q-A set."""
    from agents.critic import deterministic_checks
    from data.policy import load_policy
    from graphs.state import SampleSpec

    policy = load_policy("icm_sexy")
    spec = SampleSpec(sample_id="s", run_id="r", policy="icm_sexy", rules=("R1",),
                      category="sexy_imagetext")  # fmt: skip
    argument = "Under 13 in a conservative culture, a text that says it feels sexy is sexy."
    explanations = {"R1": {"verdict": "sexy", "expected": "sexy", "argument": argument,
                           "explanation": argument, "verdict_source": "rule_table"}}  # fmt: skip
    state = {"sample": spec, "category": "sexy_imagetext", "evidence":
             evidence("teasing_meme").model_dump(), "description": "", "explanations":
             explanations, "qa": qa, "qa_rule": "R1"}  # fmt: skip
    return [c for c in deterministic_checks(policy, state, grounding_finder=find_ungrounded)
            if not c.passed and c.name == "grounded_in_evidence"]  # fmt: skip


def test_the_critic_holds_q_a_items_to_the_evidence_as_the_audit_does() -> None:
    """The demo's accepted teasing meme (a text-only graphic, no person found) carried the Q-A
    answer "The image is about a child or a conservative viewer being sexually excited and
    flirtatious."; the audit found it, the critic did not read Q-A. It does now."""
    answer = "The image is about a child or a conservative viewer being sexually excited."
    qa = {"yes_no": [], "multiple_choice": [], "how": [],
          "what": [{"question": "What is the image about?", "answer": answer}]}  # fmt: skip
    failed = _meme_grounding_failures(qa)
    assert [(c.name, c.stage) for c in failed] == [("grounded_in_evidence", "qa_writer")]
    assert "What is the image about?" in failed[0].message and "no_person" in failed[0].message


def _meme_mc_failures(options: list[str], answer: str) -> list[str]:
    item = {"question": "What does the image show?", "options": options, "answer": answer}
    qa = {"yes_no": [], "what": [], "how": [], "multiple_choice": [item]}
    return [c.message for c in _meme_grounding_failures(qa)]


def test_a_distractor_claims_nothing_but_the_picked_option_does() -> None:
    """The demo's teasing meme was rejected for its multiple-choice distractors alone ("A
    picture of a woman with pink hair" beside the right "A text meme with pink, words, and
    flirtation"): a wrong option is wrong by design. The option the answer picks is held to
    the evidence like any answer (its second attempt picked the woman)."""
    from agents.perception.grounding_audit import qa_claim_text

    options = [
        "A text meme with pink, words, and flirtation",
        "A pink poster with a kiss",
        "A picture of a woman with pink hair",
        "A picture of a man with pink hair",
    ]
    assert _meme_mc_failures(options, "A") == []
    picked_woman = [options[2], options[3], options[0], options[1]]
    failures = _meme_mc_failures(picked_woman, "A")
    assert len(failures) == 1 and "no_person" in failures[0]
    assert "woman" in qa_claim_text("Q?", picked_woman, "A. A picture of a woman")
    assert "woman" not in qa_claim_text("Q?", options, "A")
    assert qa_claim_text("Q?", options, "E") == "Q? E"  # no such letter: nothing picked
