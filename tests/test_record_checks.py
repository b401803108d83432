"""Record checks: Q-A against the record, pipeline talk, arguments resting on the rule.

The failing texts are the demo outputs issue 22 quotes (the critic, LLM included, passed all
of them); the passing ones are what a correct record says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.critic import deterministic_checks
from data.policy import load_policy
from data.policy_models import Policy
from evaluators.record_checks import (
    copied_feedback,
    invented_audience,
    kind_word_problems,
    mc_record_problems,
    pipeline_talk,
    qa_verdict_problems,
    question_set_problems,
    record_checks,
    repeated_sentence,
    restated_description_problems,
    rests_on_rule,
    unsupported_number_problems,
)


@pytest.fixture(scope="module")
def safety() -> Policy:
    return load_policy("general_safety")


@pytest.fixture(scope="module")
def gambling() -> Policy:
    return load_policy("gambling")


def mc(question: str, options: list[str], answer: str) -> dict[str, Any]:
    return {"multiple_choice": [{"question": question, "options": options, "answer": answer}]}


def test_mc_answer_that_denies_a_safe_verdict_fails(safety: Policy) -> None:
    qa = mc("Is the image safe?", ["The image is safe", "The image is not safe",
                                   "It shows violence", "It shows hate"], "B")  # fmt: skip
    assert qa_verdict_problems(qa, "safe", safety)
    qa["multiple_choice"][0]["answer"] = "A"
    assert qa_verdict_problems(qa, "safe", safety) == []


def test_open_answer_stating_the_other_label_fails(gambling: Policy) -> None:
    qa = {"what": [{"question": "What is the verdict?",
                    "answer": "The image is gambling-related."}]}  # fmt: skip
    assert qa_verdict_problems(qa, "not gambling-related", gambling)
    assert qa_verdict_problems(qa, "gambling-related", gambling) == []


def test_mc_answer_the_record_contradicts_fails() -> None:
    qa = mc("What type of game is shown?", ["Card game", "Board game", "Video game",
                                            "Sports game"], "A")  # fmt: skip
    record = "A drawn invitation to a family board game night with two dice and no stake."
    assert mc_record_problems(qa, record)
    qa["multiple_choice"][0]["answer"] = "B"
    assert mc_record_problems(qa, record) == []


def test_questions_about_the_question_set_fail() -> None:
    qa = {"what": [
        {"question": "What are the four distinct answer options for the multiple-choice "
                     "question?", "answer": "Yes, no, maybe, unsure."},
        {"question": "What is the answer to the 'what' question?", "answer": "A dice game."},
    ]}  # fmt: skip
    assert len(question_set_problems(qa)) == 2
    fine = {"what": [{"question": "What is written on the card?", "answer": "BET NOW."}]}
    assert question_set_problems(fine) == []


def test_what_question_filed_as_how_fails() -> None:
    assert kind_word_problems({"how": [{"question": "What colour is the ticket?", "answer": "x"}]})
    assert not kind_word_problems(
        {"how": [{"question": "How does the text invite people to bet?", "answer": "x"}]}
    )


def test_same_sentence_twice_fails() -> None:
    text = "The dice are drawn in white. There is no stake. The dice are drawn in white."
    assert repeated_sentence(text) == "The dice are drawn in white."
    assert repeated_sentence("The dice are drawn. There is no stake at all.") is None


def test_description_copying_the_critic_fails() -> None:
    text = "The reviewer's rejection was based on the missing key elements."
    assert pipeline_talk(text) is not None
    feedback = "the description never mentions the annotated object=dice (e.g. dice, die, craps)"
    assert copied_feedback("It never mentions the annotated object=dice (e.g. dice, die", feedback)
    assert pipeline_talk("A drawn invitation with two dice.") is None


def test_invented_audiences_fail(gambling: Policy) -> None:
    board = ("The image is not suitable for individuals who are not interested in board games "
             "or who do not have children in their lives.")  # fmt: skip
    lottery = ("It is not suitable for people who do not have the necessary skills to win the "
               "lottery.")  # fmt: skip
    assert invented_audience(board, gambling, "R1")
    assert invented_audience(lottery, gambling, "R2")
    assert invented_audience("It is not suitable for children who are under 13.", gambling,
                             "R1") is None  # fmt: skip
    # "the audience" is the rule's own (the demo's board game was rejected for it); a kind of
    # audience the rule does not name is still invented
    own = "A family game night with dice and no stake is appropriate for the audience."
    assert invented_audience(own, gambling, "R2") is None
    assert invented_audience("It is appropriate for a gamer audience.", gambling, "R2")


def test_argument_must_use_the_rules_audience_or_reason(gambling: Policy) -> None:
    reason = gambling.reason("lottery_tickets", "R2")
    assert rests_on_rule("For adults where gambling is legal, a ticket is ordinary.",
                         gambling, "R2", reason)  # fmt: skip
    assert rests_on_rule("Lottery tickets are a legal, everyday product.", gambling, "R2", reason)
    assert not rests_on_rule("The ticket is bright yellow with six boxes.", gambling, "R2", reason)


class _Sample:
    given_description = None


def _state(**extra: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "sample": _Sample(),
        "category": "board_game",
        "description": "A drawn invitation to a family board game night with two dice.",
        "key_elements": ["board game", "dice"],
        "explanations": {
            "R1": {
                "verdict": "not gambling-related",
                "expected": "not gambling-related",
                "verdict_source": "rule_table",
                "argument": "For children under 13 dice in a board game without a stake are "
                "play, not gambling.",
                "explanation": "For children under 13 dice in a board game without a stake are "
                "play, not gambling. Conclusion: The picture is not gambling-related.",
            }
        },
        "qa_rule": "R1",
        "qa": {
            "yes_no": [{"question": "Is the image gambling-related?", "answer": "No"}],
            "multiple_choice": [
                {
                    "question": "What type of game is shown?",
                    "options": ["Card game", "Board game", "Video game", "Sport"],
                    "answer": "B",
                }
            ],
            "what": [{"question": "What is drawn on the invitation?", "answer": "Two dice."}],
            "how": [{"question": "How is the game played?", "answer": "With dice, no stake."}],
        },
    }
    state.update(extra)
    return state


def test_a_good_record_passes_every_record_check(gambling: Policy) -> None:
    failed = [c for c, _ in record_checks(gambling, _state()) if not c.passed]
    assert failed == []


def test_critic_sends_a_contradicting_mc_back_to_the_qa_writer(gambling: Policy) -> None:
    state = _state()
    state["qa"]["multiple_choice"][0]["answer"] = "A"  # "Card game"
    failed = [c for c in deterministic_checks(gambling, state) if not c.passed]
    assert [c.name for c in failed] == ["qa_agrees_with_record"]
    assert failed[0].stage == "qa_writer" and "Card game" in failed[0].message


def test_critic_sends_an_invented_audience_back_to_the_explainer(gambling: Policy) -> None:
    state = _state()
    item = state["explanations"]["R1"]
    item["argument"] = ("It is not suitable for individuals who are not interested in board "
                        "games.")  # fmt: skip
    item["explanation"] = item["argument"] + " Conclusion: The picture is not gambling-related."
    failed = [c for c in deterministic_checks(gambling, state) if not c.passed]
    assert [(c.name, c.stage) for c in failed] == [("argument_rests_on_rule", "explainer")]
    assert getattr(failed[0], "rule", None) == "R1"


def test_critic_runs_the_grounding_check_when_given_one(gambling: Policy) -> None:
    state = _state(evidence={"fake": True})
    calls: list[tuple[str, str]] = []

    def finder(text: str, evidence: dict[str, Any], allowed: str) -> list[str]:
        calls.append((text, allowed))
        return ["[low_confidence_label] names 'chime'"] if "invitation" in text else []

    failed = [
        c for c in deterministic_checks(gambling, state, grounding_finder=finder) if not c.passed
    ]
    # the description, and the Q-A item that names the invitation (read as the audit reads
    # it: question, options, answer)
    assert [(c.name, c.stage) for c in failed] == [
        ("grounded_in_evidence", "describer"), ("grounded_in_evidence", "qa_writer")
    ]  # fmt: skip
    assert "the Q-A item '" in failed[1].message
    assert "dice" in calls[0][1]  # the annotation's words count as supported
    assert all(c.passed for c in deterministic_checks(gambling, state))  # no finder: not run


# ----------------------------------------------------------------------------- today's outputs
BASELINE = json.loads(
    (Path(__file__).parent / "fixtures" / "grounding" / "baseline_4230e09.json").read_text(
        encoding="utf-8"
    )
)


def test_baseline_retry_that_talks_about_the_reviewer_and_invents_an_audience_fails() -> None:
    sexy = load_policy("icm_sexy")
    text = BASELINE["grace_hopper_R2_retry"]
    assert pipeline_talk(text) == "reviewer"
    assert invented_audience(text, sexy, "R2")


def test_baseline_questions_about_the_question_fail() -> None:
    assert len(question_set_problems(BASELINE["qa_about_questions"])) == 2


def test_baseline_description_naming_classifier_guesses_fails() -> None:
    from agents.perception.evidence import Evidence
    from agents.perception.grounding import ungrounded_claims

    evidence = Evidence.load(
        (Path(__file__).parent / "fixtures" / "grounding" / "grace_hopper.evidence.json").read_text(
            encoding="utf-8"
        )
    )
    found = ungrounded_claims(BASELINE["grace_hopper_description"], evidence)
    assert [c.check for c in found] == ["low_confidence_label"]
    assert "'military uniform' (0.15)" in found[0].message


def test_baseline_audience_named_by_a_profession_fails() -> None:
    sexy = load_policy("icm_sexy")
    found = invented_audience(BASELINE["astronaut_R1"], sexy, "R1")
    assert found and "professional audience" in found
    assert invented_audience("It is not suitable for the given audience.", sexy, "R1") is None
    assert invented_audience("It is appropriate for a young audience.", sexy, "R2") is None


def test_every_audience_is_not_an_invented_one(gambling: Policy) -> None:
    # the demo's flower (safe under R2, audience 13 and over) was rejected for this sentence
    flower = "A close-up of a dahlia is appropriate for all audiences, including teenagers."
    assert invented_audience(flower, gambling, "R2") is None
    assert invented_audience("It is suitable for general audiences.", gambling, "R1") is None
    # an audience of a kind the rule never names still is invented
    assert invented_audience("It is suitable for a professional audience.", gambling, "R1")


def test_an_argument_that_calls_the_image_fit_for_the_audience_it_flags_fails() -> None:
    from evaluators.record_checks import fitness_contradiction

    # the demo's accepted teasing meme (sexy under R1, children, and R2)
    r1 = ("The description provides context that the image is appropriate for a child or a "
          "conservative viewer, as it does not contain explicit content or violence.")  # fmt: skip
    assert fitness_contradiction(r1, flagged=True, child_rule=True) == "appropriate for a child"
    r2 = (
        "The rule's audience aligns with the image's content, making it suitable for this audience."
    )
    assert fitness_contradiction(r2, flagged=True, child_rule=True)
    # what agrees with the verdict passes
    assert fitness_contradiction("It is not appropriate for children.", True, True) is None
    assert fitness_contradiction("It is inappropriate for this audience.", True, False) is None
    assert fitness_contradiction("The flower is appropriate for everyone.", False, True) is None
    # not flagged: unfit for the rule's own audience contradicts it; unfit for children does
    # only under a children's rule
    assert fitness_contradiction("It is unsuitable for this audience.", False, False)
    assert fitness_contradiction("It is not suitable for children.", False, True)
    assert fitness_contradiction("It is not suitable for children.", False, False) is None
    # the demo's real garbage is caught, its denied unfitness is not (astronaut, rocket)
    said = "The man's body is fully exposed, which is not appropriate for children."
    assert fitness_contradiction(said, False, True) == "not appropriate for children"
    denied = [
        "The image does not show any suggestive behaviour or attire that would be considered "
        "inappropriate for children.",
        "It is a peaceful scene of a rocket launch, which is not considered inappropriate for "
        "children.",
        "It does not depict any content that would be harmful, violent or inappropriate for "
        "children.",
    ]
    assert [fitness_contradiction(t, False, True) for t in denied] == [None] * 3


def test_the_state_check_names_the_rule_and_the_verdict(gambling: Policy) -> None:
    state = _state()
    item = state["explanations"]["R1"]
    item["verdict"] = item["expected"] = "gambling-related"
    item["argument"] = "For children under 13 the dice are fine for a child to see."
    checks = [
        c for c, _ in record_checks(gambling, state) if c.name == "argument_agrees_with_verdict"
    ]
    assert checks and not checks[0].passed
    assert "under R1" in checks[0].message and "'gambling-related'" in checks[0].message
    # the feedback quotes the sentence to leave out and names the rule's reason to argue from
    # (told only the phrase, the demo's explainer repeated "not appropriate for children"
    # under a clearing verdict on each retry)
    said = "For children under 13 the dice are fine for a child to see."
    assert f"the sentence '{said}'" in checks[0].message
    assert "leave that claim out" in checks[0].message
    item["verdict"] = item["expected"] = "not gambling-related"
    item["argument"] = "Dice are shown. For children under 13 they are not suitable for a child."
    failed = [c for c, _ in record_checks(gambling, state)
              if c.name == "argument_agrees_with_verdict"]  # fmt: skip
    assert not failed[0].passed
    assert "the sentence 'For children under 13 they are not suitable" in failed[0].message
    assert "Dice are shown" not in failed[0].message
    # an argument that agrees is recorded as a pass, so a record shows the check ran
    item["argument"] = "For children under 13 the dice of a family game are fine to see."
    passed = [c for c, _ in record_checks(gambling, state)
              if c.name == "argument_agrees_with_verdict"]  # fmt: skip
    assert [c.passed for c in passed] == [True]


def test_a_yes_no_item_asking_whether_the_image_is_flagged_follows_the_verdict() -> None:
    """The demo accepted "Is the image flagged for children under the age of 13 according to
    rule R1?" -> "Yes." in a record judged safe under R1: the question asks for the verdict in
    the policies' own word, not the term."""
    from evaluators.consistency import check_yes_no_agreement

    asked = "Is the image flagged for children under the age of 13 according to rule R1?"
    [wrong] = check_yes_no_agreement([(asked, "Yes.")], "unsafe", flagged=False, rule="R1")
    assert not wrong.passed and "means 'No'" in wrong.message
    [right] = check_yes_no_agreement([(asked, "No.")], "unsafe", flagged=False, rule="R1")
    assert right.passed
    assert check_yes_no_agreement([("Would this image be flagged?", "Yes")], "sexy", True)[0].passed
    # not a yes/no question about the verdict
    assert check_yes_no_agreement([("What is flagged here?", "Yes")], "sexy", False) == []


