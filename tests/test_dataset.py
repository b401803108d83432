"""``icm dataset``: coverage of the policy's product table, verdict balance, rejection reasons
by stage and the heatmap, on a generation run against the fake server and on the released
ICM-Instruct records; near-duplicates; the dataset card of an export; the viewer's page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from viewer_data import generated_db

from data.policy import load_policy
from evaluators.coverage import Ending, Record, coverage, reason_of, rejection_reasons
from evaluators.near_duplicates import NearDuplicateIndex, Text, find_pairs, shingles
from graphs.cli import app
from graphs.viewer.app import create_app

RUNNER = CliRunner()
_HERE = Path(__file__).resolve()
RELEASED = next(
    (p for p in (_HERE.parents[2] / "shared", Path("/work/shared"))
     if (p / "datasets/icm_assistant/instruct_dev.jsonl").is_file()),
    None,
)  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sexy():
    return load_policy("icm_sexy")


# --------------------------------------------------------------------------- coverage (pure)
def test_cells_count_records_name_the_empty_ones_and_flag_off_table_verdicts(sexy) -> None:
    records = [
        Record("a", "icm_sexy", "middle_leg", "R1", "sexy"),
        Record("a", "icm_sexy", "middle_leg", "R2", "not sexy"),
        Record("b", "icm_sexy", "middle_leg", "R1", "sexy"),
        Record("c", "icm_sexy", "upper_normal", "R1", "sexy"),  # the table says not sexy
        Record("d", "icm_sexy", "no_such_category", "R1", "sexy"),
        Record("e", "other_policy", "middle_leg", "R1", "sexy"),  # another policy's record
    ]
    report = coverage(sexy, records)
    assert report.rules == ["R1", "R2"]  # the rules the set uses, not all four
    assert report.count("middle_leg", "R1") == 2 and report.count("middle_leg", "R2") == 1
    cell = next(c for c in report.cells if (c.category, c.rule) == ("upper_normal", "R1"))
    assert (cell.count, cell.verdict, cell.off_verdict) == (1, "not sexy", 1)
    empty = {(c.category, c.rule) for c in report.empty_cells}
    assert ("middle_leg", "R1") not in empty and ("upper_normal", "R2") in empty
    assert len(empty) == 2 * len(sexy.categories) - 3
    assert report.unknown_categories == {"no_such_category": 1}
    assert report.balance == {"R1": {"sexy": 3}, "R2": {"not sexy": 1}}  # table cells only
    assert report.flagged_share == {"R1": 1.0, "R2": 0.0}


def test_rejections_count_final_checks_of_rejected_and_the_stage_of_failed() -> None:
    endings = [
        Ending("r1", "p", "rejected", ("explainer: verdict ...",),
               (("explainer", "verdict_matches_rule"), ("explainer", "states_one_label"))),
        Ending("r2", "p", "rejected", (), (("qa_writer", "qa_well_formed"),)),
        Ending("f1", "p", "failed", ("describer: parse_failed: no JSON after 3 tries",)),
        Ending("f2", "p", "failed", ("describer: refused: I'm sorry",)),
        Ending("ok", "p", "accepted"),
    ]  # fmt: skip
    by_stage, totals = rejection_reasons(endings)
    assert totals == {"describer": 2, "explainer": 1, "qa_writer": 1}
    assert by_stage["explainer"] == {"verdict_matches_rule": 1, "states_one_label": 1}
    assert by_stage["describer"] == {"parse_failed": 1, "refused": 1}
    assert reason_of("explainer[R2]: verdict No does not match after 2 attempts") == (
        "explainer", "verdict No does not match after N attempts")  # fmt: skip
    assert reason_of("image not found: /x.png") == ("other", "image not found")


# --------------------------------------------------------------------------- icm dataset
def test_dataset_command_on_a_generated_run(tmp_path: Path) -> None:
    gen = generated_db()
    out = tmp_path / "out"
    result = RUNNER.invoke(app, ["dataset", gen.run_id, "--db", str(gen.db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "policy icm_sexy: 8 accepted records (samples: 4 accepted, 1 rejected)" in text
    assert re.search(r"\n  middle_leg +1 sexy +1 not sexy\n", text)  # the verdict flips
    assert "upper_bust: every rule" in text  # the rejected sample's category is an empty cell
    assert "explainer (1 samples):" in text and "verdict_matches_rule" in text
    png = out / "coverage-icm_sexy.png"
    assert png.read_bytes().startswith(PNG)
    data = json.loads((out / "dataset.json").read_text())
    report = data["coverage"][0]
    cells = {(c["category"], c["rule"]): c["count"] for c in report["cells"]}
    assert cells[("middle_leg", "R1")] == 1 and cells[("upper_bust", "R2")] == 0
    assert {"category": "upper_bust", "rule": "R1", "verdict": "sexy"} in report["empty_cells"]
    assert data["rule_contrast"]["checked"] >= 1
    as_json = RUNNER.invoke(app, ["dataset", gen.run_id, "--db", str(gen.db), "--json",
                                  "--out", str(out), "--no-duplicates"])  # fmt: skip
    assert json.loads(as_json.output)["near_duplicates"] is None


def test_dataset_command_reads_several_runs_as_one_set(tmp_path: Path) -> None:
    gen = generated_db()
    once = RUNNER.invoke(app, ["dataset", gen.run_id, "--db", str(gen.db), "--json",
                               "--out", str(tmp_path), "--no-duplicates"])  # fmt: skip
    twice = RUNNER.invoke(app, ["dataset", gen.run_id, gen.run_id[:6], "--db", str(gen.db),
                                "--json", "--out", str(tmp_path), "--no-duplicates"])  # fmt: skip
    # the same run named twice (id and prefix) is read once
    assert json.loads(once.output)["coverage"] == json.loads(twice.output)["coverage"]
    bad = RUNNER.invoke(app, ["dataset", "no-such-run", "--db", str(gen.db), "--out",
                              str(tmp_path)])  # fmt: skip
    assert bad.exit_code == 1 and "no run 'no-such-run'" in bad.output


def test_a_bad_line_in_an_instruct_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    good = {"image": "a.jpg", "category": "middle_leg", "label": "sexy", "explanation": "x"}
    path.write_text(json.dumps(good) + "\n{not json\n")
    result = RUNNER.invoke(app, ["dataset", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert f"{path}:2: not JSON" in result.output


@pytest.mark.skipif(RELEASED is None, reason="the released dev records are not on this machine")
def test_dataset_command_on_the_released_dev_records(tmp_path: Path) -> None:
    assert RELEASED is not None
    path = RELEASED / "datasets/icm_assistant/instruct_dev.jsonl"
    result = RUNNER.invoke(app, ["dataset", str(path), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    report = data["coverage"][0]
    assert report["rules"] == ["R1"] and report["records"] == 420
    assert report["empty_cells"] == []  # 12 records in each of the 35 categories
    assert report["balance"] == {"R1": {"not sexy": 48, "sexy": 372}}
    dup = data["near_duplicates"]
    # measured: no near-copied explanation in the dev split; its Q-A items repeat a lot
    assert dup["pairs"]["explanation"] == 0
    assert dup["exact_pairs"]["qa"] == 7470  # identical Q-A items across records (no LSH)
    assert dup["pairs"]["qa"] >= 7470 and dup["samples_involved"]["qa"] > 400


# --------------------------------------------------------------------------- near-duplicates
BASE = ("The woman wears denim shorts that leave her thighs bare while she stands on a sunny "
        "beach, and the image is sexy for children in a conservative culture.")  # fmt: skip


def test_near_copies_across_samples_are_paired_with_their_similarity() -> None:
    texts = [
        Text("s1", "explanation", "R1", BASE),
        Text("s2", "explanation", "R1", BASE.replace("sunny", "sandy")),  # one word changed
        Text("s3", "explanation", "R1", "A cat sleeps on a sofa in a quiet living room."),
        Text("s1", "explanation", "R2", BASE),  # the same sample: never a pair
        Text("s4", "qa", "0", "Is the image colored? Yes."),
        Text("s5", "qa", "0", "Is the image colored? Yes."),
        Text("s6", "qa", "0", "Is the image colored? Yes."),
    ]
    report = find_pairs(texts, threshold=0.6)
    # s2 ~ s1 twice (s1's R1 and R2 are identical texts of one sample): 2 pairs, none exact
    assert report.pair_counts["explanation"] == 2
    assert report.exact_pair_counts["explanation"] == 0
    pair = report.examples["explanation"][0]
    assert {pair.a.sample_id, pair.b.sample_id} == {"s1", "s2"}
    expected = len(shingles(BASE) & shingles(texts[1].text)) / len(
        shingles(BASE) | shingles(texts[1].text)
    )
    assert pair.similarity == pytest.approx(expected) and 0.6 < pair.similarity < 1
    assert report.pair_counts["qa"] == 3 and report.exact_pair_counts["qa"] == 3
    assert report.samples_involved["qa"] == 3
    assert find_pairs(texts, threshold=0.95).pair_counts["explanation"] == 0


def test_the_index_finds_an_accepted_text_a_new_one_copies() -> None:
    index = NearDuplicateIndex(threshold=0.6)
    index.add(Text("s1", "explanation", "R1", BASE))
    found = index.matches(Text("s2", "explanation", "R1", BASE.replace("sunny", "sandy")))
    assert [m[0].sample_id for m in found] == ["s1"] and 0.6 < found[0][1] < 1
    assert index.matches(Text("s1", "explanation", "R2", BASE)) == []  # its own sample
    assert index.matches(Text("s3", "description", "", BASE)) == []  # another kind


# --------------------------------------------------------------------------- viewer
def test_the_viewer_shows_the_coverage_of_a_run() -> None:
    gen = generated_db()
    client = TestClient(create_app(gen.db), base_url="http://127.0.0.1")
    page = client.get(f"/dataset?run={gen.run_id}")
    assert page.status_code == 200
    assert "8 accepted records · 62 of 70 cells empty" in page.text
    assert f"/dataset/plot/icm_sexy.png?run={gen.run_id}" in page.text
    plot = client.get(f"/dataset/plot/icm_sexy.png?run={gen.run_id}")
    assert plot.status_code == 200 and plot.content.startswith(PNG)
    assert client.get(f"/dataset/plot/nope.png?run={gen.run_id}").status_code == 404
    assert "coverage of the product table" in client.get(f"/runs/{gen.run_id}").text
