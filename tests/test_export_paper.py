"""``icm export --format llava --style paper``: records in the shape of the paper's converter
(``prepare_jsons_for_training/txt2llava.py`` of the ICM-Assistant release), compared key by key
with records written by hand from that converter's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_store import IMAGE_DIR, build_store
from typer.testing import CliRunner

from data.export_paper import EXPLAIN_QUESTIONS, MC_INSTRUCTIONS, export_paper_run, mc_answer
from data.store import Store
from graphs.cli import app


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = build_store(tmp_path / "icm.duckdb")
    with Store.open(path) as store:
        # The fixture's policy name is a placeholder; the paper style needs the real policy's
        # term and base rule. One answer without its final period, to see it added.
        store.execute("UPDATE samples SET policy_name = 'icm_sexy'")
        store.execute(
            "UPDATE qa_items SET answer = 'By covering the revealing swimwear' WHERE qa_id = 'qa-1'"
        )
    return path


def _export(db: Path, out: Path, *extra: str) -> list[dict]:
    result = CliRunner().invoke(
        app,
        ["export", "offline-demo", "--format", "llava", "--style", "paper", "--db", str(db),
         "--out", str(out), "--image-root", IMAGE_DIR, *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def _drawn(value: str, choices: tuple[str, ...], line: int) -> str:
    """Replace the drawn paraphrase at ``line`` by a marker, after checking it is one of ours."""
    lines = value.split("\n")
    assert lines[line] in choices, lines[line]
    lines[line] = "<drawn>"
    return "\n".join(lines)


def test_records_match_the_paper_converter_shape_key_by_key(db: Path, tmp_path: Path) -> None:
    records = _export(db, tmp_path / "p.llava.json")
    by_id = {r["id"]: r for r in records}
    explain = [q.format(term="sexy") for q in EXPLAIN_QUESTIONS]

    # txt2llava.py post_process_output_llava_format_reason: question + "\n<image>", the
    # explanation as the answer, one record per copy.
    expected_explanation = {
        "id": "identity_smp-a-acc1_description3",
        "image": "beach.jpg",
        "conversations": [
            {"from": "human", "value": "<drawn>\n<image>"},
            {"from": "gpt", "value": "No. Under R1 the image is judged as follows: ... "
                                     "(smp-a-acc1)."},
        ],
    }  # fmt: skip
    # ... _multi_choice: question, the options one a line, the instruction, "\n<image>"; "B."
    expected_mc = {
        "id": "identity_smp-a-acc1_mc_pair1",
        "image": "beach.jpg",
        "conversations": [
            {"from": "human", "value": "Which element makes the image sensitive?\n"
             "A. Violence\nB. Revealing clothing\nC. Drug use\nD. Nothing sensitive\n"
             "<drawn>\n<image>"},
            {"from": "gpt", "value": "B."},
        ],
    }  # fmt: skip
    # ... _openqa: yes/no and what/how, the answer ending with a period.
    expected_yes_no = {
        "id": "identity_smp-a-acc1_pair0",
        "image": "beach.jpg",
        "conversations": [
            {"from": "human", "value": "Is the image acceptable for adults under R1?\n<image>"},
            {"from": "gpt", "value": "Yes."},
        ],
    }
    expected_how = {
        "id": "identity_smp-a-acc1_pair2",
        "image": "beach.jpg",
        "conversations": [
            {"from": "human", "value": "How could the image be made suitable for every "
                                       "audience?\n<image>"},
            {"from": "gpt", "value": "By covering the revealing swimwear."},
        ],
    }  # fmt: skip

    got_explanation = by_id["identity_smp-a-acc1_description3"]
    got_explanation["conversations"][0]["value"] = _drawn(
        got_explanation["conversations"][0]["value"], tuple(explain), 0
    )
    got_mc = by_id["identity_smp-a-acc1_mc_pair1"]
    got_mc["conversations"][0]["value"] = _drawn(
        got_mc["conversations"][0]["value"], MC_INSTRUCTIONS, -2
    )
    for got, want in (
        (got_explanation, expected_explanation),
        (got_mc, expected_mc),
        (by_id["identity_smp-a-acc1_pair0"], expected_yes_no),
        (by_id["identity_smp-a-acc1_pair2"], expected_how),
    ):
        assert list(got) == list(want) == ["id", "image", "conversations"]
        for key in want:
            assert got[key] == want[key], key

    # Every record: single turn, <image> once, after the question.
    for record in records:
        human, gpt = record["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].endswith("\n<image>") and human["value"].count("<image>") == 1
        assert gpt["value"].endswith(".")
    # Accepted samples only, base rule R1 only: acc1 = 5 copies + 3 Q-A, acc2 = 5 + 1.
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 14
    assert sum("_description" in i for i in ids) == 10
    assert not any("R2" in r["conversations"][0]["value"] for r in records)
    meta = (tmp_path / "p.llava.meta.jsonl").read_text().splitlines()
    assert [json.loads(m)["id"] for m in meta] == ids


def test_draws_are_seeded(db: Path, tmp_path: Path) -> None:
    first = _export(db, tmp_path / "a.json", "--seed", "7")
    again = _export(db, tmp_path / "b.json", "--seed", "7")
    other = _export(db, tmp_path / "c.json", "--seed", "8")
    assert first == again
    assert [r["id"] for r in first] == [r["id"] for r in other] and first != other
    questions = {r["conversations"][0]["value"] for r in first if "_description" in r["id"]}
    assert len(questions) > 1  # the five copies are asked in different words


def test_summary_counts_the_other_rules_and_rejects_other_formats(db: Path, tmp_path) -> None:
    with Store.open(db, read_only=True) as store:
        summary = export_paper_run(store, "run-a", tmp_path / "x.json", include_all=True)
        export_paper_run(store, "run-a", tmp_path / "acc.json")
    # --all: the rejected sample's R1 explanation is exported too; every R2 one is counted.
    assert summary.samples == 3
    # ... and each record says its status in the file itself; accepted-only keeps LLaVA's keys.
    mixed = json.loads((tmp_path / "x.json").read_text())
    assert {r["status"] for r in mixed if "rej1" in r["id"]} == {"rejected"}
    assert {r["status"] for r in mixed if "acc1" in r["id"]} == {"accepted"}
    accepted = json.loads((tmp_path / "acc.json").read_text())
    assert accepted and all(set(r) == {"id", "image", "conversations"} for r in accepted)
    assert summary.skipped == {
        "R2 explanation (the paper style exports the base rule only)": 3,
        "failed sample without an explanation": 2,
        "pending sample without an explanation": 1,
    }
    result = CliRunner().invoke(
        app, ["export", "run-a", "--format", "sharegpt", "--style", "paper", "--db", str(db)]
    )
    assert result.exit_code != 0 and "--format llava" in result.output


def test_paraphrase_lists_and_letters() -> None:
    assert len(EXPLAIN_QUESTIONS) == 30 and len(set(EXPLAIN_QUESTIONS)) == 30
    assert all("{term}" in q and q.endswith((".", "?")) for q in EXPLAIN_QUESTIONS)
    assert len(MC_INSTRUCTIONS) == 20 and len(set(MC_INSTRUCTIONS)) == 20
    assert [mc_answer(a) for a in ("B", "b)", "C. A kitchen", " (D)", "Kitchen")] == [
        "B.", "B.", "C.", "D.", None,
    ]  # fmt: skip


def test_unknown_style_is_refused(db: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", "run-a", "--format", "llava", "--style", "fancy", "--db", str(db)]
    )
    assert result.exit_code != 0 and "--style must be ours or paper" in result.output


def test_preset_paper_is_the_paper_style_and_explicit_options_win(db: Path, tmp_path) -> None:
    """``--preset paper`` = ``--format llava --style paper``; ``--style`` or ``--format`` given
    with it win; without a preset ``--format`` is required."""
    paper = _export(db, tmp_path / "a.json")
    common = ["export", "offline-demo", "--db", str(db), "--image-root", IMAGE_DIR]
    runner = CliRunner()
    preset = runner.invoke(app, [*common, "--preset", "paper", "--out", str(tmp_path / "b.json")])
    assert preset.exit_code == 0, preset.output
    assert json.loads((tmp_path / "b.json").read_text()) == paper
    ours = runner.invoke(
        app, [*common, "--preset", "paper", "--style", "ours", "--out", str(tmp_path / "c.json")]
    )
    assert ours.exit_code == 0, ours.output
    records = json.loads((tmp_path / "c.json").read_text())
    # ours: one record per sample and rule, the image first in its first question
    assert records != paper
    assert all(r["conversations"][0]["value"].startswith("<image>\n") for r in records)
    flat = runner.invoke(
        app, [*common, "--preset", "paper", "--format", "parquet", "--style", "ours",
              "--out", str(tmp_path / "d.parquet")],
    )  # fmt: skip
    assert flat.exit_code == 0 and (tmp_path / "d.parquet").is_file(), flat.output
    missing = runner.invoke(app, [*common, "--out", str(tmp_path / "e.json")])
    assert missing.exit_code == 2 and "--format" in missing.output
    assert "is required" in missing.output
    unknown = runner.invoke(app, [*common, "--preset", "fancy"])
    assert unknown.exit_code != 0 and "unknown preset 'fancy'" in unknown.output
