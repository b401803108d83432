"""``icm audit``: the critic's deterministic checks over ICM-Instruct files, on the released dev
split (real defects, found by reading the data) and on a synthetic file with one defect of each
kind and some bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from release_data import release_file, require
from typer.testing import CliRunner

from data.policy import load_policy
from evaluators.audit import KINDS, AuditReport, audit_file
from evaluators.consistency import (
    check_explanation_stance,
    check_people_in_explanation,
    people_named,
    term_stance,
    yes_no_answer,
)
from evaluators.text_checks import check_qa_well_formed, check_states_one_label, released_qa
from graphs.commands.evaluate import audit_command

DEV = release_file("instruct_dev.jsonl")  # ICM_RELEASE_DATA (tests/release_data.py)
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("audit")(audit_command)
    app.command("other")(lambda: None)  # two commands: Typer keeps the sub-command name
    return app


# --------------------------------------------------------------------------- the checks
def test_term_stance_reads_negation_in_the_clause() -> None:
    assert term_stance("The image is sexy.", "sexy") == (True, "The image is sexy.")
    assert term_stance("The image is sexy. It is not considered sexy.", "sexy")[0] is False
    text = 'Nothing here is provocative, which is why it is not considered "sexy".'
    assert term_stance(text, "sexy")[0] is False
    assert term_stance("This creates a non-sexy atmosphere.", "sexy")[0] is False
    # A negation in an earlier clause does not reach past the comma or the contrast word.
    assert term_stance("It is not explicit, but the pose is sexy.", "sexy")[0] is True
    # Derived words are not the term: "having sex or not" says nothing about "sexy".
    assert term_stance("It is not possible to tell if they are having sex.", "sexy") is None


# Issue 25: false alarms the audit raised on released records outside the dev set, quoted.
HEDGED = (
    "A woman in a long coat stands in a park. The image is not sexy, as nothing is exposed "
    "and her pose is relaxed. However, perceptions of what is 'sexy' can vary."
)
ABSENCE = (
    "She lies on a bed with her back bare. The absence of clothing on her upper body and the "
    "soft light contribute to the sexy atmosphere."
)
LESS_LIKELY = (
    "The image is not sexy because the woman's attire suggests a modest setting. The low "
    "exposure level further emphasizes the modesty of the scene, making it less likely to be "
    "perceived as sexy."
)
LOOKING_AT = "Her gaze is turned away, which makes the viewer wonder what she is looking at."


def test_a_hedge_or_a_presupposed_term_is_no_verdict_against_the_label() -> None:
    """Each quoted text was reported as contradicting its label; none states a verdict other
    than the label, and a real contradiction in the same words is still found."""
    policy = load_policy("icm_sexy")
    labels = list(policy.verdicts)
    assert check_explanation_stance(HEDGED, "sexy", flagged=False).passed  # was "affirms"
    assert check_explanation_stance(ABSENCE, "sexy", flagged=True).passed  # was "denies"
    assert check_explanation_stance(LESS_LIKELY, "sexy", flagged=False).passed
    assert check_states_one_label("explainer", LESS_LIKELY, labels, "it").passed
    assert check_states_one_label("explainer", HEDGED, labels, "it").passed
    denied = check_explanation_stance(
        "The woman wears a gown. Based on this, the image is not particularly sexy, but rather "
        "exudes a sense of style and elegance.", "sexy", flagged=True,
    )  # fmt: skip
    assert not denied.passed and "denies" in denied.message
    assert not check_explanation_stance("The image is sexy.", "sexy", flagged=False).passed


def test_a_complete_answer_ending_on_a_stranded_preposition_is_not_broken_off() -> None:
    qa = released_qa([("What", "What draws attention to her eyes?", LOOKING_AT)], [])
    assert check_qa_well_formed(qa).passed
    for cut in ("A towel with", "She holds a towel with.", "It shows the."):
        broken = released_qa([("What", "What is she holding?", cut)], [])
        assert not check_qa_well_formed(broken).passed, cut


def test_people_named_is_conservative() -> None:
    assert people_named("Is the person in the image male?", "No.") == set()
    assert people_named("Is the person male or female?", "The person is female.") == {"woman"}
    assert people_named("What is the man holding?", "An umbrella.") == {"man"}
    assert people_named("Who is in the picture?", "Two women and a child.") == {
        "woman",
        "child",
        "several people",
    }
    assert people_named("Is the person smiling?", "Yes.") == set()
    said_she = "A person in a red coat; she looks at the camera."
    assert check_people_in_explanation("Is the woman smiling?", "Yes.", said_she).passed
    failed = check_people_in_explanation("Is the couple kissing?", "Yes.", "A person waves.")
    assert not failed.passed and "couple" in failed.message


def test_yes_no_answer() -> None:
    assert yes_no_answer("Yes.") is True
    assert yes_no_answer(" no, it is not") is False
    assert yes_no_answer("Nope") is None
    assert yes_no_answer("Maybe.") is None


# --------------------------------------------------------------------------- the dev split
@pytest.fixture(scope="module")
def dev_report() -> AuditReport:
    require("instruct_dev.jsonl")
    return audit_file(DEV, load_policy("icm_sexy"))


def _found(report: AuditReport, kind: str, record: str) -> list:
    return [f for f in report.findings if f.kind == kind and f.record == record]


def test_dev_split_counts(dev_report: AuditReport) -> None:
    assert dev_report.records == 420
    assert dev_report.bad_lines == []
    assert dev_report.counts() == {
        "yes_no_contradicts_label": 0,
        "explanation_contradicts_label": 0,
        "label_contradicts_rule_table": 0,
        "multiple_choice_invalid": 0,
        "conflicting_repeated_answers": 1,
        "repeated_question": 155,
        "people_not_in_explanation": 21,
        "qa_type_mismatch": 32,
        "refusal": 0,
        "looping_text": 1,
        "states_two_labels": 0,
        "json_in_text": 0,
        "malformed_qa": 1,
        "unknown_label": 0,
    }
    assert dev_report.records_affected()["repeated_question"] == 45
    assert dev_report.records_affected()["people_not_in_explanation"] == 18


def test_dev_split_known_defects(dev_report: AuditReport) -> None:
    # The same 4-option question asked twice, answered B then A.
    [conflict] = _found(
        dev_report, "conflicting_repeated_answers", "middle_normal_202207201106175422_v2.jpg"
    )
    assert conflict.question == "What is the color of the person's top in the image?"
    assert "'A.' after 'B.'" in conflict.why
    # The explanation shows one person in underwear; the multiple-choice key says "a group".
    crowd = _found(
        dev_report, "people_not_in_explanation", "middle_crotch_2022072011061745418_v2.JPEG"
    )
    assert any(f.answer == "B) A group of people" and "several people" in f.why for f in crowd)
    # "a pair of feet" in the explanation; the Q-A invent a man and a woman.
    [feet] = _found(dev_report, "people_not_in_explanation", "sexy_implicit_202401170000000135.jpg")
    assert feet.question == "Are the feet of the man and woman in the image bare?"
    assert "man and woman" in feet.why
    # Yes/No items answered otherwise, and a How item that is a yes/no question.
    maybe = _found(dev_report, "qa_type_mismatch", "takeoff_20231130121226_22.png")
    assert [f.answer for f in maybe] == ["Maybe."]
    why = _found(dev_report, "qa_type_mismatch", "tongue_20231125103128_221.JPEG")
    assert why[0].question == "Why is the image perceived as sexy?"
    how = _found(dev_report, "qa_type_mismatch", "wet_20231122110742_2019.jpg")
    assert len(how) == 2 and all("How item answered yes" in f.why for f in how)


def test_dev_split_no_false_alarms_where_naive_checks_fire(dev_report: AuditReport) -> None:
    # last_label_in reads 'it is not considered "sexy"' as ending on "sexy": the stance does not.
    record = "middle_normal_202207201106175293_v2.jpg"
    assert not _found(dev_report, "explanation_contradicts_label", record)
    # "Are the characters engaged in sexual activity? No." does not deny "sexy".
    assert not _found(
        dev_report, "yes_no_contradicts_label", "sexy_implicit_202401170000000135.jpg"
    )
    # "Is the person in the image male? No." names no man.
    assert not _found(
        dev_report, "people_not_in_explanation", "bite_finger_20231122110742_1793.JPEG"
    )


# --------------------------------------------------------------------------- synthetic file
def _record(image: str, label: str, explanation: str, **extra: object) -> str:
    record = {"image": image, "category": "upper_bust", "label": label,
              "explanation": explanation, "qa": [], "mc": [], **extra}  # fmt: skip
    return json.dumps(record)


def _qa(kind: str, question: str, answer: str) -> dict[str, str]:
    return {"type": kind, "question": question, "answer": answer}


GOOD_MC = {"question": "What is she wearing?", "answer": "B.",
           "choices": ["A. A coat", "B. A bikini", "C. A suit", "D. A dress"]}  # fmt: skip
SEXY = "A woman in a bikini poses; she leans forward. The image is sexy."
LINES = [
    # 1: clean
    _record("clean.jpg", "sexy", SEXY, mc=[GOOD_MC],
            qa=[_qa("Yes/No", "Is the image sexy?", "Yes."), _qa("What", "What is she wearing?",
                                                                 "A bikini.")]),
    # 2: a yes to a sexual-connotation question under "not sexy"
    _record("yes_no.jpg", "not sexy", "A person in a coat. The image is not sexy.",
            category="upper_normal",
            qa=[_qa("Yes/No", "Does the image have a sexual connotation?", "Yes.")]),
    # 3: the explanation ends by denying the flagged label
    _record("explanation.jpg", "sexy", "A woman in a bikini. The image is not sexy."),
    # 4: upper_normal is "not sexy" under R1, the base rule
    _record("rule.jpg", "sexy", SEXY, category="upper_normal"),
    # 5: three options and an answer outside them
    _record("mc.jpg", "sexy", SEXY,
            mc=[{"question": "What colour?", "choices": ["A. Red", "B. Blue", "C. Green"],
                 "answer": "E."}]),
    # 6: one question repeated with the same answer, one with the other answer
    _record("repeat.jpg", "sexy", SEXY,
            qa=[_qa("Yes/No", "Is she smiling?", "Yes."), _qa("Yes/No", "Is she smiling?", "Yes."),
                _qa("Yes/No", "Is she standing?", "Yes."),
                _qa("Yes/No", "Is she standing?", "No.")]),
    # 7: a man the explanation never shows
    _record("people.jpg", "not sexy", "A person stands; their coat is red. It is not sexy.",
            category="upper_normal", qa=[_qa("What", "What is the man holding?", "An umbrella.")]),
    # 8: a Yes/No item answered otherwise
    _record("type.jpg", "sexy", SEXY, qa=[_qa("Yes/No", "Is the bikini red or blue?", "Red.")]),
    # 9: refusal text as an answer
    _record("refusal.jpg", "sexy", SEXY,
            qa=[_qa("How", "How is she posing?", "I'm sorry, but I can't help with that.")]),
    # 10: not a label of the policy
    _record("label.jpg", "spicy", SEXY),
    # 11-14: bad lines
    '{"image": "broken.jpg", "label": ',
    '["a", "list"]',
    json.dumps({"image": "nolabel.jpg", "explanation": "x"}),
    json.dumps({"id": "1", "image": "a.jpg", "conversations": [{"from": "human", "value": "?"}]}),
    "",
    # 16: the explanation writes one sentence twice
    _record("looping.jpg", "sexy", "A woman in a bikini poses on the sand. A woman in a bikini "
            "poses on the sand. The image is sexy."),
    # 17: the explanation states both labels
    _record("two_labels.jpg", "not sexy", "A person in a coat. The image is sexy, not sexy.",
            category="upper_normal"),
    # 18: schema residue in the explanation
    _record("json.jpg", "sexy", SEXY + ' {"type": "string"}'),
    # 19: an open answer that breaks off
    _record("malformed.jpg", "sexy", SEXY, qa=[_qa("What", "What is she holding?",
                                                  "A towel with the")]),
]  # fmt: skip
EXPECTED_RECORD = {
    "yes_no_contradicts_label": "yes_no.jpg",
    "explanation_contradicts_label": "explanation.jpg",
    "label_contradicts_rule_table": "rule.jpg",
    "multiple_choice_invalid": "mc.jpg",
    "conflicting_repeated_answers": "repeat.jpg",
    "repeated_question": "repeat.jpg",
    "people_not_in_explanation": "people.jpg",
    "qa_type_mismatch": "type.jpg",
    "refusal": "refusal.jpg",
    "looping_text": "looping.jpg",
    "states_two_labels": "two_labels.jpg",
    "json_in_text": "json.jpg",
    "malformed_qa": "malformed.jpg",
    "unknown_label": "label.jpg",
}


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    path = tmp_path / "instruct.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_each_defect_kind_once_and_bad_lines_named(synthetic: Path) -> None:
    report = audit_file(synthetic, load_policy("icm_sexy"))
    assert set(EXPECTED_RECORD) == set(KINDS)
    assert report.records == 14
    assert report.counts() == dict.fromkeys(KINDS, 1)
    assert {f.kind: f.record for f in report.findings} == EXPECTED_RECORD
    assert [b.line for b in report.bad_lines] == [11, 12, 13, 14]
    messages = [b.message for b in report.bad_lines]
    assert messages[0].startswith("not JSON")
    assert "not a record" in messages[1]
    assert messages[2] == "label: Field required"
    assert "LLaVA" in messages[3]
    mc = next(f for f in report.findings if f.kind == "multiple_choice_invalid")
    assert "has 3 options instead of 4" in mc.why and "'E.' is not one of" in mc.why
    assert next(f for f in report.findings if f.kind == "people_not_in_explanation").line == 7


def test_cli_prints_examples_and_errors(synthetic: Path) -> None:
    result = runner.invoke(_app(), ["audit", str(synthetic), "--examples", "1"])
    assert result.exit_code == 0, result.output
    assert f"{synthetic}:11: not JSON" in result.stderr
    assert f"{synthetic}:14: a LLaVA conversation record" in result.stderr
    out = result.stdout
    assert "14 records" in out and "4 bad lines" in out
    assert "people.jpg (line 7)" in out
    assert "Q: What is the man holding?" in out
    assert "why: names man, which the explanation never mentions" in out


def test_cli_json_counts(synthetic: Path) -> None:
    result = runner.invoke(_app(), ["audit", str(synthetic), "--json", "--examples", "0"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["counts"] == dict.fromkeys(KINDS, 1)
    assert data["records"] == 14 and data["bad_lines"] == 4
    assert data["examples"] == {}


def test_cli_missing_file_and_unknown_policy(tmp_path: Path, synthetic: Path) -> None:
    missing = runner.invoke(_app(), ["audit", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1 and "no file at" in missing.stderr
    policy = runner.invoke(_app(), ["audit", str(synthetic), "--policy", "no_such_policy"])
    assert policy.exit_code == 1 and "no_such_policy" in policy.stderr
