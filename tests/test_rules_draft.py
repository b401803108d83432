"""`icm rules draft`: scripted drafts from the fake server, validated, repaired or kept with their
errors; the code-side decomposition (verdict tables, products, orthogonality, audiences)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer
from fakes.base import reply
from fakes.icm_responder import ICMResponder
from PIL import Image
from typer.testing import CliRunner

from agents.rule_draft_policy import (
    audience_attribute,
    fix_outline,
    outline_issues,
    parse_audiences,
    render_policy,
)
from agents.rule_draft_schema import (
    DraftAttribute,
    DraftRule,
    DraftValue,
    PolicyDraft,
    PolicyOutline,
    outline_model,
)
from agents.rule_draft_table import table_shape, tidy_table
from agents.rule_drafter import check_draft, draft_coverage
from data.policy import check_policy, load_policy
from data.store import Store
from graphs.cli import app
from graphs.config import load_config
from graphs.runner import GenerationRun

RULE_TEXT = """Gambling: children under 13 must not see any gambling (casinos, betting, slot
machines). Adults may see gambling where it is legal, but betting adverts are flagged.
Card or dice games without money are fine for everyone."""

FAST = ["max_retries=0", "jitter=false", "backoff_base_s=0"]


def valid_draft() -> dict[str, Any]:
    """A small, complete gambling draft as a model would answer it."""

    def ruling(rule: str, flagged: bool, reason: str) -> dict[str, Any]:
        return {"rule": rule, "flagged": flagged, "reason": reason}

    return {
        "term": "gambling-related",
        "title": "Gambling content",
        "description": "Whether an image shows or promotes gambling, per audience.",
        "attributes": [
            {
                "name": "object",
                "description": "The gambling object in view.",
                "values": [
                    {"name": "Slot Machine", "description": "a slot machine",
                     "synonyms": ["Slot machine", "slot", "fruit machine."]},
                    {"name": "dice", "description": "dice", "synonyms": ["dice", "die"]},
                    {"name": "none", "description": "no gambling object", "synonyms": []},
                ],
            },
            {
                "name": "activity",
                "description": "What is done.",
                "values": [
                    {"name": "betting", "description": "money is staked",
                     "synonyms": ["bet", "betting", "money"]},
                    {"name": "playing", "description": "a game without a stake",
                     "synonyms": ["play", "game"]},
                    {"name": "promoting", "description": "an advert for gambling",
                     "synonyms": ["advert", "bonus"]},
                ],
            },
        ],
        "rules": [
            {"id": "R1", "age_group": "under 13", "culture": "any",
             "description": "No gambling at all for children."},
            {"id": "R2", "age_group": "18 and over", "culture": "gambling legal",
             "description": "Gambling may be shown; adverts are flagged."},
        ],
        "categories": [
            {"name": "slot_machine",
             "description": "It is known that the image shows slot machines.",
             "product": [{"attribute": "object", "value": "slot machine"}],
             "verdicts": [ruling("R1", True, "A gambling device."),
                          ruling("R2", False, "A legal product for adults.")]},
            {"name": "dice_for_money",
             "description": "It is known that the image shows people betting on dice.",
             "product": [{"attribute": "object", "value": "dice"},
                         {"attribute": "activity", "value": "betting"}],
             "verdicts": [ruling("R1", True, "Betting on dice is gambling."),
                          ruling("R2", False, "Legal betting between adults.")]},
            {"name": "betting_advert",
             "description": "It is known that the image advertises betting.",
             "product": [{"attribute": "activity", "value": "promoting"}],
             "verdicts": [ruling("R1", True, "Adverts must not reach children."),
                          ruling("R2", True, "Gambling adverts are regulated.")]},
            {"name": "board_game",
             "description": "It is known that the image shows a board game played with dice.",
             "product": [{"attribute": "object", "value": "dice"},
                         {"attribute": "activity", "value": "playing"}],
             "verdicts": [ruling("R1", False, "A game without a stake."),
                          ruling("R2", False, "A game without a stake.")]},
        ],
    }  # fmt: skip


def broken_draft() -> dict[str, Any]:
    """The valid draft with two mistakes: a value that no attribute has, a missing verdict."""
    draft = copy.deepcopy(valid_draft())
    draft["categories"][0]["product"][0]["value"] = "roulette"
    draft["categories"][3]["verdicts"] = draft["categories"][3]["verdicts"][:1]
    return draft


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def draft_cli(server: FakeOpenAIServer, tmp_path: Path, *extra: str) -> Any:
    rules = tmp_path / "gambling.txt"
    rules.write_text(RULE_TEXT, encoding="utf-8")
    args = ["rules", "draft", str(rules), "--model", f"openai-compatible:{server.base_url}#fake",
            "--out", str(tmp_path / "draft.yaml"), "--db", str(tmp_path / "icm.duckdb"),
            *(x for s in FAST for x in ("--setting", s)), *extra]  # fmt: skip
    if "--two-asks" in args:  # the default; the scripted whole drafts below are one answer
        args.remove("--two-asks")
    else:
        args.append("--one-ask")
    return CliRunner().invoke(app, args)


def user_text(request: Any) -> str:
    return next(m["content"] for m in request.body["messages"] if m["role"] == "user")


def test_a_valid_draft_is_written_loaded_shown_and_traced(server, tmp_path, fake_keys) -> None:
    server.push(reply(valid_draft()))
    result = draft_cli(server, tmp_path)
    assert result.exit_code == 0, result.output
    out = tmp_path / "draft.yaml"
    policy = load_policy(out)
    assert policy.term == "gambling-related"
    assert set(policy.verdicts) == {"gambling-related", "not gambling-related"}
    # names normalised the same way in the value and in the reference to it
    assert policy.categories["slot_machine"].attributes == {"object": "slot_machine"}
    assert policy.attributes["object"].synonyms["slot_machine"] == [
        "slot machine", "slot", "fruit machine"
    ]  # fmt: skip
    assert policy.verdict("betting_advert", "R2") == "gambling-related"
    assert policy.notes == RULE_TEXT
    text = out.read_text()
    assert text.splitlines()[1] == "# Status: validated after 0 repair(s)."
    # 3 objects x 3 activities, enumerated by code
    assert "Attribute products (enumerated from the attributes by code): 9;" in text
    assert "# Review:" not in text  # R1 and R2 both flag some categories and allow others
    shown = CliRunner().invoke(app, ["rules", "show", str(out)])
    assert shown.exit_code == 0 and "dice_for_money" in shown.output
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        runs = store.rows("SELECT kind, status FROM runs")
        calls = store.rows("SELECT role, attempt, status FROM llm_calls")
    assert runs == [{"kind": "draft", "status": "finished"}]
    assert calls == [{"role": "rule_drafter", "attempt": 1, "status": "ok"}]


def test_a_rejected_draft_goes_back_with_the_loader_errors_and_is_repaired(
    server, tmp_path, fake_keys
) -> None:
    server.push(reply(broken_draft()), reply(valid_draft()))
    result = draft_cli(server, tmp_path)
    assert result.exit_code == 0, result.output
    assert "attempt 1: 2 error(s)" in result.output
    assert "valid after 1 repair(s)" in result.output
    first, second = server.chat_requests()
    assert "errors" not in user_text(first)
    feedback = user_text(second)
    out = tmp_path / "draft.yaml"
    assert f"{out}:" in feedback
    assert "categories.slot_machine.attributes.object: unknown value 'roulette'" in feedback
    assert "rules.R2.verdicts: no verdict for category 'board_game'" in feedback
    assert "roulette" in feedback.split("errors")[0]  # the file it produced is shown too
    load_policy(out)
    assert (out.read_text().splitlines()[1]) == "# Status: validated after 1 repair(s)."
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        attempts = store.rows("SELECT attempt FROM llm_calls ORDER BY attempt")
    assert [r["attempt"] for r in attempts] == [1, 2]


def test_a_draft_that_never_validates_is_kept_with_its_errors_and_exits_1(
    server, tmp_path, fake_keys
) -> None:
    server.push(*(reply(broken_draft()) for _ in range(3)))
    result = draft_cli(server, tmp_path, "--max-repairs", "2")
    assert result.exit_code == 1
    assert len(server.chat_requests()) == 3
    out = tmp_path / "draft.yaml"
    text = out.read_text()
    assert "DOES NOT VALIDATE after 2 repair(s)" in text.splitlines()[1]
    errors = [str(issue) for issue in check_policy(out)]
    assert len(errors) == 2
    for error in errors:  # the loader's own errors, in the file and on stdout
        assert f"# {error}" in text
        assert error in result.output
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        assert store.rows("SELECT status FROM runs") == [{"status": "failed"}]


def test_a_call_that_returns_no_draft_writes_nothing_and_fails(server, tmp_path, fake_keys) -> None:
    server.push(*(reply("not json at all") for _ in range(3)))
    result = draft_cli(server, tmp_path)
    assert result.exit_code == 1
    assert not (tmp_path / "draft.yaml").exists()
    assert "no draft written: parse_failed" in result.output


def test_audiences_the_draft_does_not_serve_are_errors(server, tmp_path, fake_keys) -> None:
    server.push(reply(valid_draft()))
    result = draft_cli(server, tmp_path, "--audiences", "under 13/any; 13 and over/open",
                       "--max-repairs", "0")  # fmt: skip
    assert result.exit_code == 1
    assert "rules: no rule variant for the audience '13 and over / open'" in result.output
    assert "rules.R2.audience: audience '18 and over / gambling legal' was not asked" in (
        result.output
    )
    assert "- R2: 13 and over / open" in user_text(server.chat_requests()[0])


def check(draft: dict[str, Any]) -> list[str]:
    value = PolicyDraft.model_validate(draft)
    text = render_policy(value, notes="n", header=["h", "s"])
    return [str(i) for i in check_draft(text, value, name="d", file="d.yaml")]


def test_the_verdict_table_is_assembled_by_code_not_trusted() -> None:
    draft = valid_draft()
    assert check(draft) == []
    draft["categories"][1]["verdicts"].append({"rule": "R3", "flagged": True, "reason": "x"})
    draft["categories"][2]["verdicts"].append({"rule": "R1", "flagged": False, "reason": "y"})
    draft["categories"][3]["verdicts"].pop()
    errors = check(draft)
    assert any("rules.R2.verdicts: no verdict for category 'board_game'" in e for e in errors)
    assert any("duplicate key 'betting_advert'" in e for e in errors)
    assert any("categories.dice_for_money: a verdict for rule variant 'R3'" in e for e in errors)


def test_duplicate_names_and_overlapping_attributes_are_reported_with_lines() -> None:
    draft = valid_draft()
    draft["categories"][3]["name"] = "dice for money"
    draft["attributes"][1]["values"][0]["name"] = "dice"
    errors = check(draft)
    assert any("duplicate key 'dice_for_money' (first defined at line" in e for e in errors)
    assert any(
        "attributes.activity.values.dice: value 'dice' is also a value of attribute 'object'" in e
        for e in errors
    )
    assert all(e.startswith("d.yaml:") and e.split(":")[1].isdigit() for e in errors)


def test_attribute_products_are_enumerated_from_the_attributes() -> None:
    found = draft_coverage(PolicyDraft.model_validate(valid_draft()))
    assert found.products == 9  # 3 objects x 3 activities
    assert found.uncovered == [
        {"object": "none", "activity": "betting"}, {"object": "none", "activity": "playing"}
    ]  # fmt: skip
    # a slot machine in a betting advert is both categories, and R2 rules them differently
    assert found.conflicts == ["R2: slot_machine vs betting_advert"]


def test_parse_audiences_rejects_a_part_without_culture() -> None:
    assert [str(a) for a in parse_audiences("under 13/any;13 and over/open")] == [
        "under 13 / any", "13 and over / open"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="bad audience 'adults'"):
        parse_audiences("under 13/any; adults")


def test_diff_pairs_renamed_categories_and_shows_verdict_changes(tmp_path) -> None:
    value = PolicyDraft.model_validate(valid_draft())
    draft = tmp_path / "draft.yaml"
    draft.write_text(render_policy(value, notes="n", header=["h", "s"]))
    result = CliRunner().invoke(app, ["rules", "diff", str(draft), "gambling", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert not found["same"]
    # board_game fixes object=dice, activity=playing in both files: paired by product
    assert found["category_pairs"]["board_game"] == "board_game"
    assert found["category_pairs"]["betting_advert"] == "betting_promotion"
    assert (
        "~ category betting_advert -> betting_promotion: same product {activity=promoting}"
        in (found["categories"])
    )
    assert "+ rule R3: 18 and over / gambling prohibited" in found["rules"]
    assert "~ attribute object: values -none" not in found["attributes"]
    assert any(line.startswith("+ attribute setting") for line in found["attributes"])
    # the draft leaves slot machines unflagged for adults where the shipped one agrees: no line;
    # under R1 both flag them
    assert found["verdicts"]["R1"] == []
    text = CliRunner().invoke(app, ["rules", "diff", "gambling", "gambling"])
    assert text.exit_code == 0 and "no differences" in text.output


def test_a_drafted_policy_runs_through_generate(server, tmp_path, fake_keys) -> None:
    server.push(reply(valid_draft()))
    assert draft_cli(server, tmp_path).exit_code == 0
    policy = str(tmp_path / "draft.yaml")
    rows = []
    for n, category in enumerate(["slot_machine", "board_game"]):
        Image.new("RGB", (40 + n, 30), (n * 60, 90, 160)).save(tmp_path / f"{n}.png")
        rows.append({"image": f"{n}.png", "policy": policy, "category": category})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with FakeOpenAIServer(responder=ICMResponder()) as gen:
        options = {
            "manifest": manifest, "db": tmp_path / "gen.duckdb", "rules": ["R1", "R2"],
            "roles": {"all": f"openai-compatible:{gen.base_url}#fake-model"},
            "role_settings": {"all": {"jitter": "false", "backoff_base_s": "0"}},
            "perception": False,
        }  # fmt: skip
        summary = asyncio.run(GenerationRun(load_config(None, options)).run())
    assert summary.counts["accepted"] == 2, summary.counts
    with Store.open(tmp_path / "gen.duckdb", read_only=True) as store:
        runs = store.rows("SELECT policy_name FROM runs")
    assert runs and all(r["policy_name"] for r in runs)


def test_each_checked_draft_is_on_disk_before_the_repair_is_asked(tmp_path, fake_keys) -> None:
    out = tmp_path / "draft.yaml"
    on_disk: list[str | None] = []

    def responder(body: dict[str, Any]) -> Any:
        on_disk.append(out.read_text().splitlines()[1] if out.exists() else None)
        return reply(broken_draft() if len(on_disk) == 1 else valid_draft())

    with FakeOpenAIServer(responder=responder) as fake:
        assert draft_cli(fake, tmp_path).exit_code == 0
    # a run killed while the repair was being written still leaves the first draft + errors
    assert on_disk[0] is None
    assert on_disk[1] is not None and "DOES NOT VALIDATE after 0 repair(s)" in on_disk[1]


# ----------------------------------------------------------------------------- two asks


def outline_of(draft: dict[str, Any]) -> dict[str, Any]:
    """The first ask's answer: the draft without its categories."""
    return {k: v for k, v in draft.items() if k != "categories"}


