"""Named reads: every question the commands, the runner and the scorers ask the store.

Each function is one query (or a few that belong together) and returns plain dicts, so callers
shape and print them without knowing the schema. The viewer's paged, filtered reads live in
:mod:`data.store.browse`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from data.store.outcomes import REFUSED_SQL
from data.store.store import Store

SAMPLE_STATUSES = ("accepted", "rejected", "failed", "pending")
#: the one stage_outputs stage that is not a generation stage: the critic's attempt counter
#: counts its passes, not retries. Every other stage (whatever the stage registry holds: the
#: store sits below the agents and does not import it) counts as generating.
CRITIC_STAGE = "critic"


# --------------------------------------------------------------------------- runs
def run_row(store: Store, run_id: str) -> dict[str, Any] | None:
    """The whole ``runs`` row of this id, or None."""
    rows = store.rows("SELECT * FROM runs WHERE run_id = ?", [run_id])
    return rows[0] if rows else None


def runs_named(store: Store, name: str) -> list[dict[str, Any]]:
    """Runs with this name, oldest first."""
    return store.rows("SELECT * FROM runs WHERE name = ? ORDER BY created_at", [name])


def runs_with_id_prefix(store: Store, prefix: str) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT * FROM runs WHERE starts_with(run_id, ?) ORDER BY created_at", [prefix]
    )


def run_listing(store: Store, limit: int | None = None) -> list[dict[str, Any]]:
    """(run_id, name, kind, status) of every run, oldest first (for "runs present" messages)."""
    sql = "SELECT run_id, name, kind, status FROM runs ORDER BY created_at"
    if limit is None:
        return store.rows(sql)
    return store.rows(sql + " LIMIT ?", [limit])


def run_exists(store: Store, run_id: str) -> bool:
    return bool(store.scalar("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]))


def latest_run_id(store: Store, kind: str) -> str | None:
    """The newest run of this kind."""
    return store.scalar(
        "SELECT run_id FROM runs WHERE kind = ? ORDER BY created_at DESC LIMIT 1", [kind]
    )


def run_summaries(store: Store) -> list[dict[str, Any]]:
    """Every run with its sample counts by status and its calls, tokens and cost (NULL cost
    where no call reported one), oldest first."""
    return store.rows(_RUN_SUMMARIES_SQL)


#: a call (``c``) of a sample (``s``) made by an attempt before the one that gave the sample its
#: current outcome: an interrupted attempt (the run was killed, then resumed) or a superseded
#: one (``--retry-failed``)
EARLIER_ATTEMPT_SQL = "s.attempt_started_at IS NOT NULL AND c.started_at < s.attempt_started_at"

_RUN_SUMMARIES_SQL = f"""
SELECT r.run_id, r.name, r.kind, r.status, r.created_at, r.finished_at, r.policy_name,
       r.rule_variants, r.role_bindings_json,
       coalesce(s.samples, 0) AS samples,
       coalesce(s.accepted, 0) AS accepted,
       coalesce(s.rejected, 0) AS rejected,
       coalesce(s.failed, 0) AS failed,
       coalesce(s.refused, 0) AS refused,
       coalesce(s.pending, 0) AS pending,
       coalesce(c.calls, 0) AS calls,
       coalesce(c.cache_hits, 0) AS cache_hits,
       coalesce(e.earlier_calls, 0) AS earlier_calls,
       coalesce(c.input_tokens, 0) AS input_tokens,
       coalesce(c.output_tokens, 0) AS output_tokens,
       coalesce(c.cached_input_tokens, 0) AS cached_input_tokens,
       coalesce(c.cache_write_tokens, 0) AS cache_write_tokens,
       c.cost_usd
