"""Typed writes: every row a command adds to the store goes through one function here.

One :func:`register_run` / :func:`finish_run` pair serves every kind of run (generate, judge,
calibrate, pairwise, finetune, moderate), so a ``runs`` row means the same thing whoever wrote
it. The other functions write one kind of record each (policies, samples, a sample's outcome,
stage outputs, critiques, calls, judgments, calibrations, fine-tune progress, predictions,
perception evidence): callers hand over rows, and which table they land in, how a re-run's row
replaces an earlier one and what commits together is decided here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from data.policy_models import Policy
from data.store.batch import RowQueue
from data.store.store import OnConflict, Store, to_json, utcnow


def _command_line() -> str:
    return " ".join(sys.argv)


@dataclass(frozen=True)
class RunRecord:
    """One ``runs`` row: what ran, how it was configured, and with which code and models.

    ``config``, ``role_bindings``, ``prompt_hashes`` and ``package_versions`` are stored as
    canonical JSON; None leaves the column NULL.
    """

    run_id: str
    name: str
    kind: str
    """``generate``, ``judge``, ``calibrate``, ``pairwise``, ``finetune`` or ``moderate``."""
    config: Mapping[str, Any] | None = None
    status: str = "running"
    command: str = field(default_factory=_command_line)
    role_bindings: Mapping[str, Any] | None = None
    policy_name: str | None = None
    policy_sha256: str | None = None
    rule_variants: str | None = None
    prompt_hashes: Mapping[str, Any] | None = None
    git_revision: str | None = None
    package_versions: Mapping[str, Any] | None = None
    created_at: datetime | None = None
    """None: now."""
    finished_at: datetime | None = None

    def row(self) -> dict[str, Any]:
        def js(value: Mapping[str, Any] | None) -> str | None:
            return None if value is None else to_json(value)

        return {
            "run_id": self.run_id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "created_at": self.created_at or utcnow(),
            "finished_at": self.finished_at,
            "command": self.command,
            "config_json": js(self.config),
            "role_bindings_json": js(self.role_bindings),
            "policy_name": self.policy_name,
            "policy_sha256": self.policy_sha256,
            "rule_variants": self.rule_variants,
            "prompt_hashes_json": js(self.prompt_hashes),
            "git_revision": self.git_revision,
            "package_versions_json": js(self.package_versions),
        }


# --------------------------------------------------------------------------- runs
def register_run(store: Store, record: RunRecord, *, on_conflict: OnConflict = "error") -> None:
    """Insert the run's row (``replace``: a re-run of the same id overwrites it)."""
    store.insert("runs", [record.row()], on_conflict=on_conflict)


def finish_run(store: Store, run_id: str, status: str = "finished") -> None:
    """Set the run's final status (``finished``, ``failed`` ...) and its finish time."""
    store.execute(
        "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, utcnow(), run_id]
    )


def interrupt_run(store: Store, run_id: str) -> None:
    """Mark a run that is still ``running`` as ``interrupted`` (no finish time: it did not
    finish, and a re-run resumes it); a run that already ended is left alone."""
    store.execute(
        "UPDATE runs SET status = 'interrupted' WHERE run_id = ? AND status = 'running'", [run_id]
    )


def reopen_run(store: Store, run_id: str) -> None:
    """Mark an existing run as running again (a resumed generation)."""
    store.execute(
        "UPDATE runs SET status = 'running', finished_at = NULL WHERE run_id = ?", [run_id]
    )


def set_run_config(store: Store, run_id: str, config: Mapping[str, Any]) -> None:
    """Replace the run's stored configuration (a judge run adds its report to it)."""
    store.execute("UPDATE runs SET config_json = ? WHERE run_id = ?", [to_json(config), run_id])


def record_policies(store: Store, policies: Iterable[Policy]) -> None:
    """Keep each policy file used, by content hash (already stored ones are kept)."""
    store.insert(
        "policies",
        [
            {
                "policy_sha256": p.sha256,
                "name": p.name,
                "path": str(p.path) if p.path else None,
                "content": p.path.read_text() if p.path else "",
                "loaded_at": utcnow(),
            }
            for p in policies
        ],
        on_conflict="ignore",
    )


# --------------------------------------------------------------------------- samples
def register_samples(
    store: Store, samples: Sequence[Mapping[str, Any]], images: Sequence[Mapping[str, Any]]
) -> None:
    """Write samples (``pending``) and their images in one transaction; existing rows stay."""
    with store.transaction():
        store.insert("samples", samples, on_conflict="ignore")
        store.insert("images", images, on_conflict="ignore")


