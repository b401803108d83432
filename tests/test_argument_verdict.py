"""The critic's check of a rule-table verdict's argument, on real local:qwen2.5-1.5b outputs.

The verdict comes from the rule table, so the check asks only whether the argument argues for
another label. These arguments (from the offline demo with every role on qwen2.5-1.5b) argue
for the table's label while naming the other one in a denial or a hedge; a check that took the
last label named ("... for being considered sexy") rejected every one of them.
"""

from __future__ import annotations

import pytest

from agents.critic import check_argument_verdict

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
