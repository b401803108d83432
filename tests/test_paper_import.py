"""``icm metrics --predictions``: the paper's released eval outputs imported into the store give
the accuracies the paper's own scripts give on the same files.

The files are small ones written here in the release's formats (``eval_scripts/eval_icm_val``,
``eval_icm_test`` JSON; ``eval_mqa`` alternating image/answer lines). The paper's formulas are
re-implemented below line for line from its scripts, independently of ``evaluators``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data.store import Store
from graphs.cli import app

# eval_icm_val/eval.py: get_acc's keywords_list, verbatim.
PAPER_KEYWORDS = ['bite_finger', 'bite_lip', 'liftup', 'lower_hips', 'lower_large_bare', 'lower_leg', 'lower_normal', 'lower_shoulders_and_belly', 'male_sexy', 'middle_crotch', 'middle_hips', 'middle_leg', 'middle_normal', 'middle_shoulders_and_belly', 'pout', 'sexy_imagetext', 'sexy_implicit', 'sexy_kiss', 'skirt', 'stockings', 'takeoff', 'tongue', 'upper_backless', 'upper_bust', 'upper_large_bare', 'upper_normal', 'upper_shoulders_and_belly', 'wearing_bras', 'wearing_stockings', 'wet', 'whole_backless', 'whole_large_bare', 'whole_leg', 'whole_normal', 'whole_shoulders_and_belly']  # noqa: E501  # fmt: skip


def script_val_accuracy(result_file: Path) -> float:
    """eval_icm_val/eval.py get_acc(), as the script computes it."""
    items = json.loads(result_file.read_text())
    names = [i["image_name"] for i in items]
    scores = [i["sexy_score"] for i in items]
    overall_false = overall_true = 0
    for keyword in PAPER_KEYWORDS:
        gt = "normal" not in keyword
        for name, score in zip(names, scores, strict=True):
            if keyword in name:
                result = ("TP" if gt else "FP") if score > 0.5 else ("FN" if gt else "TN")
                if result in ("TP", "TN"):
                    overall_true += 1
                else:
                    overall_false += 1
    return overall_true / (overall_true + overall_false)


def script_test_accuracy(result_file: Path) -> float:
    """eval_icm_test/eval.py: (TP + TN) / total."""
    tp = fp = tn = fn = 0
    for item in json.loads(result_file.read_text()):
        negative = "not-sexy" in item["image_name"]
        if item["sexy_score"] < 0.5:
            tn, fn = (tn + 1, fn) if negative else (tn, fn + 1)
        else:
            fp, tp = (fp + 1, tp) if negative else (fp, tp + 1)
    return (tp + tn) / (tp + fp + tn + fn)


def script_mqa(gen_path: Path, gt_path: Path) -> tuple[int, int]:
    """eval_mqa/eval.py eval_file(): (true_count, total_count)."""
    gen = [line[: len(line) - 1] for line in gen_path.open(encoding="utf-8").readlines()]
    gt = [line[: len(line) - 1] for line in gt_path.open(encoding="utf-8").readlines()]
    true_count, total = 0, len(gt) // 2
    for i in range(total):
        gen_choice, gt_choice = gen[i * 2 + 1][0].upper(), gt[i * 2 + 1][0].upper()
        if gen_choice in ["A", "B", "C", "D", "Y", "N"] and gen_choice == gt_choice:
            true_count += 1
    return true_count, total


def _entry(name: str, score: float) -> dict:
    # the release's fields; the logits are consistent with the score but unused by the scripts
    return {"image_name": name, "logit_yes": 1.0, "logit_no": 1.0, "sexy_score": score,
            "sexy_conclusion": "Yes" if score > 0.5 else "No"}  # fmt: skip


VAL = [
    ("bite_finger_20231122110742_1005.JPEG", 0.95),
    ("bite_finger_20231122110742_1010.jpg", 0.31),  # a miss
    ("upper_normal_2022072011061738449_v2.jpg", 0.02),
    ("upper_normal_2022072011061738450_v2.jpg", 0.81),  # a false alarm
    ("tongue_20231207095152_11.JPEG", 0.5),  # exactly 0.5 is not sexy (> 0.5)
    ("middle_leg_2022072011061710163_v2.jpg", 0.77),
    ("whole_normal_2022072011061710020_v2.jpg", 0.40),
    ("sexy_kiss_20231207095152_109.JPEG", 0.88),  # a category name, not an ICM-Test one
]


def _write(path: Path, entries: list[tuple[str, float]]) -> Path:
    path.write_text(json.dumps([_entry(n, s) for n, s in entries], indent=4))
    return path


def _metrics(db: Path, *args: str) -> dict:
    result = CliRunner().invoke(app, ["metrics", "--db", str(db), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_icm_val_json_gives_the_paper_script_accuracy(tmp_path: Path) -> None:
    path = _write(tmp_path / "llava-v1.5-7b-after-baseline.json", VAL)
    report = _metrics(tmp_path / "icm.duckdb", "--predictions", str(path), "--name", "val")
    [overall] = report["overall"]
    assert overall["rule_variant"] == "R1" and overall["scored"] == len(VAL)
    assert overall["accuracy"] == pytest.approx(script_val_accuracy(path))  # 5/8
    assert overall["accuracy"] == pytest.approx(5 / 8)
    assert report["paper"]["icm_val_accuracy"] == pytest.approx(script_val_accuracy(path))
    assert report["paper"]["icm_test_accuracy"] is None
    per_category = {r["category"]: r["accuracy"] for r in report["category"]}
    assert per_category == {"bite_finger": 0.5, "middle_leg": 1.0, "sexy_kiss": 1.0,
                            "tongue": 0.0, "upper_normal": 0.5, "whole_normal": 1.0}  # fmt: skip
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        run = store.rows("SELECT kind, status, name FROM runs")
        rows = store.rows("SELECT image_path, category, score, task FROM predictions")
    assert run == [{"kind": "moderate", "status": "finished", "name": "val"}]
    assert len(rows) == len(VAL) and {r["task"] for r in rows} == {"verdict"}


def test_the_paper_formula_counts_wearing_stockings_twice(tmp_path: Path) -> None:
    """Its keyword match puts a wearing_stockings image under 'stockings' too: that figure is
    printed beside ours (each image once), and equals the script's."""
    entries = [*VAL, ("wearing_stockings_20231207094856_101.jpg", 0.3)]
    path = _write(tmp_path / "val.json", entries)
    report = _metrics(tmp_path / "icm.duckdb", "--predictions", str(path))
    assert report["overall"][0]["accuracy"] == pytest.approx(5 / 9)
    assert report["paper"]["icm_val_accuracy"] == pytest.approx(script_val_accuracy(path))
    assert script_val_accuracy(path) == pytest.approx(5 / 10)
    text = CliRunner().invoke(
        app, ["metrics", report["run_id"], "--db", str(tmp_path / "icm.duckdb")],
        env={"COLUMNS": "250"},
    ).output  # fmt: skip
    assert "ICM-Val accuracy, the paper's formula" in text and f"{5 / 10:.4f}" in text