def table_of(draft: dict[str, Any]) -> dict[str, Any]:
    """The second ask's answer for ``draft``'s categories: every attribute given (``any``
    where the category does not fix it), a verdict object keyed by rule variant."""
    attributes = [a["name"] for a in draft["attributes"]]
    rows = []
    for c in draft["categories"]:
        fixed = {p["attribute"]: p["value"].lower().replace(" ", "_") for p in c["product"]}
        rows.append({
            "name": c["name"],
            "description": c["description"],
            "product": {a: fixed.get(a, "any") for a in attributes},
            "verdicts": {v["rule"]: {"flagged": v["flagged"], "reason": v["reason"]}
                         for v in c["verdicts"]},
        })  # fmt: skip
    return {"categories": rows}


def schema_of(request: Any) -> dict[str, Any]:
    schema: dict[str, Any] = request.body["response_format"]["json_schema"]["schema"]
    return schema


def test_two_asks_constrain_the_categories_to_the_outlines_names(
    server, tmp_path, fake_keys
) -> None:
    draft = valid_draft()
    server.push(reply(outline_of(draft)), reply(table_of(draft)))
    result = draft_cli(server, tmp_path, "--two-asks")
    assert result.exit_code == 0, result.output
    assert "attempt 1 (outline): valid" in result.output
    assert "attempt 1 (categories): valid" in result.output
    out = tmp_path / "draft.yaml"
    policy = load_policy(out)
    assert policy.categories["board_game"].attributes == {"object": "dice", "activity": "playing"}
    assert policy.verdict("betting_advert", "R2") == "gambling-related"
    first, second = server.chat_requests()
    assert "categories" not in schema_of(first)["properties"]
    # the second schema is built from the outline: each attribute's own values (or any), and
    # one required verdict per rule variant
    defs = schema_of(second)["$defs"]
    # a product fixes at least one attribute: anyOf "object first" | "object any, activity"
    assert [s["$ref"] for s in defs["Category"]["properties"]["product"]["anyOf"]] == [
        "#/$defs/Product0", "#/$defs/Product1"
    ]  # fmt: skip
    assert defs["Product0"]["properties"]["object"]["enum"] == ["slot_machine", "dice", "none"]
    assert defs["Product0"]["properties"]["activity"]["enum"] == ["betting", "playing",
                                                                  "promoting", "any"]  # fmt: skip
    assert defs["Product1"]["properties"]["object"]["const"] == "any"
    assert defs["Product1"]["properties"]["activity"]["enum"] == ["betting", "playing",
                                                                  "promoting"]  # fmt: skip
    assert defs["Product0"]["required"] == ["object", "activity"]
    assert defs["Verdicts"]["required"] == ["R1", "R2"]
    assert "- activity: betting, playing, promoting (or any)" in user_text(second)
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        stages = store.rows("SELECT stage FROM llm_calls ORDER BY started_at")
        config = store.rows("SELECT config_json FROM runs")[0]["config_json"]
    assert [r["stage"] for r in stages] == ["rule_drafter:outline", "rule_drafter:categories"]
    assert json.loads(config)["asks"] == "two"


