"""Merge stores: bring the shards of a run (``--shard i/n``, one ``--db`` each) into one store.

Shards of one run share its run id (the shard is not part of a run's identity) and each
registers every sample of the manifest as ``pending`` but generates only its own slice. Merging
therefore decides per sample which store holds its result: a source's sample replaces the
target's when the target lacks it, has it only ``pending`` while the source finished it
(accepted, rejected or failed), or finished it earlier than the source did (a
``--retry-failed`` rerun's result replaces the failure it retried). Everything recorded about
a sample (stage outputs, explanations, Q-A items, critiques, model calls) moves with it, so a
merged sample never mixes rows from two stores. Rows keyed by their own content (images,
policies, cache entries, perception evidence, judgments, fine-tune runs, predictions) are added
when absent.

Each source is attached read-only and merged in one transaction: a failure leaves the target as
it was. Merging the same source twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from data.store.schema import LATEST_VERSION
from data.store.store import Store, StoreError

#: tables whose rows belong to one generated sample (their ``sample_id`` column says which)
SAMPLE_TABLES: tuple[str, ...] = (
    "stage_outputs",
    "explanations",
    "qa_items",
    "critiques",
    "llm_calls",
)
#: tables merged by adding the rows whose key the target lacks
KEYED_TABLES: tuple[str, ...] = (
    "policies",
    "images",
    "llm_cache",
    "perception_cache",
    "judgments",
    "calibrations",
    "finetune_runs",
    "finetune_metrics",
    "predictions",
)
_FINISHED = ("accepted", "rejected", "failed")


@dataclass
class SourceReport:
    """What one source contributed."""

    path: str
    samples_taken: int = 0
    samples_kept: int = 0
    """Samples the source has that the target already had finished (left as they were)."""
    rows_added: dict[str, int] = field(default_factory=dict)


class MergeError(StoreError):
    """A source cannot be merged (missing, locked, not a store, another schema version)."""


def merge_store(target: Store, source: str | Path) -> SourceReport:
    """Merge one source file into ``target`` (see the module docstring)."""
    path = Path(source)
    if not path.exists():
        raise MergeError(f"{path}: no such database file")
    if target.path is not None and path.resolve() == Path(target.path).resolve():
        raise MergeError(f"{path}: is the target store itself")
    _attach(target, path)
    try:
        _check_version(target, path)
        report = SourceReport(str(path))
        with target.transaction():
            _merge_samples(target, report)
            for table in KEYED_TABLES:
                report.rows_added[table] = _insert_missing(target, table)
            calls = _insert_missing(target, "llm_calls", "sample_id IS NULL")
            report.rows_added["llm_calls"] = report.rows_added.get("llm_calls", 0) + calls
            report.rows_added["runs"] = _merge_runs(target)
        return report
    finally:
        target.execute("DETACH src")


def merge_stores(target: Store, sources: Sequence[str | Path]) -> list[SourceReport]:
    """Merge each source in turn; the first failure stops the merge (earlier ones are kept)."""
    return [merge_store(target, source) for source in sources]


# --------------------------------------------------------------------------- steps
def _attach(target: Store, path: Path) -> None:
    try:
        target.execute(f"ATTACH '{_quoted(path)}' AS src (READ_ONLY)")
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise MergeError(
                f"{path}: held by another process (is that shard still running?): {exc}"
            ) from exc
        raise MergeError(f"{path}: cannot open as a DuckDB store: {exc}") from exc
    except duckdb.Error as exc:
        raise MergeError(f"{path}: cannot open as a DuckDB store: {exc}") from exc


def _check_version(target: Store, path: Path) -> None:
    try:
        version = target.scalar("SELECT max(version) FROM src.schema_migrations")
    except duckdb.CatalogException as exc:
        raise MergeError(f"{path}: not an icm store (no schema_migrations table)") from exc
    if version != LATEST_VERSION:
        raise MergeError(
            f"{path}: schema version {version}, this code writes {LATEST_VERSION}; open it once "
            "with this version of icm (it migrates) or merge with the version that wrote it"
        )


def _merge_samples(target: Store, report: SourceReport) -> None:
    finished = ", ".join(f"'{s}'" for s in _FINISHED)
    target.execute("DROP TABLE IF EXISTS temp.merge_winners")
    target.execute(
        "CREATE TEMP TABLE merge_winners AS "
        "SELECT s.sample_id FROM src.samples s LEFT JOIN main.samples t USING (sample_id) "
        f"WHERE t.sample_id IS NULL OR (s.status IN ({finished}) "
        f"AND (t.status NOT IN ({finished}) OR s.updated_at > t.updated_at))"
    )
    winners = "SELECT sample_id FROM temp.merge_winners"
    report.samples_taken = int(
        target.scalar(
            f"SELECT count(*) FROM src.samples WHERE sample_id IN ({winners}) "
            f"AND status IN ({finished})"
        )
    )
    report.samples_kept = int(
        target.scalar(
            f"SELECT count(*) FROM src.samples s JOIN main.samples t USING (sample_id) "
            f"WHERE s.status IN ({finished}) AND t.status IN ({finished}) "
            f"AND s.sample_id NOT IN ({winners})"
        )
    )
    for table in (*SAMPLE_TABLES, "samples"):
        target.execute(f"DELETE FROM main.{table} WHERE sample_id IN ({winners})")
        count = target.scalar(f"SELECT count(*) FROM src.{table} WHERE sample_id IN ({winners})")
        target.execute(
            f"INSERT INTO main.{table} BY NAME "
            f"SELECT * FROM src.{table} WHERE sample_id IN ({winners})"
        )
        report.rows_added[table] = int(count)
    target.execute("DROP TABLE temp.merge_winners")


def _insert_missing(target: Store, table: str, where: str = "TRUE") -> int:
    before = target.scalar(f"SELECT count(*) FROM main.{table}")
    target.execute(
        f"INSERT OR IGNORE INTO main.{table} BY NAME SELECT * FROM src.{table} WHERE {where}"
    )
    return int(target.scalar(f"SELECT count(*) FROM main.{table}") - before)


def _merge_runs(target: Store) -> int:
    """Add unknown runs; a merged generation run is ``finished`` once none of its samples is
    pending, and its finish time is the latest of its shards'."""
    added = _insert_missing(target, "runs")
    target.execute(
        "UPDATE main.runs AS r SET finished_at = greatest(r.finished_at, s.finished_at) "
        "FROM src.runs AS s WHERE r.run_id = s.run_id"
    )
    target.execute(
        "UPDATE main.runs SET status = 'finished' WHERE run_id IN (SELECT run_id FROM src.runs) "
        "AND run_id IN (SELECT DISTINCT run_id FROM main.samples) "
        "AND NOT EXISTS (SELECT 1 FROM main.samples m "
        "WHERE m.run_id = main.runs.run_id AND m.status = 'pending')"
    )
    return added


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
