"""How the samples of a run ended, and why: the end-of-run report's reads, and whether a
failed sample was refused (the model declined, after its retries and fallback) or failed.

All SQL lives in ``data/store``, so the report that ``generate`` prints stays free of SQL.

A refused sample keeps the status ``failed``: every count, resume rule and export that treats
``failed`` as "ended without data" stays right, and issue 16's wording "ends failed with
refused" is literal. The kind is read from the first reason, which the pipeline writes as
``"<stage>: <call status>: <detail>"`` (``describer: refused: ...``), so old stores get it too
and no column is needed. Commands that show a run (``icm runs``, ``icm samples``, ``icm
compare``, the viewer) split ``failed`` into refused and other failures with these helpers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from data.store.store import Store

FailureKind = Literal["refused", "failed"]

#: a SQL predicate over ``samples`` (``status``, ``reasons_json``): the sample was refused
REFUSED_SQL = (
    "(status = 'failed' AND "
    "coalesce(json_extract_string(reasons_json, '$[0]'), '') LIKE '%: refused: %')"
)


def failure_kind(status: str | None, reasons: str | Sequence[str] | None) -> FailureKind | None:
    """``refused`` or ``failed`` for a failed sample (``reasons``: the list or its JSON text);
    None for any other status."""
    if status != "failed":
        return None
    items: Sequence[object]
    if isinstance(reasons, str):
        try:
            loaded = json.loads(reasons)
        except ValueError:
            loaded = [reasons]
        items = loaded if isinstance(loaded, list) else [loaded]
    else:
        items = reasons or []
    first = items[0] if items else ""
    return "refused" if isinstance(first, str) and ": refused: " in first else "failed"


def outcome_label(status: str | None, reasons: str | Sequence[str] | None) -> str:
    """The status as shown to a researcher: ``failed (refused)`` for a refused sample."""
    return "failed (refused)" if failure_kind(status, reasons) == "refused" else str(status)


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