def test_a_faulty_outline_is_repaired_before_the_categories_are_asked(
    server, tmp_path, fake_keys
) -> None:
    draft = valid_draft()
    faulty = outline_of(draft)
    faulty = copy.deepcopy(faulty)
    # 'dice' as a value of both attributes: not orthogonal; and R1 defined twice
    faulty["attributes"][1]["values"][0]["name"] = "dice"
    faulty["rules"][1]["id"] = "R1"
    server.push(reply(faulty), reply(outline_of(draft)), reply(table_of(draft)))
    result = draft_cli(server, tmp_path, "--two-asks")
    assert result.exit_code == 0, result.output
    assert "attempt 1 (outline): 2 error(s)" in result.output
    assert "valid after 1 repair(s)" in result.output
    _, repair, table = server.chat_requests()
    feedback = user_text(repair)
    assert "rules.R1: rule variant 'R1' is defined 2 times" in feedback
    assert "value 'dice' is also a value of attribute 'object'" in feedback
    assert "Your previous outline was:" in feedback and '"dice"' in feedback
    assert schema_of(table)["$defs"]["Verdicts"]["required"] == ["R1", "R2"]


def test_a_category_that_fixes_no_attribute_is_refused_by_the_schema(
    server, tmp_path, fake_keys
) -> None:
    """The all-`any` product the demo's model kept through both repairs: the product schema
    (anyOf, which llama.cpp's grammar converter accepts) has no shape for it, so the answer is
    not parsed and the layer asks again; under a grammar it cannot be written at all."""
    draft = valid_draft()
    table = table_of(draft)
    table["categories"][1]["product"] = {"object": "any", "activity": "any"}
    server.push(reply(outline_of(draft)), reply(table), reply(table_of(draft)))
    result = draft_cli(server, tmp_path, "--two-asks")
    assert result.exit_code == 0, result.output
    assert len(server.chat_requests()) == 3  # the outline, the refused table, the re-ask
    load_policy(tmp_path / "draft.yaml")


