"""What each viewer page shows, as plain dicts: the routes render them, the export reuses them.

Run-level numbers and a sample's timeline come from ``data.runs_cli`` (:func:`run_overview`,
:func:`sample_trace`), so the viewer, ``icm runs`` and ``icm traces`` never disagree. The sample
list is the one query that must scale (100k samples per run): it is filtered in SQL, counted,
and read one page at a time (``LIMIT``/``OFFSET`` over the ``samples (run_id, status)`` index);
everything else a row shows (failed checks, judge scores) is fetched for that page's ids only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from data.runs_cli import compact_roles, run_overview, sample_trace
from data.store import Store
from data.store.outcome import failure_kind

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
SAMPLE_SORTS = {
    "id": "sample_id",
    "category": "category",
    "status": "status",
    "attempts": "attempts",
    "updated": "updated_at",
}


def loads_json(raw: str | None) -> Any:
    """Stored JSON, or the raw text where it does not parse (shown, never hidden)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


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
    row = store.rows(
        "SELECT command, config_json, prompt_hashes_json, git_revision, package_versions_json "
        "FROM runs WHERE run_id = ?",
        [run_id],
    )[0]
    return {**found[0], **row}


# --------------------------------------------------------------------------- samples of a run
@dataclass(frozen=True)
class SampleFilters:
    """The run page's filters; empty strings mean "any"."""

    status: str = ""
    category: str = ""
    rule: str = ""
    check: str = ""
    """A critic check that failed at least once for the sample (``stage:check_name``)."""
    reason: str = ""
    """Text contained in the sample's final reasons (rejections, failures)."""

    def where(self, run_id: str) -> tuple[str, list[Any]]:
        clauses, params = ["s.run_id = ?"], [run_id]
        if self.status:
            clauses.append("s.status = ?")
            params.append(self.status)
        if self.category:
            clauses.append("s.category = ?")
            params.append(self.category)
        if self.rule:
            clauses.append("list_contains(string_split(s.rule_variants, ','), ?)")
            params.append(self.rule)
        if self.check:
            stage, _, name = self.check.partition(":")
            clauses.append(
                "s.sample_id IN (SELECT sample_id FROM critiques WHERE run_id = ? AND NOT passed "
                "AND stage = ? AND check_name = ?)"
            )
            params += [run_id, stage, name]
        if self.reason:
            clauses.append("s.reasons_json ILIKE ?")
            params.append("%" + self.reason.replace("%", r"\%").replace("_", r"\_") + "%")
        return " AND ".join(clauses), params

    def as_params(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}


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
    categories = store.rows(
        "SELECT category AS value, count(*) AS n FROM samples WHERE run_id = ? "
        "GROUP BY category ORDER BY category NULLS LAST",
        [run_id],
    )
    rules = store.rows(
        "SELECT unnest(string_split(rule_variants, ',')) AS value, count(*) AS n FROM samples "
        "WHERE run_id = ? AND rule_variants IS NOT NULL AND rule_variants <> '' "
        "GROUP BY value ORDER BY value",
        [run_id],
    )
    checks = store.rows(
        "SELECT stage || ':' || check_name AS value, count(DISTINCT sample_id) AS n "
        "FROM critiques WHERE run_id = ? AND NOT passed GROUP BY value ORDER BY n DESC, value",
        [run_id],
    )
    return {"categories": categories, "rules": rules, "checks": checks}


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
    where, params = filters.where(run_id)
    total = int(store.scalar(f"SELECT count(*) FROM samples s WHERE {where}", params) or 0)
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    column = SAMPLE_SORTS.get(sort, "sample_id")
    order = f"s.{column} {'DESC' if desc else 'ASC'} NULLS LAST"
    if column != "sample_id":
        order += ", s.sample_id"
    rows = store.rows(
        "SELECT s.sample_id, s.image_path, s.category, s.category_source, s.rule_variants, "
        "s.status, s.reasons_json, s.attempts, s.updated_at FROM samples s "
        f"WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, per_page, (page - 1) * per_page],
    )
    return Page(enrich(store, rows), total, page, per_page)