def test_icm_test_json_and_mqa_files(tmp_path: Path) -> None:
    test_file = _write(
        tmp_path / "test.json",
        [("not-sexy_00007639.jpg", 0.02), ("not-sexy_00000293.png", 0.7),
         ("sexy_00001234.jpg", 0.5), ("sexy_00001235.jpg", 0.1)],
    )  # fmt: skip
    image = "bite_finger/bite_finger_20231122110742_1005.JPEG"
    mc_gt = ["D.", "B.", "C.", "A.", "B."]
    mc_gen = ["D.", "(B)", "c) the kitchen", "B.", "B"]  # right, wrong ("("), right, wrong, right
    qa_gt = ["Yes.", "No.", "Yes.", "The woman is biting her finger."]
    qa_gen = ["yes, it is.", "Maybe.", "No.", "The woman bites a finger."]
    files = {}
    for key, lines in (("mc_gt", mc_gt), ("mc_gen", mc_gen), ("qa_gt", qa_gt), ("qa_gen", qa_gen)):
        files[key] = tmp_path / f"{key}.txt"
        files[key].write_text("".join(f"{image}\n{answer}\n" for answer in lines))
    db = tmp_path / "icm.duckdb"
    report = _metrics(
        db, "--predictions", str(test_file),
        "--mqa-mc-answers", str(files["mc_gen"]), "--mqa-mc-reference", str(files["mc_gt"]),
        "--mqa-qa-answers", str(files["qa_gen"]), "--mqa-qa-reference", str(files["qa_gt"]),
    )  # fmt: skip
    paper = report["paper"]
    assert paper["icm_test_accuracy"] == pytest.approx(script_test_accuracy(test_file))  # 2/4
    assert report["overall"][0]["accuracy"] == pytest.approx(script_test_accuracy(test_file))
    mc_true, mc_total = script_mqa(files["mc_gen"], files["mc_gt"])
    qa_true, qa_total = script_mqa(files["qa_gen"], files["qa_gt"])
    assert (mc_true, mc_total, qa_true, qa_total) == (3, 5, 1, 4)  # "The ..." starts with T
    assert paper["mqa_mc_accuracy"] == pytest.approx(mc_true / mc_total)
    assert paper["mqa_qa_accuracy"] == pytest.approx(qa_true / qa_total)
    assert paper["mqa_accuracy"] == pytest.approx((mc_true + qa_true) / (mc_total + qa_total))
    assert paper["mqa_n"] == 9
    # MQA answers are not verdict predictions: the classification counts only the 4 images.
    assert report["overall"][0]["scored"] + report["overall"][0]["unscored"] == 4


def test_generic_jsonl_and_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(line)
            for line in (
                {"image": "a.jpg", "rule": "R2", "verdict": "not sexy", "category": "middle_leg"},
                {"image": "b.jpg", "rule": "R1", "score": 0.9, "expected": "not sexy"},
                {"image": "sexy_kiss_1.jpg", "rule": "R4", "score": 0.2},
            )
        )
    )
    report = _metrics(tmp_path / "icm.duckdb", "--predictions", str(path), "--format", "jsonl")
    by_rule = {r["rule_variant"]: r for r in report["overall"]}
    assert by_rule["R2"]["accuracy"] == 1.0  # bare legs are not sexy under R2 (open culture)
    assert by_rule["R1"]["accuracy"] == 0.0
    assert by_rule["R4"]["accuracy"] == 1.0  # a kiss is not sexy for 13+ in an open culture
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.jpg", "verdict": "spicy"}\n')
    result = CliRunner().invoke(
        app, ["metrics", "--db", str(tmp_path / "icm.duckdb"), "--predictions", str(bad),
              "--format", "jsonl"],
    )  # fmt: skip
    assert result.exit_code != 0 and "bad.jsonl:1: verdict 'spicy'" in result.output
    shifted = tmp_path / "gen.txt"
    shifted.write_text("x.jpg\nA.\n")
    (tmp_path / "gt.txt").write_text("y.jpg\nA.\n")
    result = CliRunner().invoke(
        app, ["metrics", "--db", str(tmp_path / "icm.duckdb"), "--mqa-mc-answers", str(shifted),
              "--mqa-mc-reference", str(tmp_path / "gt.txt")],
    )  # fmt: skip
    assert result.exit_code != 0 and "gen.txt:1: image 'x.jpg'" in result.output