def test_tidy_table_drops_a_category_that_fixes_no_attribute_and_says_so() -> None:
    """Where the answer is not schema-checked (a row built by hand here), code drops it."""
    draft = valid_draft()
    shape = table_shape(PolicyOutline.model_validate(outline_of(draft)))
    rows = table_of(draft)["categories"]
    rows[1]["product"] = {"object": "any", "activity": "any"}
    kept, fixes = tidy_table(shape, rows)
    assert [r["name"] for r in kept] == ["slot_machine", "betting_advert", "board_game"]
    assert fixes == [
        "dropped category 'dice_for_money': it fixes no attribute (every attribute is 'any')"
    ]


def test_categories_with_the_same_product_are_merged_by_code_and_said_so(
    server, tmp_path, fake_keys
) -> None:
    """`violent`, `violently`, `violents` with one product: the later ones are the same
    category; code keeps the first, drops the others, and the file and the record say so."""
    draft = valid_draft()
    table = table_of(draft)
    same = copy.deepcopy(table["categories"][2])  # betting_advert: activity=promoting
    same["name"] = "betting_adverts"
    same["verdicts"]["R2"]["flagged"] = False
    repeated = copy.deepcopy(table["categories"][0])  # another product, a taken name
    repeated["name"] = "board game"
    repeated["product"] = {"object": "none", "activity": "playing"}
    table["categories"] += [same, repeated]
    server.push(reply(outline_of(draft)), reply(table))
    result = draft_cli(server, tmp_path, "--two-asks")
    assert result.exit_code == 0, result.output
    assert "attempt 1 (categories): valid, 2 fixed by code" in result.output
    dropped = (
        "dropped category 'betting_adverts': the same product (activity=promoting) as category "
        "'betting_advert', whose verdicts are kept; its verdicts differed under R2"
    )
    renamed = (
        "renamed category 'board_game' (object=none, activity=playing) to 'board_game_2': the "
        "name was taken by an earlier category with another product"
    )
    assert f"changed by code: {dropped}" in result.output
    out = tmp_path / "draft.yaml"
    policy = load_policy(out)  # the loader is still the authority
    assert "betting_adverts" not in policy.categories
    assert policy.categories["board_game_2"].attributes == {"object": "none",
                                                             "activity": "playing"}  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[1] == "# Status: validated after 0 repair(s)."
    assert lines[2:5] == [
        "# Changed by code in the model's answers (2):", f"#   - {dropped}", f"#   - {renamed}"
    ]  # fmt: skip
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        config = json.loads(store.rows("SELECT config_json FROM runs")[0]["config_json"])
    assert config["code_fixes"] == [dropped, renamed]
    assert [(a["step"], a["errors"], len(a["code_fixes"])) for a in config["attempts"]] == [
        ("outline", 0, 0), ("categories", 0, 2)
    ]  # fmt: skip


