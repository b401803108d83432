"""Provider batches (``delivery=batch``): what was submitted, and what each request answered.

A batch costs half and may take hours, so its id must survive the process: it is committed the
moment the provider accepts it. A rerun asks :func:`open_requests` which of its requests
(by ``custom_id``) are already in a submitted batch that has not ended and polls that batch
instead of paying for it twice; :func:`stored_results` gives back result lines fetched but not
yet used (a kill between download and use). Each result line is used once
(:func:`mark_consumed`): a retried request is a new submission, never a replay of a failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from data.store.store import Store, to_json, utcnow

#: provider statuses after which a batch is never polled again
ENDED = ("completed", "failed", "expired", "cancelled", "ended")


@dataclass(frozen=True)
class BatchRow:
    batch_id: str
    provider: str
    endpoint: str
    status: str
    n_requests: int


def record_submitted(
    store: Store,
    *,
    batch_id: str,
    provider: str,
    endpoint: str,
    status: str,
    custom_ids: Sequence[str],
    input_file_id: str | None = None,
) -> None:
    """The batch and its requests, in one transaction, as soon as the provider accepted it."""
    now = utcnow()
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO llm_batches (batch_id, provider, endpoint, status, n_requests, "
            "input_file_id, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [batch_id, provider, endpoint, status, len(custom_ids), input_file_id, now],
        )
        for custom_id in custom_ids:
            tx.execute(
                "INSERT INTO llm_batch_items (batch_id, custom_id) VALUES (?, ?)",
                [batch_id, custom_id],
            )


def open_requests(store: Store, endpoint: str, custom_ids: Iterable[str]) -> dict[str, str]:
    """custom_id -> id of a batch of ``endpoint`` that holds it and has not ended."""
    ids = sorted(set(custom_ids))
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    ended = ", ".join("?" for _ in ENDED)
    rows = store.rows(
        "SELECT i.custom_id, i.batch_id FROM llm_batch_items i JOIN llm_batches b "
        f"USING (batch_id) WHERE b.endpoint = ? AND b.status NOT IN ({ended}) "
        f"AND i.custom_id IN ({marks}) ORDER BY b.submitted_at",
        [endpoint, *ENDED, *ids],
    )
    return {row["custom_id"]: row["batch_id"] for row in rows}


def stored_results(
    store: Store, endpoint: str, custom_ids: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """custom_id -> (batch id, a fetched result line as JSON text) of ``endpoint``, not used yet."""
    ids = sorted(set(custom_ids))
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = store.rows(
        "SELECT i.custom_id, i.batch_id, i.result_json FROM llm_batch_items i JOIN llm_batches b "
        "USING (batch_id) WHERE b.endpoint = ? AND i.result_json IS NOT NULL "
        f"AND i.consumed_at IS NULL AND i.custom_id IN ({marks}) ORDER BY b.submitted_at",
        [endpoint, *ids],
    )
    return {row["custom_id"]: (row["batch_id"], row["result_json"]) for row in rows}


def record_ended(
    store: Store,
    batch_id: str,
    status: str,
    results: Mapping[str, str],
    detail: Mapping[str, Any] | None = None,
) -> None:
    """The batch's final status and every result line it gave (custom_id -> JSON text)."""
    with store.transaction() as tx:
        tx.execute(
            "UPDATE llm_batches SET status = ?, ended_at = ?, detail_json = ? WHERE batch_id = ?",
            [status, utcnow(), to_json(dict(detail or {})), batch_id],
        )
        for custom_id, line in results.items():
            tx.execute(
                "UPDATE llm_batch_items SET result_json = ? WHERE batch_id = ? AND custom_id = ?",
                [line, batch_id, custom_id],
            )


def record_status(store: Store, batch_id: str, status: str) -> None:
    """A status seen while polling (``in_progress``, ``finalizing``, ...)."""
    store.execute("UPDATE llm_batches SET status = ? WHERE batch_id = ?", [status, batch_id])


def mark_consumed(store: Store, endpoint: str, custom_ids: Iterable[str]) -> None:
    """These requests' result lines were used: never hand them out again."""
    ids = sorted(set(custom_ids))
    if not ids:
        return
    marks = ", ".join("?" for _ in ids)
    store.execute(
        "UPDATE llm_batch_items SET consumed_at = ? WHERE consumed_at IS NULL "
        "AND result_json IS NOT NULL AND custom_id IN ("
        f"{marks}) AND batch_id IN (SELECT batch_id FROM llm_batches WHERE endpoint = ?)",
        [utcnow(), *ids, endpoint],
    )


def batches(store: Store, endpoint: str | None = None) -> list[BatchRow]:
    """Every recorded batch (of ``endpoint``), oldest first."""
    where, params = ("WHERE endpoint = ?", [endpoint]) if endpoint else ("", [])
    rows = store.rows(
        "SELECT batch_id, provider, endpoint, status, n_requests FROM llm_batches "
        f"{where} ORDER BY submitted_at, batch_id",
        params,
    )
    return [BatchRow(**row) for row in rows]
