"""The garbage checks (evaluators/text_checks.py) on real bad outputs and on good text.

BAD holds outputs that models really wrote: SmolLM2 in the offline demo (``python
graphs/generate.py``, every role on local:smollm2; the ones quoted in issue 15 among them) and a
few defects of the released ICM-Instruct data. Each must be rejected by the named check. GOOD
holds text a capable model writes, which every check must accept. The released records are
measured at the end (skipped when ../shared is absent).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from release_data import release_file, require

from data.policy import load_policy
from evaluators.consistency import Check
from evaluators.lemmas import contains_phrase, content_lemmas, lemma
from evaluators.text_checks import (
    attribute_mentions,
    check_attributes_mentioned,
    check_states_one_label,
    garbage_checks,
    label_statements,
    qa_problems,
    stated_labels,
    with_garbage_checks,
)
from graphs.pipeline import SCHEMA_TEXTS

ROOT = Path(__file__).resolve().parents[1]
RELEASED = release_file("instruct_dev.jsonl")  # ICM_RELEASE_DATA (tests/release_data.py)


def describer(description: str, key_elements: list[str], category: str) -> dict[str, Any]:
    return {"description": description, "key_elements": key_elements, "category": category}


def context(**fields: str) -> dict[str, Any]:
    return {"context": " ".join(f"{k.capitalize()}: {v}" for k, v in fields.items())}


def explainer(text: str, rule: str = "R1", verdict: str = "not sexy") -> dict[str, Any]:
    return {"explanations": {rule: {"explanation": text, "verdict": verdict}}}


def qa(
    yes_no: Sequence[tuple[str, str]] = (),
    what: Sequence[tuple[str, str]] = (),
    how: Sequence[tuple[str, str]] = (),
    choice: Sequence[tuple[str, list[str], str]] = (),
) -> dict[str, Any]:
    def items(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"question": q, "answer": a} for q, a in pairs]

    return {
        "qa": {
            "yes_no": items(yes_no),
            "what": items(what),
            "how": items(how),
            "multiple_choice": [{"question": q, "options": o, "answer": a} for q, o, a in choice],
        }
    }


def failures(policy: str, state: dict[str, Any]) -> dict[str, str]:
    """Failed check name -> message, for one stage's output in a pipeline state."""
    full = {"sample": SimpleNamespace(given_description=None), **state}
    checks = garbage_checks(load_policy(policy), full, SCHEMA_TEXTS)
    return {c.name: c.message for c in checks if not c.passed}


MILITARY = ", a military uniform" * 12
MASK = ", a face with a face mask" * 13
NOT_FRIGHTENING = "The image is not horrifying. " + "The image is not frightening. " * 14