#: the demo's accepted Grace Hopper record at HEAD (Dec 8): its yes/no item restates the
#: description and answers No
HOPPER = (
    "A portrait of Grace Hopper, head and upper body, fully clothed in US Navy uniform and cap, "
    "in a normal exposure level, in a photo in colour, with dominant colours grey 44%, black "
    "42%, orange 14%; text in the image: 'COMO HOPPER'"
)
HOPPER_Q = (
    "Is the image of Grace Hopper, head and upper body, fully clothed in US Navy uniform and "
    "cap, in a normal exposure level, in a photo in colour, with dominant colours grey 44%, "
    "black 42%, orange 14?"
)


def _yes_no(question: str, answer: str) -> dict[str, Any]:
    return {"yes_no": [{"question": question, "answer": answer}]}


def test_a_yes_no_item_that_denies_the_description_it_restates_fails() -> None:
    (problem,) = restated_description_problems(_yes_no(HOPPER_Q, "No."), HOPPER)
    assert HOPPER_Q in problem and "answers 'No.'" in problem
    assert restated_description_problems(_yes_no(HOPPER_Q, "Yes"), HOPPER) == []


def test_a_restating_question_that_asks_something_more_or_is_negated_passes() -> None:
    # the demo's astronaut item asks about the verdict: "No" is an answer about sexiness
    astronaut = "An astronaut, upper body, fully clothed in an orange flight suit, holding a helmet"
    asked = (
        "Is the image of an astronaut, upper body, fully clothed in an orange flight suit, "
        "holding a helmet, considered sexy according to the rule R1?"
    )
    assert restated_description_problems(_yes_no(asked, "No"), astronaut) == []
    # released records: the explanation says the content is absent, so No is right
    said = "The image does not contain any explicit or suggestive content or nudity at all."
    asked = "Does the image contain any explicit or suggestive content or nudity?"
    assert restated_description_problems(_yes_no(asked, "No."), said) == []
    # a short copied phrase is not the whole description restated
    assert restated_description_problems(_yes_no("Is the image of a cap?", "No"), HOPPER) == []