def with_attribute(outline: dict[str, Any], name: str, *values: str) -> dict[str, Any]:
    out = copy.deepcopy(outline)
    out["attributes"].append({
        "name": name, "description": f"the {name}",
        "values": [{"name": v, "description": v, "synonyms": []} for v in values],
    })  # fmt: skip
    return out


def test_a_shared_value_goes_back_naming_both_attributes_and_which_keeps_it(
    server, tmp_path, fake_keys
) -> None:
    draft = valid_draft()
    faulty = copy.deepcopy(outline_of(draft))
    faulty["attributes"][1]["values"].append(
        {"name": "Dice", "description": "dice rolled", "synonyms": []}
    )
    server.push(reply(faulty), reply(outline_of(draft)), reply(table_of(draft)))
    result = draft_cli(server, tmp_path, "--two-asks")
    assert result.exit_code == 0, result.output
    assert "attempt 2 (outline): valid" in result.output
    assert "changed by code" not in result.output  # the model repaired it
    feedback = user_text(server.chat_requests()[1])
    assert (
        "attributes.activity.values.dice: value 'dice' is also a value of attribute 'object': "
        "attributes must be orthogonal (each one a different aspect of the image). Keep 'dice' "
        "only in 'object' and remove it from 'activity'"
    ) in feedback
    assert "Changed by code" not in (tmp_path / "draft.yaml").read_text()