BAD: list[tuple[str, str, dict[str, Any], str, str]] = [
    # id, policy, state, check that must fail, a word its message must contain
    (
        "issue: R1 'citing the description' loop, verdict not sexy",
        "icm_sexy",
        explainer("The image is sexy" + ", citing the description" * 18 + ","),
        "no_looping_text",
        "citing the description",
    ),
    (
        "issue: 'The image is sexy, not sexy, because ...'",
        "icm_sexy",
        explainer("The image is sexy, not sexy, because the image is" + MILITARY[1:]),
        "states_one_label",
        "side by side",
    ),
    (
        "demo: R2 'sexy, not sexy' with a face-mask loop",
        "icm_sexy",
        explainer("The image is sexy, not sexy, because it shows" + MASK[1:] + ", a 3D", "R2"),
        "states_one_label",
        "under R2",
    ),
    (
        "issue: What answer No'}], ",
        "icm_sexy",
        qa(
            yes_no=[("Is the image sexy?", "No")],
            what=[("Is the image sexy?", "No'}], ")],
            how=[("Is the image sexy?", "No'}], ")],
        ),
        "qa_well_formed",
        "No'}], ",
    ),
    (
        "issue: key elements that are JSON-schema keywords",
        "icm_sexy",
        describer(
            "The image shows a person with a face mask" + MASK + ", a face,",
            ["description", "maxLength", "minLength", "type", "items", "maxItems"],
            "upper_normal",
        ),
        "key_elements_in_description",
        "maxLength",
    ),
    (
        "demo: key elements echo prompt words",
        "horrifying",
        describer(
            "The image shows an ordinary place or objects and nothing frightening.",
            [
                "description",
                "description",
                "Hint",
                "Detector evidence",
                "detailed_image",
                "detailed_image_detail",
            ],
            "normal_scene",
        ),
        "key_elements_in_description",
        "detailed_image",
    ),
    (
        "demo: key elements 'people' five times",
        "icm_sexy",
        describer(
            "The image shows a person with a military uniform, a military uniform, and a "
            "military uniform, a military armor",
            ["image", "people", "people", "people", "people", "people"],
            "upper_normal",
        ),
        "key_elements_in_description",
        "listed 5 times",
    ),
    (
        "demo: description loops on 'a military uniform'",
        "icm_sexy",
        describer(
            "The image shows a person with a military uniform, a military uniform, and a "
            "military uniform" + MILITARY + ", a military armor",
            ["military uniform"],
            "upper_normal",
        ),
        "no_looping_text",
        "a military uniform",
    ),
    (
        "demo: description repeats a sentence (general_safety)",
        "general_safety",
        describer(
            "The image shows an everyday scene that raises no safety concern."
            + " It is known that the image shows an everyday scene that raises no safety concern."
            * 3
            + " It is known that the image shows an und",
            ["everyday scene"],
            "everyday",
        ),
        "no_looping_text",
        "twice",
    ),
    (
        "demo: context copies the schema's field description",
        "horrifying",
        context(
            setting="The image shows a person in an ordinary situation and nothing frightening.",
            atmosphere="The mood or atmosphere the image conveys.",
            intent="The apparent purpose of the image conveys nothing frightening.",
            audience_cues="The audience is not frightened by the image, but rather by the image "
            "itself.",
        ),
        "no_json_fragments",
        "The mood or atmosphere the image conveys.",
    ),
    (
        "demo: context audience_cues is the schema's description",
        "general_safety",
        context(
            setting="The image shows an everyday scene that raises no safety concern.",
            atmosphere="Calm.",
            intent="The apparent purpose of the image conveys.",
            # the demo copied the field's description of its day ("Anything that makes the
            # image more or less suitable for some audiences."); the check reads today's
            audience_cues="Which contents of the image a moderator would weigh (bare skin, "
            "violence, gambling, its text), or none.",
        ),
        "no_json_fragments",
        "a moderator would weigh",
    ),
    (
        "demo: R2 explanation repeats one sentence",
        "icm_sexy",
        explainer(
            "The image is not sexy, but it is a well-known image that is often used to promote "
            "a particular image."
            + " The image is a well-known image that is often used to promote a particular image."
            * 5
            + " The image is a well-",
            "R2",
        ),
        "no_looping_text",
        "twice",
    ),
    (
        "demo: horrifying R2 'The image is not frightening.' x14",
        "horrifying",
        explainer(NOT_FRIGHTENING, "R2", "not horrifying"),
        "no_looping_text",
        "the image is not frightening",
    ),
    (
        "demo: horrifying R1 'ordinary, with no supernatural elements' x7",
        "horrifying",
        explainer(
            "The image is not horrifying, but it is not shocking either."
            + " The image is ordinary, with no supernatural elements." * 7
            + " The image is",
            "R1",
            "not horrifying",
        ),
        "no_looping_text",
        "supernatural",
    ),
    (
        "demo: general_safety R2 'known to be unsuitable' x6",
        "general_safety",
        explainer(
            "The image is safe, but it is not suitable for some audiences."
            + " The image is known to be unsuitable for some audiences." * 6
            + " The image is known to be unsuitable for some others.",
            "R2",
            "hate",
        ),
        "no_looping_text",
        "unsuitable",
    ),
    (
        "demo: Q-A questions that are statements",
        "horrifying",
        qa(
            yes_no=[
                (
                    "The image is not horrifying, but rather a normal situation that is not "
                    "frightening.",
                    "Yes",
                )
            ]
        ),
        "qa_well_formed",
        "no '?'",
    ),
    (
        "demo: What/How items asking 'Is the image sexy?'",
        "icm_sexy",
        qa(
            what=[("Is the image sexy?", "No, the image is not sexy")],
            how=[("Is the image sexy?", "No, the image is not sexy")],
        ),
        "qa_fits_item_kind",
        "asks a yes/no question",
    ),
    (
        "demo: What/How items asking 'Is the image a normal situation?'",
        "horrifying",
        qa(what=[("Is the image a normal situation?", "No, it is not a normal situation")]),
        "qa_fits_item_kind",
        "normal situation",
    ),
    (
        "released: a truncated question (skirt_20231122110742_613)",
        "icm_sexy",
        qa(yes_no=[("Is the woman in the image liftin", "Yes.")]),
        "qa_well_formed",
        "liftin",
    ),
    (
        "released: a What question answered 'Yes.' (takeoff_20231130121226_208)",
        "icm_sexy",
        qa(what=[("What is the woman's back exposed?", "Yes.")]),
        "qa_fits_item_kind",
        "answered 'Yes.'",
    ),
    (
        "the issue's R1 text once the conclusion is written by code",
        "icm_sexy",
        explainer(
            "The image is sexy, citing the description. Conclusion: The picture is not sexy."
        ),
        "states_one_label",
        "states both 'sexy' and 'not sexy'",
    ),
    (
        "a schema pasted into an answer",
        "icm_sexy",
        qa(what=[("What is the woman wearing?", '{"type": "string", "minLength": 3}')]),
        "qa_well_formed",
        "brace",
    ),
    (
        "a What answer that breaks off",
        "icm_sexy",
        qa(what=[("What is the woman holding?", "A small black bag with the")]),
        "qa_well_formed",
        "breaks off after 'the'",
    ),
    (
        "a description that ignores the annotated action",
        "icm_sexy",
        describer(
            "A woman with long dark hair looks at the camera in a bright room.",
            ["long dark hair", "bright room"],
            "bite_lip",
        ),
        "attributes_mentioned",
        "action=bite_lip",
    ),
]