FROM runs r
LEFT JOIN (
    SELECT run_id, count(*) AS samples,
           count(*) FILTER (WHERE status = 'accepted') AS accepted,
           count(*) FILTER (WHERE status = 'rejected') AS rejected,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE {REFUSED_SQL}) AS refused,
           count(*) FILTER (WHERE status = 'pending') AS pending
    FROM samples GROUP BY run_id
) s USING (run_id)
LEFT JOIN (
    SELECT run_id, count(*) AS calls,
           count(*) FILTER (WHERE cache_hit) AS cache_hits,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           sum(cached_input_tokens) AS cached_input_tokens,
           sum(cache_write_tokens) AS cache_write_tokens,
           sum(cost_usd) AS cost_usd
    FROM llm_calls GROUP BY run_id
) c USING (run_id)
LEFT JOIN (
    SELECT s.run_id, count(*) AS earlier_calls
    FROM llm_calls c JOIN samples s USING (sample_id)
    WHERE {EARLIER_ATTEMPT_SQL}
    GROUP BY s.run_id
) e USING (run_id)
ORDER BY r.created_at, r.run_id
"""


# --------------------------------------------------------------------------- samples
def sample_row(store: Store, sample_id: str) -> dict[str, Any] | None:
    rows = store.rows("SELECT * FROM samples WHERE sample_id = ?", [sample_id])
    return rows[0] if rows else None


def samples_with_id_prefix(store: Store, prefix: str, limit: int) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT * FROM samples WHERE starts_with(sample_id, ?) ORDER BY sample_id LIMIT ?",
        [prefix, limit],
    )


def sample_count(store: Store) -> int:
    return int(store.scalar("SELECT count(*) FROM samples") or 0)


def status_counts(store: Store, run_id: str) -> dict[str, int]:
    """The run's samples by status, every status present (0 where none)."""
    counts = dict.fromkeys(SAMPLE_STATUSES, 0)
    for row in store.rows(
        "SELECT status, count(*) AS n FROM samples WHERE run_id = ? GROUP BY status", [run_id]
    ):
        counts[row["status"]] = int(row["n"])
    return counts


def sample_statuses(store: Store, run_id: str) -> dict[str, str]:
    """sample id -> status, for every sample of the run."""
    rows = store.rows("SELECT sample_id, status FROM samples WHERE run_id = ?", [run_id])
    return {r["sample_id"]: r["status"] for r in rows}


def sample_ids_with_status(store: Store, run_id: str, statuses: Sequence[str]) -> list[str]:
    rows = store.rows(
        "SELECT sample_id FROM samples WHERE run_id = ? AND list_contains(?, status) "
        "ORDER BY sample_id",
        [run_id, list(statuses)],
    )
    return [r["sample_id"] for r in rows]


def run_samples(store: Store, run_id: str, *, status: str | None = None) -> list[dict[str, Any]]:
    """(sample_id, status, reasons_json, image_path, category, attempts) of the run's samples,
    by id; only those with ``status`` when given."""
    sql = (
        "SELECT sample_id, status, reasons_json, image_path, category, attempts FROM samples "
        "WHERE run_id = ?"
    )
    params: list[Any] = [run_id]
    if status is not None:
        sql += " AND status = ?"
        params.append(status)
    return store.rows(sql + " ORDER BY sample_id", params)


def sample_history(store: Store, sample_id: str) -> dict[str, list[dict[str, Any]]]:
    """A sample's stage outputs, model calls (its own and those its stages name) and critic
    checks (in time order), as rows."""
    stages = store.rows("SELECT * FROM stage_outputs WHERE sample_id = ?", [sample_id])
    calls = store.rows(
        "SELECT * FROM llm_calls WHERE sample_id = ? "
        "OR call_id IN (SELECT call_id FROM stage_outputs WHERE sample_id = ?)",
        [sample_id, sample_id],
    )
    critiques = store.rows(
        "SELECT * FROM critiques WHERE sample_id = ? ORDER BY created_at, stage, attempt, "
        "check_name",
        [sample_id],
    )
    return {"stages": stages, "calls": calls, "critiques": critiques}


