"""The viewer's reads: filtered, sorted, paged sample lists and what one sample's page shows.

The sample list is the one read that must scale (100k samples per run): it is filtered in SQL,
counted, and read one page at a time (``LIMIT``/``OFFSET`` over the ``samples (run_id,
status)`` index); what a row shows besides (failed checks, judge scores) is read for that page's
ids only. The viewer (``graphs/viewer``) shapes these rows into pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data.store.store import Store

SAMPLE_SORTS = {
    "id": "sample_id",
    "category": "category",
    "status": "status",
    "attempts": "attempts",
    "updated": "updated_at",
}
_LIST_COLUMNS = (
    "s.sample_id, s.image_path, s.category, s.category_source, s.rule_variants, s.status, "
    "s.reasons_json, s.attempts, s.updated_at"
)


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


# --------------------------------------------------------------------------- runs
def run_provenance(store: Store, run_id: str) -> dict[str, Any] | None:
    """command, config_json, prompt_hashes_json, git_revision, package_versions_json."""
    rows = store.rows(
        "SELECT command, config_json, prompt_hashes_json, git_revision, package_versions_json "
        "FROM runs WHERE run_id = ?",
        [run_id],
    )
    return rows[0] if rows else None


def table_count(store: Store, table: str) -> int:
    """Rows in ``finetune_runs``, ``calibrations`` ... (the front page's counters)."""
    if table not in {"finetune_runs", "calibrations", "judgments", "predictions"}:
        raise ValueError(f"no counter for table {table!r}")
    return int(store.scalar(f"SELECT count(*) FROM {table}") or 0)


# --------------------------------------------------------------------------- samples of a run
def facets(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
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


def count_samples(store: Store, run_id: str, filters: SampleFilters) -> int:
    where, params = filters.where(run_id)
    return int(store.scalar(f"SELECT count(*) FROM samples s WHERE {where}", params) or 0)


def sample_page(
    store: Store,
    run_id: str,
    filters: SampleFilters,
    *,
    sort: str,
    desc: bool,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """One page of the run's filtered samples (list columns only), sorted by ``sort`` (a key
    of :data:`SAMPLE_SORTS`), ties by id."""
    where, params = filters.where(run_id)
    column = SAMPLE_SORTS.get(sort, "sample_id")
    order = f"s.{column} {'DESC' if desc else 'ASC'} NULLS LAST"
    if column != "sample_id":
        order += ", s.sample_id"
    return store.rows(
        f"SELECT {_LIST_COLUMNS} FROM samples s WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )


def priority_samples(store: Store, run_id: str, limit: int) -> list[dict[str, Any]]:
    """The run's samples, rejected first, then failed, pending, accepted (list columns)."""
    return store.rows(
        f"SELECT {_LIST_COLUMNS} FROM samples s WHERE run_id = ? "
        "ORDER BY CASE status WHEN 'rejected' THEN 0 WHEN 'failed' THEN 1 "
        "WHEN 'pending' THEN 2 ELSE 3 END, sample_id LIMIT ?",
        [run_id, limit],
    )


def _marks(ids: list[str]) -> str:
    return ", ".join("?" for _ in ids)


def failed_checks(store: Store, sample_ids: list[str]) -> list[dict[str, Any]]:
    """sample_id, stage, check_name, n, last_attempt of every failed check of these samples."""
    if not sample_ids:
        return []
    return store.rows(
        "SELECT sample_id, stage, check_name, count(*) AS n, max(attempt) AS last_attempt "
        f"FROM critiques WHERE sample_id IN ({_marks(sample_ids)}) AND NOT passed "
        "GROUP BY ALL ORDER BY sample_id, stage, check_name",
        sample_ids,
    )


def judgment_scores(store: Store, sample_ids: list[str]) -> list[dict[str, Any]]:
    """sample_id, rubric, judge_spec, status, scores_json of these samples' judgments."""
    if not sample_ids:
        return []
    return store.rows(
        "SELECT sample_id, rubric, judge_spec, status, scores_json FROM judgments "
        f"WHERE sample_id IN ({_marks(sample_ids)}) ORDER BY sample_id, rubric",
        sample_ids,
    )


# --------------------------------------------------------------------------- one sample
def sample_exists(store: Store, sample_id: str) -> bool:
    return bool(store.scalar("SELECT count(*) FROM samples WHERE sample_id = ?", [sample_id]))


def image_path(store: Store, sample_id: str) -> str | None:
    """The image file the store names for this sample."""
    return store.scalar("SELECT image_path FROM samples WHERE sample_id = ?", [sample_id])


def call_details(store: Store, sample_id: str) -> list[dict[str, Any]]:
    """What the sample page adds to each of the sample's calls: messages, params, endpoint,
    schema, image mode, parse attempts."""
    return store.rows(
        "SELECT call_id, messages_json, params_json, endpoint, schema_name, image_mode, "
        "parse_attempts FROM llm_calls WHERE call_id IN "
        "(SELECT call_id FROM llm_calls WHERE sample_id = ? "
        "UNION SELECT call_id FROM stage_outputs WHERE sample_id = ?)",
        [sample_id, sample_id],
    )


def explanations(store: Store, sample_id: str) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT rule_variant, question, verdict, expected_verdict, explanation FROM explanations "
        "WHERE sample_id = ? ORDER BY rule_variant",
        [sample_id],
    )


def qa_items(store: Store, sample_id: str) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT rule_variant, qa_type, question, options_json, answer, position FROM qa_items "
        "WHERE sample_id = ? ORDER BY position",
        [sample_id],
    )


def judgments(store: Store, sample_id: str) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT run_id, judge_spec, rubric, rule_variant, repeat_index, swapped, status, "
        "scores_json, rationale FROM judgments WHERE sample_id = ? "
        "ORDER BY rubric, rule_variant, repeat_index",
        [sample_id],
    )


# --------------------------------------------------------------------------- reports
def judge_groups(store: Store) -> list[dict[str, Any]]:
    """Judgments grouped by judge run, judge and rubric: counts, unscored, first time."""
    return store.rows(
        "SELECT j.run_id, r.name, j.judge_spec, j.rubric, count(*) AS judgments, "
        "count(DISTINCT j.item_id) AS n_items, count(*) FILTER (WHERE j.status <> 'scored' "
        "AND j.status <> 'ok') AS unscored, min(j.created_at) AS created_at "
        "FROM judgments j LEFT JOIN runs r USING (run_id) GROUP BY ALL ORDER BY created_at"
    )


def judge_means(store: Store) -> list[dict[str, Any]]:
    """Mean numeric score per (judge run, judge, rubric, criterion) over scored judgments."""
    return store.rows(
        "SELECT j.run_id, j.judge_spec, j.rubric, e.key AS criterion, "
        "avg(TRY_CAST(e.value AS DOUBLE)) AS mean, count(TRY_CAST(e.value AS DOUBLE)) AS n "
        "FROM judgments j, json_each(j.scores_json) e "
        "WHERE j.status IN ('scored', 'ok') AND json_valid(j.scores_json) "
        "AND json_type(j.scores_json) = 'OBJECT' GROUP BY ALL ORDER BY criterion"
    )


def calibrations(store: Store) -> list[dict[str, Any]]:
    """Every calibration row, newest first."""
    return store.rows("SELECT * FROM calibrations ORDER BY created_at DESC")


def finetune_runs(store: Store) -> list[dict[str, Any]]:
    """Every fine-tune row with its number of loss points, newest first."""
    return store.rows(
        "SELECT f.*, (SELECT count(*) FROM finetune_metrics m WHERE m.finetune_id = "
        "f.finetune_id) AS points FROM finetune_runs f ORDER BY started_at DESC"
    )


def loss_points(store: Store, finetune_id: str) -> list[dict[str, Any]]:
    """split, step, loss of a fine-tune's finite losses, by split and step."""
    return store.rows(
        "SELECT split, step, loss FROM finetune_metrics WHERE finetune_id = ? AND loss IS NOT "
        "NULL AND isfinite(loss) ORDER BY split, step",
        [finetune_id],
    )
