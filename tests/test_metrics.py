"""Classification and MQA metrics pinned on hand-computed examples; unscored is never wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from data.store import Store, utcnow
from evaluators.metrics import (
    Confusion,
    bootstrap_ci,
    classification_table,
    confusion,
    first_character,
    mqa_accuracy,
    policy_flags,
)
from graphs.commands.evaluate import metrics_command

# Hand-made predictions under icm_sexy ("sexy" is the flagged label). Per rule variant:
#   R1: 4 scored -> tp 2 (upper_bust x2), fn 1 (middle_leg), tn 1 (upper_normal ok);
#       unscored 3: a parse failure (its wrong-looking verdict must not count), a refusal, and
#       an "ok" row whose verdict is not a policy label.
#   R2: 3 scored -> fp 1 (upper_normal), tn 1 (middle_leg: "not sexy" under R2), tp 1.
ROWS = [
    ("R1", "upper_bust", "sexy", "sexy", "ok"),
    ("R1", "upper_bust", "sexy", "sexy", "ok"),
    ("R1", "middle_leg", "sexy", "not sexy", "ok"),
    ("R1", "upper_normal", "not sexy", "not sexy", "ok"),
    ("R1", "upper_normal", "not sexy", "sexy", "parse_failed"),
    ("R1", "middle_leg", "sexy", None, "refused"),
    ("R1", "middle_leg", "sexy", "maybe", "ok"),
    ("R2", "upper_normal", "not sexy", "sexy", "ok"),
    ("R2", "middle_leg", "not sexy", "not sexy", "ok"),
    ("R2", "upper_bust", "sexy", "sexy", "ok"),
]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "policy_name": "icm_sexy",
                "rule_variant": rule,
                "category": category,
                "expected_verdict": expected,
                "verdict": verdict,
                "status": status,
            }
            for rule, category, expected, verdict, status in ROWS
        ]
    )


def test_confusion_counts_and_ratios_by_hand() -> None:
    counts = confusion(
        [True, True, True, False, False, False], [True, False, True, True, False, None]
    )
    assert counts == Confusion(tp=2, fp=1, tn=1, fn=1, unscored=1)
    assert counts.scored == 5
    assert counts.accuracy == pytest.approx(3 / 5)
    assert counts.precision == pytest.approx(2 / 3)
    assert counts.recall == pytest.approx(2 / 3)
    assert counts.f1 == pytest.approx(2 / 3)


def test_undefined_ratios_are_none_not_zero() -> None:
    nothing_flagged = Confusion(tn=3)
    assert nothing_flagged.precision is None and nothing_flagged.recall is None
    assert nothing_flagged.f1 is None
    assert nothing_flagged.accuracy == 1.0
    all_missed = Confusion(fn=2, fp=1)
    assert all_missed.precision == 0.0 and all_missed.recall == 0.0 and all_missed.f1 == 0.0
    assert Confusion(unscored=4).accuracy is None


def test_table_per_rule_counts_unscored_apart() -> None:
    rows = classification_table(_frame(), policy_flags(["icm_sexy"]))
    by_rule = {r["rule_variant"]: r for r in rows}
    r1 = by_rule["R1"]
    assert (r1["tp"], r1["fp"], r1["tn"], r1["fn"], r1["unscored"]) == (2, 0, 1, 1, 3)
    assert r1["accuracy"] == pytest.approx(3 / 4)
    assert r1["precision"] == 1.0
    assert r1["recall"] == pytest.approx(2 / 3)
    assert r1["f1"] == pytest.approx(0.8)
    r2 = by_rule["R2"]
    assert (r2["tp"], r2["fp"], r2["tn"], r2["fn"], r2["unscored"]) == (1, 1, 1, 0, 0)
    assert r2["accuracy"] == pytest.approx(2 / 3)
    assert r2["precision"] == pytest.approx(1 / 2)
    assert r2["recall"] == 1.0


def test_unscored_predictions_do_not_lower_accuracy() -> None:
    frame = _frame()
    upper_normal_r1 = frame[(frame.rule_variant == "R1") & (frame.category == "upper_normal")]
    rows = classification_table(
        upper_normal_r1, policy_flags(["icm_sexy"]), by=("rule_variant", "category")
    )
    # One right answer and one parse failure whose verdict happens to be wrong: 100 %, 1 unscored.
    assert rows == [
        {
            "rule_variant": "R1",
            "category": "upper_normal",
            "tp": 0,
            "fp": 0,
            "tn": 1,
            "fn": 0,
            "unscored": 1,
            "scored": 1,
            "accuracy": 1.0,
            "precision": None,
            "recall": None,
            "f1": None,
        }
    ]


def test_per_category_grouping() -> None:
    rows = classification_table(
        _frame(), policy_flags(["icm_sexy"]), by=("rule_variant", "category")
    )
    keys = [(r["rule_variant"], r["category"]) for r in rows]
    assert keys == sorted(keys) and len(keys) == 6
    middle_leg_r1 = next(
        r for r in rows if r["category"] == "middle_leg" and r["rule_variant"] == "R1"
    )
    assert (middle_leg_r1["fn"], middle_leg_r1["unscored"], middle_leg_r1["recall"]) == (1, 2, 0.0)


def test_mqa_first_character_match_like_the_paper() -> None:
    result = mqa_accuracy(
        [
            ("Yes.", "Yes"),
            ("no, it is not", "Yes."),
            ("B) A skirt", "B."),
            ("(C)", "C."),
            ("", "A."),  # an empty answer is an answer, and wrong
            (None, "A."),  # no parseable answer: unscored
        ]
    )
    assert (result.correct, result.scored, result.unscored) == (3, 5, 1)
    assert result.accuracy == pytest.approx(0.6)
    assert first_character('  "d. none') == "D"


def test_bootstrap_interval_is_seeded_and_sensible() -> None:
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([70.0]) == (70.0, 70.0)
    assert bootstrap_ci([5.0, 5.0, 5.0]) == (5.0, 5.0)
    values = np.random.default_rng(7).normal(50, 10, 400)
    low, high = bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) == (low, high)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half, abs=0.3)
    assert high == pytest.approx(values.mean() + half, abs=0.3)
    wide = bootstrap_ci(values, seed=3, confidence=0.99)
    assert wide[0] < low and wide[1] > high


# --------------------------------------------------------------------------- from the store
def _store_with_predictions(path: Path) -> Path:
    now = utcnow()
    with Store.open(path) as store:
        store.insert(
            "runs",
            [
                {"run_id": "mod-1", "name": "icm-llava-r1", "kind": "moderate",
                 "status": "finished", "created_at": now},
                {"run_id": "gen-1", "name": "empty", "kind": "generate",
                 "status": "finished", "created_at": now},
            ],
        )  # fmt: skip
        store.insert(
            "predictions",
            [
                {"prediction_id": f"p{n}", "run_id": "mod-1", "model_path": "ckpt/lora",
                 **row, "created_at": now}
                for n, row in enumerate(_frame().to_dict("records"))
            ],
        )  # fmt: skip
    return path


def _metrics_app() -> typer.Typer:
    app = typer.Typer()
    app.command("metrics")(metrics_command)
    app.command("other")(lambda: None)  # two commands: Typer keeps the sub-command name
    return app


def test_metrics_command_reads_predictions_from_the_store(tmp_path: Path) -> None:
    db = _store_with_predictions(tmp_path / "icm.duckdb")
    runner = CliRunner()
    result = runner.invoke(_metrics_app(), ["metrics", "icm-llava-r1", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "mod-1"
    overall = {r["rule_variant"]: r for r in data["overall"]}
    assert overall["R1"]["accuracy"] == pytest.approx(3 / 4)
    assert overall["R1"]["unscored"] == 3
    assert len(data["category"]) == 6
    table = runner.invoke(_metrics_app(), ["metrics", "mod-1", "--db", str(db)])
    assert table.exit_code == 0, table.output
    r1_line = next(line for line in table.stdout.splitlines() if " R1 " in line)
    assert r1_line.split() == ["R1", "4", "3", "2", "0", "1", "1", "0.750", "1.000",
                               "0.667", "0.800"]  # fmt: skip
    empty = runner.invoke(_metrics_app(), ["metrics", "empty", "--db", str(db)])
    assert empty.exit_code == 1
    assert "has no predictions" in empty.stderr