# --------------------------------------------------------------------------- exports
def export_rows(
    store: Store, run_id: str, *, include_all: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(samples, explanations, Q-A items) of the run in export order; accepted samples only
    unless ``include_all``."""
    status_filter = "" if include_all else "AND s.status = 'accepted'"
    samples = store.rows(
        f"SELECT * FROM samples s WHERE s.run_id = ? {status_filter} "
        "ORDER BY s.created_at, s.sample_id",
        [run_id],
    )
    explanations = store.rows(
        "SELECT e.* FROM explanations e JOIN samples s USING (sample_id) "
        f"WHERE s.run_id = ? {status_filter} ORDER BY e.sample_id, e.rule_variant",
        [run_id],
    )
    qa_rows = store.rows(
        "SELECT q.* FROM qa_items q JOIN samples s USING (sample_id) "
        f"WHERE s.run_id = ? {status_filter} ORDER BY q.sample_id, q.position, q.qa_id",
        [run_id],
    )
    return samples, explanations, qa_rows


def explanations_with_samples(
    store: Store, run_id: str, limit: int | None = None
) -> list[dict[str, Any]]:
    """The run's final explanations of its accepted samples, with their sample's policy,
    category, description, context and image, by sample and rule variant.

    Accepted samples only: rejected and failed samples keep their last explanations too (for
    export --all and the viewer), but a judging run scores the run's output.
    """
    sql = (
        "SELECT e.sample_id, e.rule_variant, e.verdict, e.expected_verdict, e.explanation, "
        "s.policy_name, s.category, s.description, s.context, s.image_path, s.image_sha256 "
        "FROM explanations e JOIN samples s USING (sample_id) WHERE e.run_id = ? "
        "AND s.status = 'accepted' ORDER BY e.sample_id, e.rule_variant"
    )
    if limit is None:
        return store.rows(sql, [run_id])
    return store.rows(sql + " LIMIT ?", [run_id, limit])


def categories_by_image(store: Store, policy_name: str) -> dict[str, str]:
    """image sha256 -> category of the latest generation sample of this policy."""
    rows = store.rows(
        "SELECT image_sha256, category FROM samples WHERE policy_name = ? AND category IS NOT NULL "
        "AND image_sha256 IS NOT NULL ORDER BY created_at",
        [policy_name],
    )
    return {r["image_sha256"]: r["category"] for r in rows}


# --------------------------------------------------------------------------- comparison
def sample_totals(store: Store, run_id: str) -> dict[str, int]:
    """samples, accepted, rejected, failed (of which ``refused``), pending of one run."""
    row = store.rows(
        "SELECT count(*) AS samples, "
        "count(*) FILTER (WHERE status = 'accepted') AS accepted, "
        "count(*) FILTER (WHERE status = 'rejected') AS rejected, "
        "count(*) FILTER (WHERE status = 'failed') AS failed, "
        f"count(*) FILTER (WHERE {REFUSED_SQL}) AS refused, "
        "count(*) FILTER (WHERE status = 'pending') AS pending "
        "FROM samples WHERE run_id = ?",
        [run_id],
    )[0]
    return {k: int(v) for k, v in row.items()}


def retries_per_sample(store: Store, run_id: str) -> list[int]:
    """For each sample that ran a generating stage: its attempts beyond the first, summed over
    those stages."""
    rows = store.rows(
        "SELECT sample_id, sum(extra) AS retries FROM ("
        "SELECT sample_id, stage, max(attempt) - 1 AS extra FROM stage_outputs "
        "WHERE run_id = ? AND stage <> ? GROUP BY sample_id, stage"
        ") GROUP BY sample_id",
        [run_id, CRITIC_STAGE],
    )
    return [int(r["retries"]) for r in rows]


def failed_check_counts(store: Store, run_id: str) -> dict[str, int]:
    """check name -> failures in the run, most frequent first."""
    rows = store.rows(
        "SELECT check_name, count(*) AS n FROM critiques WHERE run_id = ? AND NOT passed "
        "GROUP BY check_name ORDER BY n DESC, check_name",
        [run_id],
    )
    return {r["check_name"]: int(r["n"]) for r in rows}


def call_totals(store: Store, run_id: str) -> dict[str, Any]:
    """calls, cache_hits, input/output tokens (and of the input, those the provider's prompt
    cache read and wrote), cost (None if unknown) and mean latency of the calls that reached a
    model."""
    return store.rows(
        "SELECT count(*) AS calls, count(*) FILTER (WHERE c.cache_hit) AS cache_hits, "
        f"count(*) FILTER (WHERE {EARLIER_ATTEMPT_SQL}) AS earlier_calls, "
        "coalesce(sum(c.input_tokens), 0) AS input_tokens, "
        "coalesce(sum(c.cached_input_tokens), 0) AS cached_input_tokens, "
        "coalesce(sum(c.cache_write_tokens), 0) AS cache_write_tokens, "
        "coalesce(sum(c.output_tokens), 0) AS output_tokens, sum(c.cost_usd) AS cost_usd, "
        "avg(c.latency_ms) FILTER (WHERE NOT c.cache_hit) AS mean_latency_ms "
        "FROM llm_calls c LEFT JOIN samples s USING (sample_id) WHERE c.run_id = ?",
        [run_id],
    )[0]


def sample_call_costs(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Per sample of the run: status, the sum of its calls' cost (NULL where none reported
    one) and tokens in + out, retries included; then one row with ``sample_id`` NULL and
    ``status`` NULL for the run's calls that name no sample of it (when there are any)."""
    return store.rows(
        "SELECT s.sample_id, s.status, sum(c.cost_usd) AS cost_usd, "
        "coalesce(sum(c.input_tokens), 0) + coalesce(sum(c.output_tokens), 0) AS tokens "
        "FROM samples s LEFT JOIN llm_calls c ON c.sample_id = s.sample_id AND c.run_id = ? "
        "WHERE s.run_id = ? GROUP BY s.sample_id, s.status "
        "UNION ALL "
        "SELECT NULL, NULL, sum(cost_usd), "
        "coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) "
        "FROM llm_calls WHERE run_id = ? AND (sample_id IS NULL OR sample_id NOT IN "
        "(SELECT sample_id FROM samples WHERE run_id = ?)) HAVING count(*) > 0 "
        "ORDER BY 1 NULLS LAST",
        [run_id, run_id, run_id, run_id],
    )


def call_profile_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The run's model calls in start order: stage, role, tokens in and out, latency, the
    call's parameters and trace extras (``params_json``: llama.cpp's prefill and decode
    figures when it ran in process), start and finish time, cache hit."""
    return store.rows(
        "SELECT stage, role, input_tokens, output_tokens, latency_ms, params_json, "
        "started_at, finished_at, cache_hit FROM llm_calls WHERE run_id = ? "
        "ORDER BY started_at",
        [run_id],
    )


def judgments_of_runs(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Judgments of the generation runs' samples: run, judge_spec, status, scores_json,
    sample_id, rule_variant, item_id."""
    return store.rows(
        "SELECT s.run_id AS run, j.judge_spec, j.status, j.scores_json, "
        "coalesce(j.sample_id, j.item_id) AS sample_id, j.rule_variant, j.item_id "
        "FROM judgments j JOIN samples s ON s.sample_id = coalesce(j.sample_id, j.item_id) "
        "WHERE s.run_id IN (SELECT unnest(?))",
        [list(run_ids)],
    )


