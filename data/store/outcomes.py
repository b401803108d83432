"""Reads for the end-of-run report: how each sample of a run ended, and why.

Kept beside the store (all SQL lives in ``data/store``) so the report that ``generate`` prints
stays free of SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from data.store.store import Store


@dataclass(frozen=True)
class SampleOutcome:
    """One sample's final state: its image, status and the reasons the run recorded."""

    sample_id: str
    image_path: str | None
    category: str | None
    status: str
    reasons: tuple[str, ...]


def sample_outcomes(store: Store, run_id: str) -> list[SampleOutcome]:
    """Every sample of ``run_id`` in the order they were registered (manifest order)."""
    rows = store.rows(
        "SELECT sample_id, image_path, category, status, reasons_json FROM samples "
        "WHERE run_id = ? ORDER BY created_at, image_path, sample_id",
        [run_id],
    )
    return [
        SampleOutcome(
            sample_id=row["sample_id"],
            image_path=row["image_path"],
            category=row["category"],
            status=row["status"],
            reasons=tuple(_reasons(row["reasons_json"])),
        )
        for row in rows
    ]


def _reasons(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return [raw]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]
