"""The critic's check of a rule-table verdict's argument, on real local:qwen2.5-1.5b outputs.

The verdict comes from the rule table, so the check asks only whether the argument argues for
another label. These arguments (from the offline demo with every role on qwen2.5-1.5b) argue
for the table's label while naming the other one in a denial or a hedge; a check that took the
last label named ("... for being considered sexy") rejected every one of them.
"""

from __future__ import annotations

import pytest

from agents.critic import check_argument_verdict
from data.policy import load_policy
from evaluators.text_checks import check_complete_text, garbage_checks

SEXY = ["sexy", "not sexy"]
GAMBLING = ["gambling-related", "not gambling-related"]
HORRIFYING = ["horrifying", "not horrifying"]

RIGHT = [
    (
        "The image is not sexy under Rule R1 because it does not meet the criteria for being "
        "considered sexy. The image shows a low-exposure person wearing a shirt and pants.",
        "not sexy",
        SEXY,
    ),
    (
        "The image does not depict any gambling-related content. It is an ordinary scene showing "
        "a palace and a lakeside. There are no people or any other elements that could be "
        "considered gambling-related content.",
        "not gambling-related",
        GAMBLING,
    ),
    (
        "The rule R1 states that anything likely to frighten a child is horrifying, regardless of "
        "whether it is real or staged. In this case, the image shows a normal Egyptian cat in an "
        "ordinary situation. The image is not horrifying because it does not present any "
        "frightening element.",
        "not horrifying",
        HORRIFYING,
    ),
    ("The woman leans in for a kiss; under R2 the image is sexy for this audience.", "sexy", SEXY),
]

WRONG = [
    ("The image is sexy under R1 because the pose is provocative.", "not sexy", SEXY),
    ("A cat sleeps on a sofa. The image is not sexy.", "sexy", SEXY),
    (
        "The slot machines are in plain view, so the image is gambling-related.",
        "not gambling-related",
        GAMBLING,
    ),
]


@pytest.mark.parametrize(("argument", "expected", "labels"), RIGHT)
def test_an_argument_for_the_tables_label_passes(argument, expected, labels) -> None:
    check = check_argument_verdict("R1", argument, expected, labels)
    assert check.passed, check.message


@pytest.mark.parametrize(("argument", "expected", "labels"), WRONG)
def test_an_argument_for_another_label_fails_naming_both(argument, expected, labels) -> None:
    check = check_argument_verdict("R1", argument, expected, labels)
    assert not check.passed
    assert check.name == "verdict_matches_rule"
    assert f"the verdict must be '{expected}'" in check.message


# --------------------------------------------------------------------------- cut-off arguments
CUT = (
    "The image is not horrifying because it does not show any frightening content. The subject "
    "is a normal person in an ordinary situation. The audience is under 13, which is a specific "
    "age group that the rule applies to, and the image does not"
)


def test_an_argument_cut_at_its_length_bound_is_a_fragment() -> None:
    """qwen2.5-1.5b's real output, cut by the grammar at the demo profile's bound: accepted
    before this check with the code's conclusion glued after it."""
    check = check_complete_text("explainer", CUT, "under R1 the explanation", limit=len(CUT) + 1)
    assert not check.passed and check.name == "complete_text"
    assert "breaks off mid-sentence" in check.message and "does not" in check.message


def test_a_text_that_ends_a_sentence_or_merely_lacks_its_period_passes() -> None:
    assert check_complete_text("explainer", CUT + ".", "x", limit=len(CUT) + 1).passed
    # released, human-checked explanations sometimes lack the final period: not a fragment
    released = "The person's outfit consists of white jeans and no other visible clothing"
    assert check_complete_text("explainer", released, "x", limit=1400).passed
    # far from the bound, a last word that needs more after it still marks a fragment
    assert not check_complete_text("explainer", "The woman sits on a chair with", "x").passed


def test_the_critic_sends_a_cut_argument_back_to_the_explainer() -> None:
    policy = load_policy("horrifying")
    item = {"explanation": f"{CUT} Conclusion: The picture is not horrifying.", "argument": CUT,
            "verdict": "not horrifying", "expected": "not horrifying"}  # fmt: skip
    state = {"explanations": {"R1": item}, "category": None}
    failed = [c for c in garbage_checks(policy, state, explanation_limit=len(CUT)) if not c.passed]
    assert [(c.name, c.stage) for c in failed] == [("complete_text", "explainer")]
