"""Reads for ``icm dataset``, the dataset card and the rule-contrast pass rate: what a set of
generation runs holds, as plain rows.

A dataset may be assembled from several runs, so every read takes a list of run ids. Each
function is one query; the counting and shaping happen in :mod:`evaluators.coverage`,
:mod:`evaluators.near_duplicates` and :mod:`evaluators.rule_contrast`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from data.store.store import Store


def accepted_explanations(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """(run_id, sample_id, policy_name, category, rule_variant, verdict, expected_verdict,
    explanation) of every accepted sample's final explanations, by sample and rule."""
    return store.rows(
        "SELECT s.run_id, e.sample_id, s.policy_name, s.category, e.rule_variant, e.verdict, "
        "e.expected_verdict, e.explanation FROM explanations e JOIN samples s USING (sample_id) "
        "WHERE s.run_id IN (SELECT unnest(?)) AND s.status = 'accepted' "
        "ORDER BY s.run_id, e.sample_id, e.rule_variant",
        [list(run_ids)],
    )


def sample_endings(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """(run_id, sample_id, policy_name, category, rule_variants, status, reasons_json) of every
    sample."""
    return store.rows(
        "SELECT run_id, sample_id, policy_name, category, rule_variants, status, reasons_json "
        "FROM samples "
        "WHERE run_id IN (SELECT unnest(?)) ORDER BY run_id, created_at, sample_id",
        [list(run_ids)],
    )


def final_failed_checks(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """(sample_id, stage, check_name) of the checks that failed in the last critic pass of each
    rejected sample: why it ended rejected (earlier passes' failures were fixed by a retry)."""
    return store.rows(
        "WITH last AS (SELECT c.sample_id, max(c.attempt) AS attempt FROM critiques c "
        "JOIN samples s USING (sample_id) WHERE s.run_id IN (SELECT unnest(?)) "
        "AND s.status = 'rejected' GROUP BY c.sample_id) "
        "SELECT DISTINCT c.sample_id, c.stage, c.check_name FROM critiques c "
        "JOIN last USING (sample_id) WHERE c.attempt = last.attempt AND NOT c.passed "
        "ORDER BY c.sample_id, c.stage, c.check_name",
        [list(run_ids)],
    )


def accepted_texts(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """(sample_id, kind, key, text) of the accepted samples' texts: ``description`` (key
    ''), ``explanation`` (key: the rule variant) and ``qa`` (key: the item's position), for
    near-duplicate search."""
    return store.rows(
        "SELECT sample_id, 'description' AS kind, '' AS key, description AS text FROM samples "
        "WHERE run_id IN (SELECT unnest(?)) AND status = 'accepted' AND description IS NOT NULL "
        "UNION ALL "
        "SELECT e.sample_id, 'explanation', e.rule_variant, e.explanation FROM explanations e "
        "JOIN samples s USING (sample_id) WHERE s.run_id IN (SELECT unnest(?)) "
        "AND s.status = 'accepted' AND e.explanation IS NOT NULL "
        "UNION ALL "
        "SELECT q.sample_id, 'qa', CAST(q.position AS VARCHAR), q.question || ' ' || q.answer "
        "FROM qa_items q JOIN samples s USING (sample_id) WHERE s.run_id IN (SELECT unnest(?)) "
        "AND s.status = 'accepted' ORDER BY 1, 2, 3",
        [list(run_ids)] * 3,
    )


def policy_texts(store: Store, names: Sequence[str]) -> dict[str, str]:
    """policy name -> the newest stored text of that policy file (the one the run used)."""
    rows = store.rows(
        "SELECT name, content FROM policies WHERE name IN (SELECT unnest(?)) ORDER BY loaded_at",
        [list(names)],
    )
    return {r["name"]: r["content"] for r in rows}


def checks_run(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """(stage, check_name, source, passed, failed) over the runs' critic passes: which checks
    ran and how often each failed."""
    return store.rows(
        "SELECT stage, check_name, source, count(*) FILTER (WHERE passed) AS passed, "
        "count(*) FILTER (WHERE NOT passed) AS failed FROM critiques "
        "WHERE run_id IN (SELECT unnest(?)) GROUP BY stage, check_name, source "
        "ORDER BY stage, check_name, source",
        [list(run_ids)],
    )


def run_sources(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """(image_path, source, n) of the runs' samples: where the images came from."""
    return store.rows(
        "SELECT image_path, source, count(*) AS n FROM samples "
        "WHERE run_id IN (SELECT unnest(?)) GROUP BY image_path, source ORDER BY image_path",
        [list(run_ids)],
    )
