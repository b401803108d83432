"""``icm paper reproduce --release DIR`` on a small checkout in the release's layout
(``tests/fixtures/paper_release``, written for these tests), the MEQ judgment reader that
``icm judge calibrate --set`` also takes, and the release's seed sentences read from its script.

Expected figures are worked out by hand from the fixture's few entries, so each formula's
difference from ours shows: the ICM-Val script counts a ``wearing_stockings`` image twice, the
MQA script pools both files, the MEQ script lends an unreadable judgment the previous file's
scores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data.policy import load_policy
from data.release_seeds import ReleaseSeedError, release_seeds
from evaluators.calibration import file_sha256, load_meq_set
from evaluators.paper_meq import our_meq, read_judgments, script_meq
from evaluators.paper_reproduce import ReleaseLayoutError, reproduce
from graphs.cli import app

RELEASE = Path(__file__).parent / "fixtures" / "paper_release"
MEQ_DIR = RELEASE / "eval_scripts" / "eval_meq" / "llava-v1.5-7b-after-baseline"


def _by_key(rows: list[dict]) -> dict[str, dict]:
    return {(r["key"], r["model"]): r for r in rows}  # type: ignore[misc]


def test_reproduce_prints_each_figure_the_authors_way_and_ours_and_names_the_rest() -> None:
    result = CliRunner().invoke(app, ["paper", "reproduce", "--release", str(RELEASE), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in json.loads(result.output) if r["source"]}
    # ICM-Val: 6 images; the script counts the two wearing_stockings images twice (also as
    # stockings): right 1+0+2+2+1+0 of 8 = 0.75; each image once: 4 of 6
    assert rows["icm_val_r1"]["authors"] == pytest.approx(0.75)
    assert rows["icm_val_r1"]["ours"] == pytest.approx(4 / 6)
    assert rows["icm_val_r1"]["published"] == 0.987
    # ICM-Test: TP 1, FN 1, TN 2, FP 1
    assert rows["icm_test_ugc"]["authors"] == rows["icm_test_ugc"]["ours"] == pytest.approx(0.6)
    assert "TP 1, FP 1, TN 2, FN 1" in rows["icm_test_ugc"]["note"]
    # MQA: multiple choice 2/3 ("C." vs "A." is wrong), yes/no + open 3/3; the script prints
    # the pooled 5/6 in every column
    assert rows["mqa"]["authors"] == rows["mqa"]["ours"] == pytest.approx(5 / 6)
    assert rows["mqa_mc"]["authors"] == pytest.approx(5 / 6)
    assert rows["mqa_mc"]["ours"] == pytest.approx(2 / 3)
    assert rows["mqa_qa"]["ours"] == pytest.approx(1.0)
    # MEQ: accuracy 90, 70, then a file with no table: the script carries 70 over (76.7),
    # ours excludes it (80)
    assert rows["meq"]["authors"] == pytest.approx((90 + 70 + 70) / 300)
    assert rows["meq"]["ours"] == pytest.approx(0.80)
    assert rows["meq"]["published"] == 0.844
    unreleased = [r for r in json.loads(result.output) if not r["source"]]
    keys = {r["key"] for r in unreleased}
    assert {"icm_val_r2", "icm_test_aigc", "icm_test_pornography"} <= keys
    assert any(k.startswith("zero_shot") for k in keys)
    assert all(r["authors"] is None and r["ours"] is None for r in unreleased)
    assert all("cannot be reproduced" in r["note"] for r in unreleased)

    table = CliRunner().invoke(app, ["paper", "reproduce", "--release", str(RELEASE)])
    assert table.exit_code == 0, table.output
    assert "0.987" in table.output and "not released" in table.output
    assert "ICM-Test Pornography" in table.output


def test_a_folder_that_is_not_a_release_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ReleaseLayoutError, match="no eval_scripts"):
        reproduce(tmp_path, load_policy("icm_sexy"))
    result = CliRunner().invoke(app, ["paper", "reproduce", "--release", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path}: no eval_scripts/" in result.output


def test_the_meq_reader_reads_the_judgment_files_and_calibrate_takes_the_folder() -> None:
    judgments = read_judgments(MEQ_DIR)
    assert [j.image for j in judgments] == [
        "bite_finger_20231122110742_1.JPEG",
        "upper_normal_20231201_5.jpg",
        "wet_20231201_7.jpg",
    ]
    first = judgments[0]
    assert first.reference.startswith("A woman holds a finger")
    assert first.candidate.startswith("A person bites a finger")
    assert first.scores == {"accuracy": 90, "preciseness": 70, "comprehensiveness": 80,
                            "fluency": 85}  # fmt: skip
    assert not judgments[2].scored  # no table: unscored, not zero
    assert our_meq(judgments).scored == 2
    assert script_meq(judgments).means["fluency"] == pytest.approx((85 + 90 + 90) / 3)

    cases = load_meq_set(MEQ_DIR)  # what `icm judge calibrate --set DIR` reads
    assert [c.judge_scores.get("accuracy") for c in cases] == [90, 70, None]
    assert cases[0].reference == first.reference and cases[0].judge_model == "gpt-4o"
    assert len(file_sha256(MEQ_DIR)) == 64


def test_calibrate_runs_on_the_released_folder(tmp_path: Path) -> None:
    """The offline metric judges the folder's pairs; the reference MEQ is GPT-4o's over the
    readable judgments."""
    result = CliRunner().invoke(
        app,
        ["judge", "calibrate", "--set", str(MEQ_DIR), "--split", "all", "--judge",
         "metric:minilm", "--db", str(tmp_path / "icm.duckdb"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["meq"]["reference_all_items"] == pytest.approx(0.80)
    assert report["n_items"] == 3


def test_the_release_seeds_are_read_from_its_script_with_middle_leg_repaired(
    tmp_path: Path,
) -> None:
    seeds = release_seeds(RELEASE)
    assert (
        seeds.seed(
            "middle_leg",
        )
        is not None
        and "thighs" in seeds.sentences["middle_leg"]
    )
    assert seeds.repaired == {"middle_leg": "middle_legs"}
    assert seeds.sentences["stockings"].endswith("stockings are being removed.")
    assert seeds.seed("wet") is None  # not in this script: the policy's sentence is used
    with pytest.raises(ReleaseSeedError, match="no data/ICM-Instruct_data_generation_pipeline"):
        release_seeds(tmp_path)
    broken = tmp_path / "release"
    shutil.copytree(RELEASE, broken)
    # the explanation-generation script (the Q-A one has the same name and no short_desc); its
    # conversion_dict then names a category short_desc lacks (the fixture is ruff-formatted:
    # double quotes)
    script = next(
        p for p in broken.rglob("vllm_data_generation.py") if "short_desc" in p.read_text()
    )
    text = script.read_text()
    assert '"upper_bust": "upper_chest"' in text
    script.write_text(text.replace('"upper_bust": "upper_chest"', '"upper_bust": "upper_chst"'))
    with pytest.raises(ReleaseSeedError, match="short_desc does not have"):
        release_seeds(broken)
