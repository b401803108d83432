"""What each viewer page shows, as plain dicts: the routes render them, the export reuses them.

Run-level numbers and a sample's timeline come from ``graphs.commands.runs`` (:func:`run_overview`,
:func:`sample_trace`), so the viewer, ``icm runs`` and ``icm traces`` never disagree. The sample
list is the one read that must scale (100k samples per run): ``data.store.browse`` filters and
counts it in SQL and reads one page at a time; everything else a row shows (failed checks, judge
scores) is fetched for that page's ids only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from data.provenance import compact_roles
from data.store import Store, browse, from_json, queries
from data.store.browse import SampleFilters
from data.store.outcomes import failure_kind
from graphs.commands.runs import run_overview, sample_trace
from graphs.viewer.record import policy_labels, rule_records

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
STATUSES = ("accepted", "rejected", "failed", "pending")
SCORED = ("scored", "ok")
"""Judgment statuses that carry scores; any other status is unscored, never a low score."""

RUN_SORTS = {
    "created": "created_at",
    "name": "name",
    "samples": "samples",
    "accepted": "accepted",
    "rejected": "rejected",
    "failed": "failed",
    "tokens": "tokens",
    "cost": "cost_usd",
    "duration": "duration_s",
}


# --------------------------------------------------------------------------- runs
def _duration(run: dict[str, Any]) -> float | None:
    if not run["created_at"] or not run["finished_at"]:
        return None
    start = datetime.fromisoformat(run["created_at"])
    return (datetime.fromisoformat(run["finished_at"]) - start).total_seconds()


def runs(
    store: Store, *, q: str = "", status: str = "", sort: str = "created", desc: bool = True
) -> list[dict[str, Any]]:
    """Every run with counts, tokens, cost and duration; ``q`` matches name, id, policy, rules
    or model binding (case-insensitive)."""
    out = []
    needle = q.strip().lower()
    for run in run_overview(store):
        run["models"] = compact_roles(run["roles"])
        run["duration_s"] = _duration(run)
        haystack = " ".join(
            str(run[k] or "") for k in ("name", "run_id", "policy", "rules", "models", "kind")
        ).lower()
        if needle and needle not in haystack:
            continue
        if status and run["status"] != status:
            continue
        out.append(run)
    key = RUN_SORTS.get(sort, "created_at")
    present = [r for r in out if r[key] is not None]
    missing = [r for r in out if r[key] is None]  # unknown cost/duration: always last
    present.sort(key=lambda r: (r[key], r["run_id"]), reverse=desc)
    return present + missing


def run(store: Store, run_id: str) -> dict[str, Any] | None:
    """One run's overview plus its stored configuration, or None."""
    found = [r for r in runs(store) if r["run_id"] == run_id]
    if not found:
        return None
    return {**found[0], **(browse.run_provenance(store, run_id) or {})}


# --------------------------------------------------------------------------- samples of a run
@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int
    page: int
    per_page: int
    pages: int = field(init=False)

    def __post_init__(self) -> None:
        self.pages = max(1, math.ceil(self.total / self.per_page))


def facets(store: Store, run_id: str) -> dict[str, list[Any]]:
    """The values the run page's filter menus offer, with counts."""
    return dict(browse.facets(store, run_id))


def samples(
    store: Store,
    run_id: str,
    filters: SampleFilters,
    *,
    page: int = 1,
    per_page: int = DEFAULT_PAGE_SIZE,
    sort: str = "id",
    desc: bool = False,
) -> Page:
    """One page of a run's samples with their failed checks and judge scores."""
    per_page = per_page if per_page in PAGE_SIZES else DEFAULT_PAGE_SIZE
    total = browse.count_samples(store, run_id, filters)
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    rows = browse.sample_page(
        store, run_id, filters, sort=sort, desc=desc, limit=per_page, offset=(page - 1) * per_page
    )
    return Page(enrich(store, rows), total, page, per_page)


