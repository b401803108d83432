"""Policies as data: the shipped policies load and agree with the released ICM-Assistant data,
and every kind of broken policy file is reported with its file, its exact line and its field."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import typer
from release_data import require
from typer.testing import CliRunner

from data.policy import (
    POLICY_DIR,
    PolicyError,
    PolicyIssue,
    check_policy,
    list_policies,
    load_policy,
    parse_policy,
)
from data.yaml_lines import load_located
from graphs.commands.rules import app

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "policies"
LEG_CATEGORIES = ("middle_leg", "lower_leg", "whole_leg")
runner = CliRunner()


def released_records() -> list[dict]:
    path = require("instruct_dev.jsonl")  # ICM_RELEASE_DATA (tests/release_data.py)
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


# --- shipped policies -------------------------------------------------------------------------


def test_the_four_policies_are_shipped():
    assert {"icm_sexy", "horrifying", "gambling", "general_safety"} <= set(list_policies())


@pytest.mark.parametrize("name", list_policies())
def test_shipped_policy_loads_and_has_a_complete_table(name):
    policy = load_policy(name)
    assert policy.name == name
    assert len(policy.rules) >= 2
    assert policy.flagged_labels and policy.flagged_labels != set(policy.verdicts)
    table = policy.product_table()
    assert len(table) == len(policy.categories) * len(policy.rules)
    assert {row.verdict for row in table} <= set(policy.verdicts)


def test_icm_sexy_has_exactly_the_released_categories():
    released = {record["category"] for record in released_records()}
    policy = load_policy("icm_sexy")
    assert len(released) == 35
    assert set(policy.categories) == released


def test_icm_sexy_base_rule_reproduces_every_released_label():
    policy = load_policy("icm_sexy")
    assert policy.base_rule == "R1"
    wrong = [
        (record["category"], record["label"])
        for record in released_records()
        if policy.verdict(record["category"], policy.base_rule) != record["label"]
    ]
    assert wrong == []
    assert all(r.provenance == "paper" for r in policy.rules["R1"].verdicts.values())


def test_icm_sexy_sentences_are_copied_verbatim_from_the_paper():
    path = require("rule_definition.csv")
    with path.open(encoding="utf-8") as handle:
        sentences = {
            row["Attribute combination"]: row["Explicit description"]
            for row in csv.DictReader(handle)
        }
    policy = load_policy("icm_sexy")
    copied = {k: c for k, c in policy.categories.items() if c.source == "rule_definition.csv"}
    assert sorted(c.display_name for c in copied.values()) == sorted(sentences)
    for key, category in copied.items():
        assert category.description == sentences[category.display_name], key
    assert {k for k, c in policy.categories.items() if c.source == "ours"} == {
        "stockings",
        "male_sexy",
    }


def test_bare_legs_flip_between_rules_as_in_the_paper_teaser():
    policy = load_policy("icm_sexy")
    for key in LEG_CATEGORIES:
        verdicts = [policy.verdict(key, rule) for rule in ("R1", "R2", "R3", "R4")]
        assert verdicts == ["sexy", "not sexy", "sexy", "not sexy"], key
        assert all(policy.ruling(key, rule).provenance == "paper" for rule in policy.rules)


# The paper's teaser (Fig. 1a) fixes the crossing of the four rule variants.
TEASER_AUDIENCES = {
    "R1": ("under 13", "conservative"),
    "R2": ("under 13", "open"),
    "R3": ("13 and over", "conservative"),
    "R4": ("13 and over", "open"),
}
# Principle (2) of the policy's notes: mild suggestive behaviour and attire are flagged for
# children everywhere and, for 13+, only in a conservative culture (pout and tongue: never for 13+).
AGE_DECIDED = ("sexy_kiss", "pout", "tongue", "bite_lip", "stockings", "wet", "male_sexy")


def test_rule_audiences_are_the_teaser_crossing():
    policy = load_policy("icm_sexy")
    for rule, (age, culture) in TEASER_AUDIENCES.items():
        audience = policy.rules[rule].audience
        assert (audience.age_group, audience.culture) == (age, culture), rule
    shown = json.loads(invoke("show", "icm_sexy", "--json").output)["rules"]
    assert {r: (v["age_group"], v["culture"]) for r, v in shown.items()} == TEASER_AUDIENCES


def test_open_culture_columns_follow_the_policy_principle():
    policy = load_policy("icm_sexy")
    for key in AGE_DECIDED:
        assert policy.verdict(key, "R2") == "sexy", key  # children, open culture
        assert policy.verdict(key, "R4") == "not sexy", key  # 13+, open culture
        assert policy.verdict(key, "R1") == "sexy", key
        expected_r3 = "not sexy" if key in ("pout", "tongue") else "sexy"
        assert policy.verdict(key, "R3") == expected_r3, key
    # Everything else is decided by culture (or is sexy for every audience): a child audience
    # and a 13+ audience of the same culture get the same verdict.
    for key in set(policy.categories) - set(AGE_DECIDED) - {"pout", "tongue"}:
        assert policy.verdict(key, "R2") == policy.verdict(key, "R4"), key
    # A younger audience is never judged more leniently within one culture.
    for key in policy.categories:
        for young, old in (("R1", "R3"), ("R2", "R4")):
            if policy.verdict(key, old) == "sexy":
                assert policy.verdict(key, young) == "sexy", (key, young)


def test_low_exposure_is_never_sexy_and_rules_differ():
    policy = load_policy("icm_sexy")
    normals = [key for key in policy.categories if key.endswith("_normal")]
    assert len(normals) == 4
    assert all(policy.verdict(k, r) == "not sexy" for k in normals for r in policy.rules)
    columns = {tuple(policy.verdict(k, r) for k in policy.categories) for r in policy.rules}
    assert len(columns) == len(policy.rules)


def test_policy_identity_question_and_flags():
    policy = load_policy("icm_sexy")
    path = POLICY_DIR / "icm_sexy.yaml"
    assert policy.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert policy.path == path.resolve()
    assert policy.question == "Is the image sexy?"
    assert policy.is_flagged("sexy") and not policy.is_flagged("not sexy")
    assert load_policy(path) == policy  # a path and a name give the same policy
    with pytest.raises(KeyError, match="R9"):
        policy.verdict("whole_leg", "R9")


def test_product_table_rows_and_subset():
    policy = load_policy("icm_sexy")
    table = policy.product_table()
    assert len(table) == 35 * 4
    assert [row.rule for row in table[:4]] == ["R1", "R2", "R3", "R4"]
    first = table[0]
    assert first.category == "upper_shoulders_and_belly"
    assert first.attributes == {"region": "upper", "exposure": "shoulders_and_belly"}
    assert first.flagged is True and first.reason
    only_r2 = policy.product_table(["R2"])
    assert len(only_r2) == 35
    assert {row.rule for row in only_r2} == {"R2"}


def test_unknown_policy_name_lists_the_shipped_ones():
    with pytest.raises(PolicyError) as caught:
        load_policy("no_such_policy")
    assert "icm_sexy" in caught.value.errors[0].message


# --- the commands ---------------------------------------------------------------------------


def test_rules_list_shows_every_shipped_policy():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    for name in list_policies():
        assert name in result.output
    rows = json.loads(invoke("list", "--json").output)
    sexy = next(row for row in rows if row["name"] == "icm_sexy")
    assert sexy == {
        "name": "icm_sexy",
        "term": "sexy",
        "attributes": 6,
        "categories": 35,
        "rules": 4,
        "file": "icm_sexy.yaml",
    }


def test_rules_list_fails_when_a_shipped_policy_is_broken(monkeypatch):
    monkeypatch.setattr("data.policy.POLICY_DIR", FIXTURES)
    result = invoke("list")
    assert result.exit_code == 1
    assert "11 errors: run `icm rules check`" in result.output
    result = invoke("list", "--json")
    assert result.exit_code == 1
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["many_errors"]["errors"] == 11
    assert rows["syntax_error"]["errors"] == 1
    assert rows["valid"]["categories"] == 3 and "errors" not in rows["valid"]


def test_every_command_and_option_has_help():
    group = typer.main.get_command(app)
    assert group.help
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:
            if param.name != "help":
                assert getattr(param, "help", None), f"{name} {param.name}"


def test_rules_show_one_rule_lists_every_category_with_verdict_and_reason():
    result = invoke("show", "icm_sexy", "--rule", "R1")
    assert result.exit_code == 0, result.output
    policy = load_policy("icm_sexy")
    lines = result.output.splitlines()
    for key in policy.categories:
        row = next(line for line in lines if line.strip().startswith(key + " "))
        assert policy.verdict(key, "R1") in row
        assert policy.reason(key, "R1")[:20] in row
    assert "reason" in result.output


def test_rules_show_json_parses_and_has_the_requested_rules():
    result = invoke("show", "icm_sexy", "--json", "--rule", "R1", "--rule", "R2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["question"] == "Is the image sexy?"
    assert list(data["rules"]) == ["R1", "R2"]
    assert len(data["categories"]) == 35
    by_key = {row["category"]: row for row in data["categories"]}
    assert by_key["whole_leg"]["verdicts"]["R1"]["verdict"] == "sexy"
    assert by_key["whole_leg"]["verdicts"]["R2"]["verdict"] == "not sexy"
    assert by_key["whole_leg"]["verdicts"]["R2"]["flagged"] is False


def test_rules_show_accepts_a_path_and_rejects_an_unknown_rule():
    result = invoke("show", str(FIXTURES / "valid.yaml"))
    assert result.exit_code == 0, result.output
    assert "lower_leg" in result.output
    result = invoke("show", "icm_sexy", "--rule", "R9")
    assert result.exit_code == 2
    assert "R9" in result.output


def test_rules_check_passes_every_shipped_policy():
    files = [str(POLICY_DIR / f"{name}.yaml") for name in list_policies()]
    result = invoke("check", *files)
    assert result.exit_code == 0, result.output
    assert result.output.count(": OK (") == len(files)


BROKEN = [
    # fixture, line, field, what the message must say
    (
        "duplicate_product",
        25,
        "categories.lower_normal.attributes",
        "same attribute product as category 'lower_leg' (line 21)",
    ),
    ("missing_verdict", 38, "rules.R2.verdicts", "no verdict for category 'lower_leg'"),
    (
        "unknown_value",
        22,
        "categories.lower_leg.attributes.region",
        "unknown value 'lowr' (expected one of: upper, lower)",
    ),
    ("syntax_error", 23, "(yaml)", "mapping values are not allowed"),
    (
        "duplicate_key",
        25,
        "categories.lower_leg.attributes.region",
        "duplicate key 'region' (first defined at line 23)",
    ),
    ("unknown_verdict_label", 33, "rules.R1.verdicts.lower_leg.verdict", "label 'sxy'"),
    ("unknown_category", 42, "rules.R2.verdicts.upper_leg", "unknown category 'upper_leg'"),
    (
        "bad_synonym",
        19,
        "attributes.exposure.values.leg.synonyms[1]",
        "'Bare Thighs' is not a phrase",
    ),
    (
        "duplicate_synonym",
        19,
        "attributes.exposure.values.leg.synonyms",
        "synonym 'thigh' is listed twice",
    ),
]


@pytest.mark.parametrize(("fixture", "line", "field", "message"), BROKEN)
def test_rules_check_reports_file_line_and_field(fixture, line, field, message):
    path = FIXTURES / f"{fixture}.yaml"
    result = invoke("check", str(path))
    assert result.exit_code == 1, result.output
    issue = f"{path}:{line}: {field}: "
    assert issue in result.output, result.output
    assert message in result.output
    assert result.output.count(f"{path}:") == 1, "exactly one issue expected"


def test_rules_check_mixed_files_fails_but_reports_the_good_one():
    result = invoke("check", str(FIXTURES / "valid.yaml"), str(FIXTURES / "missing_verdict.yaml"))
    assert result.exit_code == 1
    assert f"{FIXTURES / 'valid.yaml'}: OK" in result.output


def test_every_issue_in_a_file_is_collected():
    with pytest.raises(PolicyError) as caught:
        load_policy(FIXTURES / "many_errors.yaml")
    found = {(issue.line, issue.field) for issue in caught.value.errors}
    assert all(isinstance(issue, PolicyIssue) for issue in caught.value.errors)
    assert found == {
        (6, "base_rule"),
        (8, "verdicts.sexy.flagged"),
        (15, "categories.upper_any.description"),
        (17, "categories.upper_any.descripton"),
        (19, "categories.lower_any.attributes.region"),
        (22, "categories.colour_red.attributes.colour"),
        (23, "categories.colour_red.description"),
        (26, "rules.R1.audience.culture"),
        (28, "rules.R1.verdicts"),
        (30, "rules.R1.verdicts.upper_any"),
        (31, "rules.R1.verdicts.lower_any.reason"),
    }
    messages = "\n".join(str(issue) for issue in caught.value.errors)
    assert "at most one value per attribute" in messages
    assert "unknown field 'descripton'" in messages
    assert str(caught.value) == messages


def test_label_flags_must_allow_a_yes_and_a_no():
    text = (FIXTURES / "valid.yaml").read_text(encoding="utf-8")
    text = text.replace("not sexy: {flagged: false", "not sexy: {flagged: true")
    with pytest.raises(PolicyError, match="every label is flagged"):
        parse_policy(text, name="all_flagged")
    assert parse_policy((FIXTURES / "valid.yaml").read_text(), name="ok").rules["R2"]


def test_check_policy_returns_issues_instead_of_raising():
    assert check_policy(FIXTURES / "valid.yaml") == []
    issues = check_policy(FIXTURES / "unknown_value.yaml")
    assert [(i.line, i.field) for i in issues] == [(22, "categories.lower_leg.attributes.region")]


# --- the line-keeping YAML reader -----------------------------------------------------------


def test_yaml_reader_keeps_lines_and_rejects_what_pyyaml_would_hide():
    doc = load_located("a:\n  b: 1\n  c:\n    - x\n    - y\n  b: 2\n<<: {z: 1}\n")
    assert doc.data == {"a": {"b": 1, "c": ["x", "y"]}}
    assert doc.lines[("a", "c", 1)] == 5
    assert doc.line_of(("a", "c", "missing")) == 3
    assert [(p.line, p.path) for p in doc.problems] == [(6, ("a", "b")), (7, ())]


def test_attribute_values_take_a_description_or_description_and_synonyms():
    text = (FIXTURES / "bad_synonym.yaml").read_text(encoding="utf-8")
    policy = parse_policy(text.replace("Bare Thighs", "bare thighs"), name="fixture")
    exposure = policy.attributes["exposure"]
    assert exposure.values == {"leg": "bare legs", "normal": "covered"}
    assert exposure.mentions("leg") == ["leg", "bare thighs", "shorts"]
    assert exposure.mentions("normal") == ["normal"]  # bare string: the value's name words
    region = policy.attributes["region"]
    assert region.synonyms == {} and region.mentions("upper") == ["upper"]