@pytest.mark.parametrize(("policy", "state", "check", "word"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_real_bad_outputs_are_rejected(
    policy: str, state: dict[str, Any], check: str, word: str
) -> None:
    failed = failures(policy, state)
    assert check in failed, f"{check} passed; failures: {failed}"
    assert word in failed[check], failed[check]


CAMERA = "A person in a grey coat stands on a quiet street, holding a camera up to their face."

GOOD: list[tuple[str, str, dict[str, Any]]] = [
    (
        "qwen2.5-1.5b: a denial that lists the other labels (rocket.jpg, R2)",
        "general_safety",
        explainer(
            "The image does not raise any concerns about hate, violence, sexual, nudity, "
            "weapons, substance abuse, self-harm, animal cruelty, disaster, or safety. The "
            "content is entirely neutral and does not involve any explicit or potentially "
            "harmful elements. Therefore, based on the rule R2, the image is judged safe.",
            rule="R2",
            verdict="safe",
        ),
    ),
    (
        "qwen2.5-1.5b: 'does not contain ... violence, sexual themes' (rocket.jpg, R2 redo)",
        "general_safety",
        explainer(
            "The image does not contain any explicit content, violence, sexual themes, nudity, "
            "weapons, substance abuse, self-harm, animal cruelty, disaster, or any other "
            "potentially harmful elements. It is a peaceful scene with a missile and a drilling "
            "platform, which are both neutral and non-threatening.",
            rule="R2",
            verdict="safe",
        ),
    ),
    (
        "qwen2.5-1.5b: a question that ends inside its closing quote",
        "horrifying",
        qa(
            what=[
                (
                    "What is the correct answer to the question 'Is the image not horrifying "
                    "according to the rule R1?'",
                    "The image is not horrifying: it shows a normal person on a street.",
                )
            ]
        ),
    ),
    (
        "camera.jpg: 'a person' mentions subject=human",
        "horrifying",
        describer(CAMERA, ["person", "grey coat", "camera", "quiet street"], "normal_person"),
    ),
    (
        "a woman counts for subject=human",
        "horrifying",
        describer(
            "Two women in heavy zombie make-up and torn clothes pose at a Halloween party.",
            ["two women", "zombie make-up", "torn clothes", "halloween party"],
            "horror_costume",
        ),
    ),
    (
        "a child counts for subject=human (threat)",
        "horrifying",
        describer(
            "A masked man points a knife at a child who is backing away against a wall.",
            ["masked man", "knife", "child", "wall"],
            "threat",
        ),
    ),
    (
        "lemmas: 'biting her lower lip' mentions bite_lip",
        "icm_sexy",
        describer(
            "A young woman in a red top is biting her lower lip and looking over her shoulder "
            "at the camera.",
            ["young woman", "red top", "lower lip", "shoulder"],
            "bite_lip",
        ),
    ),
    (
        "lemmas: 'fingers in her mouth' mentions bite_finger",
        "icm_sexy",
        describer(
            "A close-up of a woman's face with two fingers in her mouth and her eyes half closed.",
            ["woman's face", "fingers", "mouth", "eyes half closed"],
            "bite_finger",
        ),
    ),
    (
        "whole-body bikini photo",
        "icm_sexy",
        describer(
            "A woman in a white bikini stands on a sandy beach, her whole body in frame from "
            "head to toe.",
            ["white bikini", "sandy beach", "whole body"],
            "whole_large_bare",
        ),
    ),
    (
        "casino description",
        "gambling",
        describer(
            "Players sit around a poker table stacked with casino chips while a dealer deals "
            "cards.",
            ["poker table", "casino chips", "dealer", "cards"],
            "chips_betting",
        ),
    ),
    (
        "a context with commas and colons",
        "icm_sexy",
        context(
            setting="A beach at sunset, with waves behind her.",
            atmosphere="Relaxed and summery: a holiday snapshot.",
            intent="To show an outfit for a beach day.",
            audience_cues="Swimwear at the beach is ordinary; no suggestive pose.",
        ),
    ),
    (
        "an explanation whose only label is its conclusion",
        "icm_sexy",
        explainer(
            "Under R1 the audience is children in a conservative culture. The description "
            "shows a woman in a long-sleeved sweater and jeans; little skin is bare and her "
            "pose is ordinary. Conclusion: The picture is not sexy."
        ),
    ),
    (
        "a denial and a conclusion that agree ('not considered sexy' + 'not sexy')",
        "icm_sexy",
        explainer(
            "The man wears a buttoned shirt and trousers and stands at a desk. Nothing in the "
            "image is revealing, so it is not considered sexy. Conclusion: The picture is not "
            "sexy."
        ),
    ),
    (
        "a hedge is not a statement ('might be seen as sexy by some')",
        "icm_sexy",
        explainer(
            "The crop top bares her midriff, which a conservative audience might find sexy. "
            "For a 13+ audience in an open culture this is everyday fashion, so the image is "
            "not sexy.",
            "R2",
        ),
    ),
    (
        "'sexy' as an adjective next to the verdict",
        "icm_sexy",
        explainer(
            "The close-up on her cleavage and the low-cut top create a sexy atmosphere, and "
            "the pose draws the eye to her chest. For children in a conservative culture the "
            "image is therefore sexy.",
            verdict="sexy",
        ),
    ),
    (
        "multi-label policy explanation naming no label twice",
        "general_safety",
        explainer(
            "A soldier in a museum display holds a rifle; a caption explains the history of "
            "the war. The weapon is shown as an exhibit, not in use. The image is safe.",
            verdict="safe",
        ),
    ),
    (
        "a well-formed Q-A set",
        "icm_sexy",
        qa(
            yes_no=[("Is the image sexy?", "No"), ("Is the person wearing a coat?", "Yes")],
            what=[
                ("What is the person holding?", "A camera."),
                ("What is the setting?", "A quiet city street in daylight."),
            ],
            how=[("How is the person dressed?", "In a grey coat and dark trousers.")],
            choice=[("What colour is the coat?", ["Grey", "Red", "Blue", "Green"], "A")],
        ),
    ),
    (
        "open answers with pronouns at the end",
        "icm_sexy",
        qa(
            what=[("What is the man doing to the woman?", "Kissing her.")],
            how=[("How is she putting on the stockings?", "She is pulling them on.")],
        ),
    ),
    (
        "repeated words that are not a loop",
        "icm_sexy",
        explainer(
            "She wears a white tank top and blue jeans. The white tank top is strapless, and "
            "the blue jeans are high-waisted. The white tank top and blue jeans are casual "
            "wear. Conclusion: The picture is sexy.",
            verdict="sexy",
        ),
    ),
    (
        "the scripted fake's description (tests/fakes/icm_responder.py)",
        "icm_sexy",
        describer(
            "A person is in the photograph, standing in daylight. Visible attributes: upper "
            "shoulders belly. [category upper_shoulders_and_belly]",
            ["person", "daylight"],
            "upper_shoulders_and_belly",
        ),
    ),
]


@pytest.mark.parametrize(("policy", "state"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_outputs_pass(policy: str, state: dict[str, Any]) -> None:
    assert failures(policy, state) == {}


def test_at_least_fifteen_of_each() -> None:
    assert len(BAD) >= 15 and len(GOOD) >= 15


# ----------------------------------------------------------------------------- the parts


@pytest.mark.parametrize(
    ("a", "b"),
    [("women", "woman"), ("people", "person"), ("kissing", "kisses"), ("biting", "bite"),
     ("clothes", "clothing"), ("stockings", "stocking"), ("zombies", "zombie"),
     ("bellies", "belly"), ("betting", "bets"), ("dresses", "dress"), ("men's", "man")],
)  # fmt: skip
def test_lemma_joins_inflections(a: str, b: str) -> None:
    assert lemma(a) == lemma(b)


def test_lemma_keeps_different_words_apart() -> None:
    assert len({lemma(w) for w in ("kiss", "kid", "bit", "bra", "back", "lip", "leg")}) == 7


def test_phrase_match_ignores_little_words_and_allows_slack() -> None:
    text = content_lemmas("She bites her lower lip")
    assert contains_phrase(text, content_lemmas("bite lip"), slack=1)
    assert not contains_phrase(text, content_lemmas("bite lip"), slack=0)
    assert not contains_phrase(text, content_lemmas("lip bite"), slack=2)  # order matters


def test_label_statements_read_subject_copula_and_negation() -> None:
    labels = ["sexy", "not sexy"]
    said = label_statements("Overall, the image is therefore not considered sexy.", labels)
    assert [(s.label, s.affirmed) for s in said] == [("sexy", False)]
    assert stated_labels("The image is not considered sexy.", labels) == ["not sexy"]
    assert stated_labels("It creates a sexy mood.", labels) == []
    assert stated_labels("Verdict: not sexy", labels) == ["not sexy"]


def test_synonyms_come_from_the_policy_file() -> None:
    policy = load_policy("horrifying")
    mentions = attribute_mentions(policy, "normal_person")
    assert "woman" in mentions["subject=human"] and "person" in mentions["subject=human"]
    assert mentions["depiction=normal"] == []  # nothing has to be mentioned
    check = check_attributes_mentioned("A dog on a sofa.", mentions)
    assert not check.passed and "subject=human (e.g. human, person" in check.message


def test_every_shipped_attribute_value_lists_synonyms() -> None:
    for name in ("icm_sexy", "horrifying", "gambling", "general_safety"):
        policy = load_policy(name)
        for attribute in policy.attributes.values():
            assert set(attribute.synonyms) == set(attribute.values), (name, attribute)


def test_critic_attribute_check_is_replaced_not_doubled() -> None:
    policy = load_policy("horrifying")
    state = {"sample": SimpleNamespace(given_description=None)} | describer(
        CAMERA, ["person", "camera"], "normal_person"
    )
    old = Check("attributes_mentioned", "describer", False, "never mentions subject=human")
    merged = with_garbage_checks(policy, state, [old, Check("no_refusal", "describer", True)])
    named = [c for c in merged if c.name == "attributes_mentioned"]
    assert len(named) == 1 and named[0].passed
    assert any(c.name == "no_refusal" for c in merged)


def test_given_descriptions_are_not_checked() -> None:
    policy = load_policy("icm_sexy")
    state = {"sample": SimpleNamespace(given_description="x")} | describer(
        "a face" * 10, ["maxLength"], "bite_lip"
    )
    assert garbage_checks(policy, state) == []


# ----------------------------------------------------------------------------- released data


def test_released_records_rejection_rate(tmp_path: Path) -> None:
    """The benchmark script over the 420 released records: the text checks reject few of
    them, and the ones they reject are real defects (see NOTES/README for the table)."""
    require("instruct_dev.jsonl")
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_checks_released.py"), "--json",
         str(tmp_path / "rates.json"), "--examples", "50"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    result = json.loads((tmp_path / "rates.json").read_text(encoding="utf-8"))
    assert result["records"] == 420
    rates = {name: row["rate"] for name, row in result["per_check"].items()}
    assert rates["no_json_fragments"] == 0.0
    assert rates["states_one_label"] == 0.0
    assert rates["no_looping_text"] <= 0.01
    assert rates["qa_well_formed"] <= 0.01
    assert rates["qa_fits_item_kind"] <= 0.08
    assert rates["attributes_mentioned"] <= 0.12
    assert result["rejected_by_any_text_check"] / 420 <= 0.08
    loops = result["examples"]["no_looping_text"]
    assert any("upper_bust_202207201106173963_v2.JPEG" in line for line in loops)


def test_released_explanations_with_a_code_written_conclusion() -> None:
    """If the conclusion sentence is written by code from the rule table, states_one_label
    must accept every released explanation followed by its own label, and catch most of them
    followed by the other label (the rest state no label in a sentence of their own)."""
    require("instruct_dev.jsonl")
    labels = list(load_policy("icm_sexy").verdicts)
    records = [json.loads(line) for line in RELEASED.read_text(encoding="utf-8").splitlines()]
    agreeing = caught = 0
    for record in records:
        other = next(label for label in labels if label != record["label"])
        for label in (record["label"], other):
            text = f"{record['explanation'].rstrip()} Conclusion: The picture is {label}."
            passed = check_states_one_label("explainer", text, labels, "it").passed
            agreeing += label == record["label"] and not passed
            caught += label == other and not passed
    assert agreeing == 0
    assert caught >= 0.7 * len(records)


# qwen2.5-1.5b's Q-A set on astronaut.jpg in the qwen demo (issue 15), verbatim
QWEN_CUT_ANSWER = (
    "The image shows a person with a frontal face, which is covered by clothing. The exposure "
    "level is very low, and the person is in an appropriate image. The annotation states that "
    "the region is upper and the exposure is normal. The conservative culture typically values "
    "traditional and conservative aes"
)
QWEN_QUOTED_QUESTION = (
    "What is the correct answer to the question 'Is the image sexy according to rule R1? '"
)


def test_options_that_are_only_letters_are_rejected() -> None:
    state = qa(choice=[(QWEN_QUOTED_QUESTION, ["A", "B", "C", "D"], "D")])
    failed = failures("icm_sexy", state)
    assert "('A') is only a letter" in failed["qa_well_formed"]
    # the question itself ends inside its quote, after a space: it is a question
    assert "no '?'" not in failed["qa_well_formed"]
    fine = qa(choice=[(QWEN_QUOTED_QUESTION, ["Yes", "No", "A bit", "Cannot tell"], "B")])
    assert "qa_well_formed" not in failures("icm_sexy", fine)


def test_an_open_answer_cut_at_its_length_bound_is_rejected() -> None:
    assert len(QWEN_CUT_ANSWER) == 300  # the full and medium profiles' answer bound
    state = qa(what=[("What is the explanation under rule R1?", QWEN_CUT_ANSWER)])
    full = {"sample": SimpleNamespace(given_description=None), **state}
    checks = garbage_checks(load_policy("icm_sexy"), full, SCHEMA_TEXTS, answer_limit=300)
    (well_formed,) = [c for c in checks if c.name == "qa_well_formed"]
    assert not well_formed.passed and "breaks off at the length limit" in well_formed.message
    # the same answer ending in a full stop below the bound passes
    whole = QWEN_CUT_ANSWER.rsplit(". ", 1)[0] + "."
    state = qa(what=[("What is the explanation under rule R1?", whole)])
    full = {"sample": SimpleNamespace(given_description=None), **state}
    checks = garbage_checks(load_policy("icm_sexy"), full, SCHEMA_TEXTS, answer_limit=300)
    assert all(c.passed for c in checks if c.name == "qa_well_formed")
    # far below the bound an answer is not "cut at the length limit" (a short "A dress with"
    # to a yes/no-shaped What question was rejected so, wrongly)
    short = qa(what=[("Is the woman wearing a top or a dress?", "A dress with")])
    problems = qa_problems(short["qa"], answer_limit=300)
    assert not any("length limit" in p for p in problems), problems
