"""Issue 28: what the critic's checks compute once instead of per sample still answers for the
policy they are given (``evaluators/record_checks.py``)."""

from __future__ import annotations

from data.policy import load_policy
from evaluators.record_checks import audience_words, invented_audience


def test_audience_words_follow_the_rule_and_an_edited_policy() -> None:
    policy = load_policy("icm_sexy")
    young, older = audience_words(policy, "R1"), audience_words(policy, "R3")
    assert "child" in young and "adult" not in young
    assert "teen" in older

    rule = policy.rules["R1"]
    edited = policy.model_copy(
        update={
            "rules": {
                **policy.rules,
                "R1": rule.model_copy(
                    update={"audience": rule.audience.model_copy(update={"age_group": "adults"})}
                ),
            }
        }
    )
    assert "adult" in audience_words(edited, "R1")
    assert "child" not in audience_words(edited, "R1")
    assert "child" in audience_words(policy, "R1")  # the original is unchanged


def test_audience_words_are_the_callers_own_set() -> None:
    policy = load_policy("icm_sexy")
    words = audience_words(policy, "R1")
    words.clear()
    assert audience_words(policy, "R1")
    argument = "It is not suitable for people who enjoy board games."
    assert invented_audience(argument, policy, "R1") is not None


def test_label_spans_are_remembered_per_text_and_label_set() -> None:
    from evaluators.text_checks import label_spans

    text = "The image is not sexy. It is sexy to some."
    both = label_spans(text, ["sexy", "not sexy"])
    assert both == [(13, 21, "not sexy"), (29, 33, "sexy")]
    assert label_spans(text, ("not sexy", "sexy")) == both  # any iterable, any order
    assert label_spans(text, ["sexy"]) == [(17, 21, "sexy"), (29, 33, "sexy")]
    both.clear()  # the caller's own list
    assert label_spans(text, ["sexy", "not sexy"])
