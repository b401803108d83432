"""The fine-tune's rows in the store: its ``finetune_runs`` / ``runs`` record and loss curve.

All of the fine-tune's store access is here, through the store's record functions
(``data.store.records``: one ``register_run``/``finish_run`` for every kind of run). Only the
main process writes.
"""

from __future__ import annotations

import logging
from typing import Any

from data.store import Store, records, to_json, utcnow

log = logging.getLogger(__name__)


class RunRecord:
    """One fine-tune's record: opened at the start, the curve flushed as it grows, closed."""

    def __init__(self, db: str, finetune_id: str, *, enabled: bool = True) -> None:
        self.db = db
        self.finetune_id = finetune_id
        self.enabled = enabled
        self._flushed = 0

    def _store(self) -> Store:
        return Store.open(self.db)

    def start(self, row: dict[str, Any], record: dict[str, Any], versions: dict[str, Any]) -> None:
        """``row``: name, base_model, family, mode, source_runs, output_dir; ``record``: what
        goes to ``config_json`` (config, data summary, total steps, parent, versions)."""
        if not self.enabled:
            return
        with self._store() as store:
            records.record_finetune_start(
                store,
                {**row, "finetune_id": self.finetune_id, "config_json": to_json(record),
                 "status": "running", "started_at": utcnow()},
            )  # fmt: skip
            records.register_run(
                store,
                records.RunRecord(
                    run_id=self.finetune_id,
                    name=row["name"],
                    kind="finetune",
                    config=record,
                    package_versions=versions,
                ),
                on_conflict="replace",
            )

    def _flush(self, store: Store, history: list[dict[str, Any]]) -> None:
        rows = [
            {**row, "finetune_id": self.finetune_id, "created_at": utcnow()}
            for row in history[self._flushed :]
        ]
        if rows:
            records.record_finetune_metrics(store, rows)
        self._flushed = len(history)

    def flush(self, history: list[dict[str, Any]]) -> None:
        """The curve rows not written yet (``finetune_metrics``, one per step and split)."""
        if not self.enabled:
            return
        with self._store() as store:
            self._flush(store, history)

    def finish(self, history: list[dict[str, Any]], metrics: dict[str, Any], status: str) -> None:
        if not self.enabled:
            return
        with self._store() as store:
            self._flush(store, history)
            records.finish_finetune(store, self.finetune_id, status, metrics)

    def fail(self, history: list[dict[str, Any]], exc: BaseException) -> None:
        """Marks the run failed, keeping the curve so far; never masks the original error."""
        if not self.enabled:
            return
        try:
            self.finish(history, {"error": f"{type(exc).__name__}: {exc}"}, "failed")
        except Exception as inner:  # the original error matters more
            log.warning("could not record the failure in the store: %s", inner)