def enrich(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to sample rows (as selected above) their reasons, failed checks and judge scores,
    with one query each for all the rows."""
    ids = [r["sample_id"] for r in rows]
    failed = _failed_checks(store, ids)
    scores = _judge_scores(store, ids)
    for row in rows:
        reasons = loads_json(row.pop("reasons_json")) or []
        row["reasons"] = reasons if isinstance(reasons, list) else [reasons]
        row["failure"] = failure_kind(row.get("status"), row["reasons"])
        row["failed_checks"] = failed.get(row["sample_id"], [])
        row["judge"] = scores.get(row["sample_id"], [])
    return rows


def _in_list(ids: list[str]) -> tuple[str, list[str]]:
    return ", ".join("?" for _ in ids) or "NULL", ids


def _failed_checks(store: Store, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not ids:
        return {}
    marks, params = _in_list(ids)
    out: dict[str, list[dict[str, Any]]] = {}
    for row in store.rows(
        "SELECT sample_id, stage, check_name, count(*) AS n, max(attempt) AS last_attempt "
        f"FROM critiques WHERE sample_id IN ({marks}) AND NOT passed "
        "GROUP BY ALL ORDER BY sample_id, stage, check_name",
        params,
    ):
        out.setdefault(row["sample_id"], []).append(row)
    return out


def _judge_scores(store: Store, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Mean of each numeric score per (sample, rubric) over repeats, swaps and rule variants."""
    if not ids:
        return {}
    marks, params = _in_list(ids)
    rows = store.rows(
        f"SELECT sample_id, rubric, judge_spec, status, scores_json FROM judgments "
        f"WHERE sample_id IN ({marks}) ORDER BY sample_id, rubric",
        params,
    )
    sums: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in rows:
        bucket = sums.setdefault((row["sample_id"], row["rubric"]), {})
        scores = loads_json(row["scores_json"])
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
    return bool(store.scalar("SELECT count(*) FROM samples WHERE sample_id = ?", [sample_id]))


def sample(store: Store, sample_id: str) -> dict[str, Any] | None:
    """Everything the sample page shows, or None for an unknown id (exact ids only)."""
    if not sample_exists(store, sample_id):
        return None
    trace = sample_trace(store, sample_id, full=True)
    row = store.rows("SELECT * FROM samples WHERE sample_id = ?", [sample_id])[0]
    calls = {
        c["call_id"]: c
        for c in store.rows(
            "SELECT call_id, messages_json, params_json, endpoint, schema_name, image_mode, "
            "parse_attempts FROM llm_calls WHERE call_id IN "
            "(SELECT call_id FROM llm_calls WHERE sample_id = ? "
            "UNION SELECT call_id FROM stage_outputs WHERE sample_id = ?)",
            [sample_id, sample_id],
        )
    }
    for event in trace["timeline"]:
        event["retry"] = (event["attempt"] or 1) > 1
        if event["kind"] == "call":
            extra = calls.get(event["call_id"], {})
            event["messages"] = _messages(extra.get("messages_json"))
            event["params"] = loads_json(extra.get("params_json"))
            for key in ("endpoint", "schema_name", "image_mode", "parse_attempts"):
                event[key] = extra.get(key)
        for key in _EVENT_KEYS:  # calls and stage outputs share one template
            event.setdefault(key, None)
    trace["sample"] = row
    trace["retries"] = sum(1 for e in trace["timeline"] if e["kind"] == "stage" and e["retry"])
    trace["perception"] = [
        {**r, "evidence": loads_json(r["evidence_json"])}
        for r in store.rows(
            "SELECT tool, tool_version, evidence_json, created_at FROM perception_cache "
            "WHERE image_sha256 = ? ORDER BY tool",
            [row["image_sha256"] or ""],
        )
    ]
    trace["explanations"] = store.rows(
        "SELECT rule_variant, question, verdict, expected_verdict, explanation FROM explanations "
        "WHERE sample_id = ? ORDER BY rule_variant",
        [sample_id],
    )
    trace["qa"] = [
        {**r, "options": loads_json(r.pop("options_json"))}
        for r in store.rows(
            "SELECT rule_variant, qa_type, question, options_json, answer, position FROM qa_items "
            "WHERE sample_id = ? ORDER BY position",
            [sample_id],
        )
    ]
    trace["judgments"] = [
        {**r, "scores": loads_json(r.pop("scores_json"))}
        for r in store.rows(
            "SELECT run_id, judge_spec, rubric, rule_variant, repeat_index, swapped, status, "
            "scores_json, rationale FROM judgments WHERE sample_id = ? "
            "ORDER BY rubric, rule_variant, repeat_index",
            [sample_id],
        )
    ]
    return trace


_EVENT_KEYS = (
    "feedback", "error", "raw_output", "parsed", "output", "raw_text", "messages", "params",
    "role", "provider", "model", "prompt_id", "prompt_hash", "cache_hit", "input_tokens",
    "output_tokens", "latency_ms", "cost_usd", "endpoint", "schema_name", "image_mode",
)  # fmt: skip


def _messages(raw: str | None) -> list[dict[str, str]]:
    """A call's rendered prompt as (role, text) pairs; unknown shapes shown as JSON text."""
    value = loads_json(raw)
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
    return store.scalar("SELECT image_path FROM samples WHERE sample_id = ?", [sample_id])