def test_an_audience_attribute_and_a_none_attribute_go_back_then_code_drops_them(
    server, tmp_path, fake_keys
) -> None:
    """`age_group` (the audience, which belongs to the rule variants) and an attribute named
    `none`, kept through the outline's repairs: code drops them, and the value shared by two
    attributes from the later one, before the table's schema is built; the file says so."""
    draft = valid_draft()
    faulty = with_attribute(outline_of(draft), "age_group", "under_13", "adults")
    faulty = with_attribute(faulty, "none", "nothing", "blank")
    faulty["attributes"][1]["values"].append(
        {"name": "dice", "description": "dice rolled", "synonyms": []}
    )
    faulty["attributes"] = faulty["attributes"][:4]
    server.push(reply(faulty), reply(faulty), reply(table_of(draft)))
    result = draft_cli(server, tmp_path, "--two-asks", "--max-repairs", "1")
    assert result.exit_code == 0, result.output
    assert "attempt 2 (outline): 3 error(s), 3 fixed by code" in result.output
    feedback = user_text(server.chat_requests()[1])
    assert (
        "attributes.age_group: attribute 'age_group' describes the audience (who sees the "
        "image), not the image: audiences are the rule variants' age_group and culture. Remove "
        "the attribute 'age_group'"
    ) in feedback
    assert "attributes.none: 'none' is not an aspect of the image, it is a value name" in feedback
    fixes = [
        "dropped attribute 'age_group': it describes the audience, which the rule variants "
        "hold, not the image",
        "dropped attribute 'none': it is a value name, not an aspect of the image",
        "dropped value 'dice' (a value of attribute 'object' already) from attribute 'activity'",
    ]
    # the table's schema is built from the fixed outline
    product = schema_of(server.chat_requests()[2])["$defs"]["Product0"]["properties"]
    assert list(product) == ["object", "activity"]
    assert "dice" not in product["activity"]["enum"]
    out = tmp_path / "draft.yaml"
    policy = load_policy(out)
    assert list(policy.attributes) == ["object", "activity"]
    text = out.read_text()
    for fix in fixes:
        assert f"#   - {fix}" in text
        assert f"changed by code: {fix}" in result.output