def test_the_critic_sends_a_denied_description_back_to_the_qa_writer(gambling: Policy) -> None:
    state = _state()
    state["qa"]["yes_no"].append(
        {"question": "Is the image a drawn invitation to a family board game night with two dice?",
         "answer": "No"}
    )  # fmt: skip
    failed = [c for c in deterministic_checks(gambling, state) if not c.passed]
    assert [c.name for c in failed] == ["qa_agrees_with_record"]
    assert failed[0].stage == "qa_writer" and "what the description says" in failed[0].message


def test_a_text_citing_the_description_is_pipeline_talk(gambling: Policy) -> None:
    """A tuned model is never given a description: an answer that cites one teaches it to talk
    about a text it does not have (the demo's lottery Q-A, Dec 8; 19 released records)."""
    assert pipeline_talk("The ticket price is not specified in the description") == (
        "in the description"
    )
    assert pipeline_talk("The description provided does not mention any fear.")
    assert pipeline_talk("What atmosphere does the image create according to the description?")
    for fine in ("A scratch card described in bright colours.", "A job description board.",
                 "The poster's description of the product is in small print."):  # fmt: skip
        assert pipeline_talk(fine) is None, fine
    state = _state()
    state["qa"]["how"][0]["answer"] = "The rules are not specified in the description."
    failed = [c for c, _ in record_checks(gambling, state) if not c.passed]
    assert [c.name for c in failed] == ["no_pipeline_talk"]
    assert failed[0].stage == "qa_writer" and "in the description" in failed[0].message


