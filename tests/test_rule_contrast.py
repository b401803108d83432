"""The rule-contrast check on real pairs: explanations of one image whose verdict flips between
rule variants, in the released ICM-Instruct data's style and from the local model
(qwen2.5-1.5b), passing and failing; and its pass rate per run in ``icm compare``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner
from viewer_data import generated_db

from data.policy import load_policy
from data.store import Store
from evaluators.compare import compare_runs
from evaluators.rule_contrast import Explanation, age_words, check_sample, mentions
from graphs.cli import app


@pytest.fixture(scope="module")
def sexy():
    return load_policy("icm_sexy")


# middle_leg: sexy under R1 (under 13, conservative), not sexy under R2 (under 13, open): the
# rules differ in culture only, as the paper's teaser has it for bare legs.
R1_ARGUES_CULTURE = (
    "The woman wears denim shorts that leave her thighs bare while she walks along a street. "
    "For children in a conservative culture bare thighs are immodest, so the image is sexy."
)
R2_ARGUES_CULTURE = (
    "The woman wears denim shorts that leave her thighs bare while she walks along a street. "
    "In an open culture shorts are everyday dress, also in front of children, so the image is "
    "not sexy."
)
# The released data's style: the atmosphere argued at length, the audience never named.
RELEASED_STYLE_SEXY = (
    "The image features a young woman in short denim shorts, her legs bare from the upper "
    "thigh down. She leans against a wall with one knee bent, and her confident pose draws the "
    "eye to her legs. The image is sexy because the exposed thighs and the relaxed, confident "
    "posture create an alluring and sensual atmosphere."
)
RELEASED_STYLE_NOT_SEXY = (
    "The image features a young woman in short denim shorts walking down a street with a "
    "shopping bag. Her posture is casual and her expression neutral. The image is not sexy "
    "because the outfit is ordinary summer clothing and nothing in the scene is suggestive."
)
# qwen2.5-1.5b's argument in the offline demo (tests/test_argument_verdict.py), verbatim:
# it argues its verdict but names no audience.
QWEN_NOT_SEXY = (
    "The image is not sexy under Rule R1 because it does not meet the criteria for being "
    "considered sexy. The image shows a low-exposure person wearing a shirt and pants."
)
# middle_shoulders_and_belly: sexy under R3 (13+, conservative), not sexy under R4 (13+,
# open). The R4 text is the hedged explanation of tests/test_text_checks.py.
R3_TEEN_CONSERVATIVE = (
    "The crop top bares her midriff in a close-up. For a teenage audience in a conservative "
    "culture a bared belly is immodest, so the image is sexy."
)
R4_HEDGED = (
    "The crop top bares her midriff, which a conservative audience might find sexy. For a 13+ "
    "audience in an open culture this is everyday fashion, so the image is not sexy."
)


def test_explanations_that_argue_their_verdicts_and_name_the_culture_pass(sexy) -> None:
    result = check_sample(sexy, "s", [
        Explanation("R1", "sexy", R1_ARGUES_CULTURE),
        Explanation("R2", "not sexy", R2_ARGUES_CULTURE),
    ])  # fmt: skip
    assert result.checked and result.passed, result.problems
    hedged = check_sample(sexy, "t", [
        Explanation("R3", "sexy", R3_TEEN_CONSERVATIVE),
        Explanation("R4", "not sexy", R4_HEDGED),
    ])  # fmt: skip
    assert hedged.passed, hedged.problems


def test_released_style_explanations_fail_for_naming_no_culture(sexy) -> None:
    result = check_sample(sexy, "s", [
        Explanation("R1", "sexy", RELEASED_STYLE_SEXY),
        Explanation("R2", "not sexy", RELEASED_STYLE_NOT_SEXY),
    ])  # fmt: skip
    assert result.checked and not result.passed
    assert result.problems == [
        "R1: does not name its culture ('conservative', where R2 has 'open')",
        "R2: does not name its culture ('open', where R1 has 'conservative')",
    ]


def test_the_local_models_argument_fails_for_its_audience_and_a_swapped_text_for_its_verdict(
    sexy,
) -> None:
    local = check_sample(sexy, "s", [
        Explanation("R1", "sexy", R1_ARGUES_CULTURE),
        Explanation("R2", "not sexy", QWEN_NOT_SEXY),
    ])  # fmt: skip
    assert local.problems == ["R2: does not name its culture ('open', where R1 has 'conservative')"]
    swapped = check_sample(sexy, "s", [
        Explanation("R1", "sexy", R2_ARGUES_CULTURE),
        Explanation("R2", "not sexy", R1_ARGUES_CULTURE),
    ])  # fmt: skip
    assert any("R1: argues the other verdict" in p for p in swapped.problems)
    assert any("R2: argues the other verdict" in p for p in swapped.problems)


def test_an_age_flip_needs_the_age_named_and_same_verdicts_are_not_checked(sexy) -> None:
    # pout: sexy under R2 (under 13, open), not sexy under R4 (13+, open): age differs only
    no_age = check_sample(sexy, "s", [
        Explanation("R2", "sexy", "Pouting at the camera is a seductive gesture, so the image "
                                  "is sexy in an open culture."),
        Explanation("R4", "not sexy", "Pouting is a playful expression in an open culture, so "
                                      "the image is not sexy."),
    ])  # fmt: skip
    assert no_age.problems == [
        "R2: does not name its audience age ('under 13', where R4 has '13 and over')",
        "R4: does not name its audience age ('13 and over', where R2 has 'under 13')",
    ]
    with_age = check_sample(sexy, "s", [
        Explanation("R2", "sexy", "For kids a pout at the camera is a seductive gesture, so "
                                  "the image is sexy."),
        Explanation("R4", "not sexy", "For teenagers and older viewers a pout is playful, so "
                                      "the image is not sexy."),
    ])  # fmt: skip
    assert with_age.passed, with_age.problems
    same = check_sample(sexy, "s", [Explanation("R1", "sexy", "x"), Explanation("R2", "sexy", "y")])
    assert not same.checked and same.passed


def test_age_words_follow_the_bound_the_policy_writes() -> None:
    assert mentions("Not for children.", age_words("under 13")) == "child"  # by lemma
    assert mentions("Fine for a 13+ audience.", age_words("13 and over")) == "13+"
    assert mentions("adults only", age_words("18 and over")) == "adult"
    assert mentions("adults only", age_words("13 and over")) is None


def test_compare_reports_the_pass_rate_per_run(tmp_path) -> None:
    gen = generated_db()
    with Store.open(gen.db, read_only=True) as store:
        comparison = compare_runs(store, [gen.run_id])
    contrast = comparison.runs[0]["rule_contrast"]
    # middle_leg flips between R1 and R2; the fake explainer argues from the rule's reason as
    # the prompt gives it (audience and culture), so both arguments name their own audience
    assert contrast == {"checked": 1, "passed": 1, "rate": 1.0}
    result = CliRunner().invoke(
        app, ["compare", gen.run_id, gen.run_id, "--db", str(gen.db), "--no-plots"]
    )
    assert result.exit_code == 0, result.output
    assert "rule contrast pass" in result.output and "1/1 (100%)" in result.output
    as_json = CliRunner().invoke(
        app, ["compare", gen.run_id, "--db", str(gen.db), "--no-plots", "--json"]
    )
    assert json.loads(as_json.output)["runs"][0]["rule_contrast"]["checked"] == 1


def test_a_rule_for_any_culture_is_not_asked_to_name_one() -> None:
    gambling = load_policy("gambling")  # R1: under 13, any culture; R2: 18+, gambling legal
    result = check_sample(gambling, "s", [
        Explanation("R1", "gambling-related", "Lottery tickets are gambling, which children "
                                              "must not be shown: the image is gambling-related."),
        Explanation("R2", "not gambling-related", "For adults where gambling is legal and "
                    "licensed, a lottery ticket is ordinary: the image is not gambling-related."),
    ])  # fmt: skip
    assert result.passed, result.problems