def test_outline_checks_name_an_audience_attribute_by_its_values_too() -> None:
    outline = PolicyOutline.model_validate(
        with_attribute(outline_of(valid_draft()), "viewer", "under 13", "18 and over")
    )
    assert audience_attribute(outline, "viewer", ["under_13", "v_18_and_over"])
    assert audience_attribute(outline, "person", ["under_13", "adult"])  # R1's age group
    # a culture is not compared: 'conservative' may be a value of clothing
    assert not audience_attribute(outline, "clothing", ["conservative", "revealing"])
    assert [i.field for i in outline_issues(outline, file="d.yaml")] == ["attributes.viewer"]


def test_a_worse_repair_is_not_used_and_repeated_audiences_are_dropped(
    server, tmp_path, fake_keys
) -> None:
    """qwen's gambling outlines got worse with each repair (attributes named `description`
    and `rules`, two rule variants for `any / any`): the outline with the fewest issues goes
    on, code drops what is mechanical in it, and the file says both."""
    draft = valid_draft()
    first = copy.deepcopy(outline_of(draft))
    first["rules"].append(dict(first["rules"][1], id="R3", description="Adverts are flagged."))
    worse = with_attribute(first, "rules", "id", "age_group")
    worse = with_attribute(worse, "description", "casino", "people")
    server.push(reply(first), reply(worse), reply(table_of(draft)))
    result = draft_cli(server, tmp_path, "--two-asks", "--max-repairs", "1")
    assert result.exit_code == 0, result.output
    assert "attempt 1 (outline): 1 error(s)" in result.output
    assert "attempt 2 (outline): 3 error(s), 2 fixed by code" in result.output
    feedback = user_text(server.chat_requests()[1])
    assert (
        "rules.R3: rule variants 'R2' and 'R3' have the same audience '18 and over / gambling "
        "legal': each rule variant is a different audience (age group and culture). Remove 'R3'"
    ) in feedback
    fixes = [
        "used the outline of attempt 1 (1 error(s)), not the last one (3 error(s))",
        "dropped rule variant 'R3': the same audience '18 and over / gambling legal' as 'R2'",
    ]
    for fix in fixes:
        assert f"changed by code: {fix}" in result.output
    assert schema_of(server.chat_requests()[2])["$defs"]["Verdicts"]["required"] == ["R1", "R2"]
    assert list(load_policy(tmp_path / "draft.yaml").rules) == ["R1", "R2"]
    worse_outline = PolicyOutline.model_validate(worse)
    assert [i.message.split(":")[0] for i in outline_issues(worse_outline, file="d")][:2] == [
        "'rules' is a field of the policy, not an aspect of the image",
        "'description' is a field of the policy, not an aspect of the image",
    ]


def test_the_outline_schema_asks_for_one_rule_variant_per_audience_and_two_attributes(
    server, tmp_path, fake_keys
) -> None:
    draft = valid_draft()
    draft["rules"][1].update(age_group="13 and over", culture="open")
    server.push(reply(outline_of(draft)), reply(table_of(draft)))
    result = draft_cli(server, tmp_path, "--two-asks", "--audiences",
                       "under 13/any; 13 and over/open")  # fmt: skip
    assert result.exit_code == 0, result.output
    schema = schema_of(server.chat_requests()[0])["properties"]
    assert (schema["rules"]["minItems"], schema["rules"]["maxItems"]) == (2, 2)
    assert schema["attributes"]["minItems"] == 2
    free = outline_model(0).model_json_schema()["properties"]["rules"]
    assert (free["minItems"], free["maxItems"]) == (2, 4)
    assert issubclass(outline_model(3), PolicyOutline)


def test_a_value_that_names_an_aspect_is_reported_and_dropped_by_code() -> None:
    """qwen's gambling outline: object = casino, people, setting, attribute."""
    outline = outline_of(valid_draft())
    for name in ("setting", "attribute"):
        outline["attributes"][0]["values"].append(
            {"name": name, "description": name, "synonyms": []}
        )
    value = PolicyOutline.model_validate(outline)
    assert [i.field for i in outline_issues(value, file="d")] == [
        "attributes.object.values.setting", "attributes.object.values.attribute"
    ]  # fmt: skip
    fixed, fixes = fix_outline(value)
    assert [v.name for v in fixed.attributes[0].values] == ["Slot Machine", "dice", "none"]
    assert fixes == [
        "dropped value 'setting' (it names an aspect) from attribute 'object'",
        "dropped value 'attribute' (it names an aspect) from attribute 'object'",
    ]