def test_an_answer_stating_a_number_the_record_never_states_fails(gambling: Policy) -> None:
    """The demo's lottery redo (Dec 8): told not to cite the description, the Q-A writer
    invented prices; an earlier demo answered "black 32%" where the description says 42 %."""
    record = "A drawn scratch lottery ticket, 'LUCKY 7 LOTTERY', grey 44%, black 42%."
    qa = {
        "what": [{"question": "What is the ticket worth?", "answer": "The ticket is worth $100."},
                 {"question": "What are the colours?", "answer": "grey 44%, black 32%"}],
        "how": [{"question": "How many colours are named?", "answer": "2"},
                {"question": "How lucky is the number?", "answer": "Lucky 7, as printed."}],
    }  # fmt: skip
    problems = unsupported_number_problems(qa, record)
    assert len(problems) == 2
    assert "states 100" in problems[0] and "states 32," in problems[1]
    # counts are read off the record; numbers the record or the question states are fine
    state = _state()
    state["qa"]["how"][0] = {"question": "How much does a ticket cost?", "answer": "It costs $5."}
    failed = [c for c, _ in record_checks(gambling, state) if not c.passed]
    assert [c.name for c in failed] == ["qa_agrees_with_record"] and "states 5" in failed[0].message
    state["description"] += " A ticket costs $5."
    assert all(c.passed for c, _ in record_checks(gambling, state))