# --------------------------------------------------------------------------- caches
def perception_rows(store: Store, image_sha256: str) -> list[dict[str, Any]]:
    """Stored detector evidence of an image: tool, tool_version, evidence_json, created_at."""
    return store.rows(
        "SELECT tool, tool_version, evidence_json, created_at FROM perception_cache "
        "WHERE image_sha256 = ? ORDER BY tool",
        [image_sha256],
    )


def llm_cache_keys(store: Store) -> set[str]:
    return {r["cache_key"] for r in store.rows("SELECT cache_key FROM llm_cache")}


def llm_cache_entry(store: Store, cache_key: str) -> dict[str, Any] | None:
    rows = store.rows(
        "SELECT cache_key, provider, model, schema_name, raw_output, parsed_json, "
        "input_tokens, output_tokens FROM llm_cache WHERE cache_key = ?",
        [cache_key],
    )
    return rows[0] if rows else None


# --------------------------------------------------------------------------- predictions
def predictions_frame(store: Store, run_id: str) -> pd.DataFrame:
    """The prediction rows of one run (policy, rule, category, expected, verdict, score,
    status)."""
    return store.query(
        "SELECT policy_name, rule_variant, category, expected_verdict, verdict, score, status "
        "FROM predictions WHERE run_id = ? ORDER BY policy_name, rule_variant, category",
        [run_id],
    )


# --------------------------------------------------------------------------- call statistics
def call_count(store: Store, *, role: str | None = None) -> int:
    """Traced model calls in the store (those of ``role`` only, when given)."""
    if role is None:
        return int(store.scalar("SELECT count(*) FROM llm_calls") or 0)
    return int(store.scalar("SELECT count(*) FROM llm_calls WHERE role = ?", [role]) or 0)


def call_span_s(store: Store) -> float | None:
    """Seconds from the first traced call's start to the last one's end (None without calls)."""
    value = store.scalar("SELECT epoch(max(finished_at)) - epoch(min(started_at)) FROM llm_calls")
    return None if value is None else float(value)