def test_a_misspelt_copy_of_another_attributes_value_is_a_shared_value() -> None:
    """Told that `casino` was already an object, qwen listed `casin` as a setting."""
    outline = outline_of(valid_draft())
    outline["attributes"][1]["values"].append({"name": "slot_machin", "description": "s",
                                               "synonyms": []})  # fmt: skip
    outline["attributes"][1]["values"][1]["name"] = "playing_dice"  # not a near copy of dice
    value = PolicyOutline.model_validate(outline)
    assert [str(i) for i in outline_issues(value, file="d")] == [
        "d: attributes.activity.values.slot_machin: value 'slot_machin' is nearly the value "
        "'slot_machine' of attribute 'object' (a misspelt value is still the same value): keep "
        "'slot_machine' only in 'object' and remove 'slot_machin' from 'activity'"
    ]
    _, fixes = fix_outline(value)
    assert fixes == [
        "dropped value 'slot_machin' (nearly 'slot_machine', a value of attribute 'object') "
        "from attribute 'activity'"
    ]


@pytest.mark.parametrize("name", ["gambling", "general_safety", "horrifying", "icm_sexy"])
def test_the_shipped_policies_pass_the_outline_checks(name: str) -> None:
    """The hand-written policies are the yardstick: no check may call their attributes (the
    sexy policy's `region` of the body, its `other`) the audience's or a value name."""
    policy = load_policy(name)
    # built without validation: the shipped policies are larger than a draft may be
    attributes = [
        DraftAttribute.model_construct(name=n, description="d", values=[
            DraftValue.model_construct(name=v, description="d", synonyms=[]) for v in a.values
        ])
        for n, a in policy.attributes.items()
    ]  # fmt: skip
    rules = [
        DraftRule.model_construct(id=r, age_group=v.audience.age_group,
                                  culture=v.audience.culture, description="d")
        for r, v in policy.rules.items()
    ]  # fmt: skip
    outline = PolicyOutline.model_construct(
        term=policy.term, title="t", description="d", attributes=attributes, rules=rules
    )
    assert outline_issues(outline, file=name) == []
    assert fix_outline(outline)[1] == []


def test_a_rule_variant_that_flags_everything_or_nothing_is_marked_for_review(
    server, tmp_path, fake_keys
) -> None:
    draft = valid_draft()
    for category in draft["categories"]:
        category["verdicts"][0]["flagged"] = True
        category["verdicts"][1]["flagged"] = False
    server.push(reply(draft))
    assert draft_cli(server, tmp_path).exit_code == 0  # information, not an error
    text = (tmp_path / "draft.yaml").read_text()
    assert "# Review: R1 flags every category (4); nothing is allowed for its audience." in text
    assert "# Review: R2 flags no category (4); nothing is forbidden for its audience." in text


def test_fewer_than_two_categories_left_after_code_drops_is_an_error_and_repaired(
    server, tmp_path, fake_keys
) -> None:
    """qwen's sexy table: `slot_machine` and `board_game`, both setting=bar; once code
    dropped the copy one category was left, and the draft "validated"."""
    draft = valid_draft()
    table = table_of(draft)
    table["categories"] = [table["categories"][0], dict(table["categories"][0], name="copy")]
    server.push(reply(outline_of(draft)), reply(table), reply(table_of(draft)))
    result = draft_cli(server, tmp_path, "--two-asks")
    assert result.exit_code == 0, result.output
    assert "attempt 1 (categories): 1 error(s), 1 fixed by code" in result.output
    feedback = user_text(server.chat_requests()[2])
    assert "only 1 category is left once the 1 that fixed no attribute or repeated" in feedback
    assert "Changed by code" not in (tmp_path / "draft.yaml").read_text()  # the last table's


def test_a_category_table_that_never_comes_writes_nothing_and_names_the_step(
    server, tmp_path, fake_keys
) -> None:
    """Two asks: a sound outline, then no parseable table in any ask: no file (no table was
    ever checked), the failure named, and every ask recorded with its step."""
    server.push(reply(outline_of(valid_draft())), *(reply("not json at all") for _ in range(3)))
    result = draft_cli(server, tmp_path, "--two-asks")
    assert result.exit_code == 1
    assert not (tmp_path / "draft.yaml").exists()
    assert "no draft written: parse_failed" in result.output
    # the outline, then one categories ask: its request and the layer's two parse re-asks
    assert len(server.chat_requests()) == 4
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        stages = store.rows("SELECT stage, status FROM llm_calls ORDER BY started_at")
    assert [(r["stage"], r["status"]) for r in stages] == [
        ("rule_drafter:outline", "ok"),
        ("rule_drafter:categories", "parse_failed"),
    ]