def enrich(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to sample rows (as selected above) their reasons, failed checks and judge scores,
    with one query each for all the rows."""
    ids = [r["sample_id"] for r in rows]
    failed = _failed_checks(store, ids)
    scores = _judge_scores(store, ids)
    for row in rows:
        reasons = from_json(row.pop("reasons_json")) or []
        row["reasons"] = reasons if isinstance(reasons, list) else [reasons]
        row["failure"] = failure_kind(row.get("status"), row["reasons"])
        row["failed_checks"] = failed.get(row["sample_id"], [])
        row["judge"] = scores.get(row["sample_id"], [])
    return rows


def _failed_checks(store: Store, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in browse.failed_checks(store, ids):
        out.setdefault(row["sample_id"], []).append(row)
    return out


def _judge_scores(store: Store, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Mean of each numeric score per (sample, rubric) over repeats, swaps and rule variants."""
    rows = browse.judgment_scores(store, ids)
    sums: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in rows:
        bucket = sums.setdefault((row["sample_id"], row["rubric"]), {})
        scores = from_json(row["scores_json"])
        if row["status"] not in SCORED or not isinstance(scores, dict):
            bucket.setdefault("unscored", []).append(1.0)
            continue
        for key, value in scores.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                bucket.setdefault(key, []).append(float(value))
    out: dict[str, list[dict[str, Any]]] = {}
    for (sample_id, rubric), bucket in sums.items():
        unscored = len(bucket.pop("unscored", []))
        means = {k: sum(v) / len(v) for k, v in sorted(bucket.items())}
        out.setdefault(sample_id, []).append(
            {"rubric": rubric, "means": means, "unscored": unscored}
        )
    return out


# --------------------------------------------------------------------------- one sample
def sample_exists(store: Store, sample_id: str) -> bool:
    return browse.sample_exists(store, sample_id)


def sample(store: Store, sample_id: str) -> dict[str, Any] | None:
    """Everything the sample page shows, or None for an unknown id (exact ids only)."""
    if not sample_exists(store, sample_id):
        return None
    trace = sample_trace(store, sample_id, full=True)
    row = queries.sample_row(store, sample_id) or {}
    calls = {c["call_id"]: c for c in browse.call_details(store, sample_id)}
    for event in trace["timeline"]:
        event["retry"] = (event["attempt"] or 1) > 1
        if event["kind"] == "call":
            extra = calls.get(event["call_id"], {})
            event["messages"] = _messages(extra.get("messages_json"))
            event["params"] = from_json(extra.get("params_json"))
            for key in ("endpoint", "schema_name", "image_mode", "parse_attempts"):
                event[key] = extra.get(key)
        for key in _EVENT_KEYS:  # calls and stage outputs share one template
            event.setdefault(key, None)
    trace["sample"] = row
    trace["retries"] = sum(1 for e in trace["timeline"] if e["kind"] == "stage" and e["retry"])
    trace["perception"] = [
        {**r, "evidence": from_json(r["evidence_json"])}
        for r in queries.perception_rows(store, row["image_sha256"] or "")
    ]
    trace["explanations"] = browse.explanations(store, sample_id)
    trace["qa"] = [
        {**r, "options": from_json(r.pop("options_json"))}
        for r in browse.qa_items(store, sample_id)
    ]
    trace["judgments"] = [
        {**r, "scores": from_json(r.pop("scores_json"))} for r in browse.judgments(store, sample_id)
    ]
    # the record, per rule, shown before the timeline (graphs/viewer/record.py)
    trace["record"] = rule_records(
        trace["explanations"], trace["qa"], policy_labels(trace["policy"])
    )
    return trace


_EVENT_KEYS = (
    "feedback", "error", "raw_output", "parsed", "output", "raw_text", "messages", "params",
    "role", "provider", "model", "prompt_id", "prompt_hash", "cache_hit", "input_tokens",
    "output_tokens", "latency_ms", "cost_usd", "endpoint", "schema_name", "image_mode",
    "cached_input_tokens", "cache_write_tokens",
)  # fmt: skip


def _messages(raw: str | None) -> list[dict[str, str]]:
    """A call's rendered prompt as (role, text) pairs; unknown shapes shown as JSON text."""
    value = from_json(raw)
    if not isinstance(value, list):
        return [] if value is None else [{"role": "?", "text": str(value)}]
    out = []
    for message in value:
        if not isinstance(message, dict):
            out.append({"role": "?", "text": json.dumps(message, ensure_ascii=False)})
            continue
        text = message.get("text")
        if text is None:
            text = message.get("content")
        if not isinstance(text, str):
            text = json.dumps(text, ensure_ascii=False, indent=1)
        extra = {k: v for k, v in message.items() if k not in {"role", "text", "content"}}
        if extra:
            text += "\n" + json.dumps(extra, ensure_ascii=False, default=str)
        out.append({"role": str(message.get("role", "?")), "text": text})
    return out


def image_path(store: Store, sample_id: str) -> str | None:
    """The image file the store names for this sample (the only files the viewer serves)."""
    return browse.image_path(store, sample_id)