def queue_sample_outcome(
    writer: RowQueue,
    outcome: Mapping[str, Any],
    explanations: Sequence[Mapping[str, Any]] = (),
    qa_items: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Queue a sample's final rows: its status and reasons (``outcome``, keyed by
    ``sample_id``), replacing any explanations and Q-A items an earlier attempt left."""
    sample_id = outcome["sample_id"]
    writer.delete("explanations", "sample_id", sample_id)
    writer.delete("qa_items", "sample_id", sample_id)
    writer.update("samples", "sample_id", outcome)
    writer.add("explanations", explanations)
    writer.add("qa_items", qa_items)


def record_write_failure(store: Store, sample_id: str, reason: str) -> None:
    """Mark a sample ``failed`` whose rows the store refused (``BatchWriter``'s
    ``on_sample_error``): a rerun then skips it, as any failed sample, instead of generating it
    again into the same refusal; ``--retry-failed`` redoes it."""
    with store.transaction():
        store.update_by_key(
            "samples",
            "sample_id",
            [
                {
                    "sample_id": sample_id,
                    "status": "failed",
                    "reasons_json": to_json([reason]),
                    "updated_at": utcnow(),
                }
            ],
        )


def queue_stage_output(writer: RowQueue, row: Mapping[str, Any]) -> None:
    """Queue one stage result (a re-run's row with the same ``output_id`` replaces it)."""
    writer.add("stage_outputs", [row], on_conflict="replace", key="output_id")


def queue_critiques(writer: RowQueue, rows: Sequence[Mapping[str, Any]]) -> None:
    """Queue the critic's checks of one attempt (same ``critique_id`` replaces)."""
    writer.add("critiques", rows, on_conflict="replace", key="critique_id")


def record_calls(
    store: Store, calls: Sequence[Mapping[str, Any]], cache_entries: Sequence[Mapping[str, Any]]
) -> None:
    """Model-call traces and new cache entries (rows already stored are kept)."""
    if cache_entries:
        store.insert("llm_cache", cache_entries, on_conflict="ignore")
    if calls:
        store.insert("llm_calls", calls, on_conflict="ignore")


def queue_calls(
    writer: RowQueue,
    calls: Sequence[Mapping[str, Any]],
    cache_entries: Sequence[Mapping[str, Any]],
) -> None:
    """Queue model-call traces and new cache entries that another process made (a Ray actor's,
    shipped with its sample): written as :func:`record_calls` writes them, at the next flush."""
    # keyed: two actors may ship the same new entry, and one insert must not hold a key twice
    writer.add("llm_cache", cache_entries, on_conflict="ignore", key="cache_key")
    writer.add("llm_calls", calls, on_conflict="ignore")


# --------------------------------------------------------------------------- judging
def record_judgments(store: Store, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert judgments (a re-judged item's row is replaced); returns how many."""
    return store.insert("judgments", rows, on_conflict="replace")


def record_calibration(store: Store, row: Mapping[str, Any]) -> None:
    store.insert("calibrations", [row], on_conflict="replace")


# --------------------------------------------------------------------------- fine-tuning
def record_finetune_start(store: Store, row: Mapping[str, Any]) -> None:
    """The ``finetune_runs`` row of a starting fine-tune (a restart replaces it)."""
    store.insert("finetune_runs", [row], on_conflict="replace")


def record_finetune_metrics(store: Store, rows: Sequence[Mapping[str, Any]]) -> None:
    store.insert("finetune_metrics", rows, on_conflict="replace")


def finish_finetune(
    store: Store, finetune_id: str, status: str, metrics: Mapping[str, Any]
) -> None:
    """The fine-tune's final status and metrics, on its ``finetune_runs`` and ``runs`` rows."""
    with store.transaction():
        store.execute(
            "UPDATE finetune_runs SET status = ?, metrics_json = ?, finished_at = ? "
            "WHERE finetune_id = ?",
            [status, to_json(metrics), utcnow(), finetune_id],
        )
        finish_run(store, finetune_id, status)


# --------------------------------------------------------------------------- moderation
def record_predictions(
    store: Store, run: RunRecord, predictions: Sequence[Mapping[str, Any]]
) -> None:
    """A moderation run's row and its predictions, in one transaction."""
    with store.transaction():
        register_run(store, run)
        store.insert("predictions", predictions)


# --------------------------------------------------------------------------- perception
def record_perception(store: Store, rows: Sequence[Mapping[str, Any]]) -> None:
    """Detector evidence by (image, tool, version); a fresh result replaces an unreadable one."""
    now = utcnow()
    store.insert(
        "perception_cache", [{**row, "created_at": now} for row in rows], on_conflict="replace"
    )
