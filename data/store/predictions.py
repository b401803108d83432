"""Reads and writes of the ``predictions`` table for evaluation: imported outputs and MQA answers.

``icm moderate`` writes verdict predictions; ``icm metrics --predictions FILE`` imports a
model's released outputs (the paper's ICM-Val/ICM-Test JSON, its MQA answer files, a generic
JSONL) as a run of the same kind, so the same metrics read both. ``task`` tells a verdict
prediction (``verdict``) from an MQA answer (``mqa_mc``, ``mqa_qa``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from data.store.records import RunRecord, register_run
from data.store.store import Store

VERDICT_TASK = "verdict"
MQA_TASKS: tuple[str, ...] = ("mqa_mc", "mqa_qa")


def record_imported_predictions(
    store: Store, run: RunRecord, rows: Sequence[Mapping[str, Any]]
) -> None:
    """The import's ``runs`` row and its predictions, in one transaction."""
    with store.transaction():
        register_run(store, run)
        store.insert("predictions", [dict(r) for r in rows])


def verdict_predictions(store: Store, run_id: str) -> pd.DataFrame:
    """A run's verdict predictions (MQA answers left out), ordered for grouping, with the image
    path (the paper's formulas read categories from image names)."""
    return store.query(
        "SELECT policy_name, rule_variant, category, expected_verdict, verdict, score, status, "
        "image_path FROM predictions WHERE run_id = ? AND coalesce(task, 'verdict') = 'verdict' "
        "ORDER BY policy_name, rule_variant, category, image_path",
        [run_id],
    )


def mqa_answers(store: Store, run_id: str) -> pd.DataFrame:
    """A run's MQA answers in import order: task, image, answer (``verdict``) and reference
    answer (``expected_verdict``)."""
    return store.query(
        "SELECT task, image_path, verdict AS answer, expected_verdict AS reference, status "
        "FROM predictions WHERE run_id = ? AND task IN ('mqa_mc', 'mqa_qa') "
        "ORDER BY task, prediction_id",
        [run_id],
    )


def run_config(store: Store, run_id: str) -> str | None:
    """The run's stored ``config_json`` (None when absent)."""
    value = store.scalar("SELECT config_json FROM runs WHERE run_id = ?", [run_id])
    return None if value is None else str(value)
