"""Why a failed sample failed: ``refused`` (the model declined, after its retries and fallback)
or ``failed`` (any other error), derived from the sample's recorded reason.

A refused sample keeps the status ``failed``: every count, resume rule and export that treats
``failed`` as "ended without data" stays right, and the issue's wording "ends failed with
refused" is literal. The kind is read from the first reason, which the pipeline writes as
``"<stage>: <call status>: <detail>"`` (``describer: refused: ...``), so old stores get it too
and no column is needed. Commands that show a run (``icm runs``, ``icm samples``, ``icm
compare``, the viewer) split ``failed`` into refused and other failures with these helpers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

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
