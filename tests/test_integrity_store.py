"""Issue 23 (A), the store side: a store that cannot be written stops the run at once (no
further model calls, one line naming the file and the cause, exit 2, resumable), and a sample
whose rows the store refuses fails alone instead of taking its flush batch with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from test_generate import _accepted, assert_complete_without_duplicates, make_manifest, run_pipeline

import graphs.runner as runner_module
from data.policy import load_policy
from data.store import Store, StoreWriteError, records, utcnow
from data.store.batch import BatchWriter

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = list(load_policy("icm_sexy").categories)


class TimedResponder:
    """The ICM responder, noting when each request arrived."""

    def __init__(self) -> None:
        self.inner = ICMResponder()
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Any:
        with self._lock:
            self.arrivals.append(time.monotonic())
        return self.inner(body)


# ----------------------------------------------------------------------- one sample's rows
def _sample(store: Store, sample_id: str) -> None:
    now = utcnow()
    store.insert(
        "samples",
        [{"sample_id": sample_id, "run_id": "r", "policy_name": "icm_sexy", "status": "pending",
          "created_at": now, "updated_at": now}],
    )  # fmt: skip


def _outcome(writer: BatchWriter, sample_id: str) -> None:
    now = utcnow()
    records.queue_sample_outcome(
        writer,
        {"sample_id": sample_id, "status": "accepted", "updated_at": now},
        [{"sample_id": sample_id, "rule_variant": "R1", "run_id": "r", "explanation": "x",
          "created_at": now}],
    )  # fmt: skip


def test_a_sample_whose_rows_the_store_refuses_fails_alone(tmp_path: Path) -> None:
    """Sample ``a`` queues the same explanation twice in one flush (what two identical
    manifest rows did): its rows are refused, ``b``'s, queued in the same batch, are kept."""
    with Store.open(tmp_path / "s.duckdb") as store:
        _sample(store, "a")
        _sample(store, "b")
        writer = BatchWriter(
            store, on_sample_error=lambda sid, why: records.record_write_failure(store, sid, why)
        )
        _outcome(writer, "a")
        _outcome(writer, "b")
        writer.add("explanations", [{"sample_id": "a", "rule_variant": "R1", "run_id": "r",
                                     "created_at": utcnow()}])  # fmt: skip
        writer.flush()
        samples = {r["sample_id"]: r for r in store.rows("SELECT * FROM samples")}
        explained = store.rows("SELECT sample_id FROM explanations")
    assert samples["b"]["status"] == "accepted" and explained == [{"sample_id": "b"}]
    assert samples["a"]["status"] == "failed"
    [reason] = json.loads(samples["a"]["reasons_json"])
    assert reason.startswith("store write failed: ") and "a, R1" in reason


# ----------------------------------------------------------------------- the store fails
class FailingStore:
    """Makes the store's writes raise DuckDB's IOException from the ``after``-th update of a
    sample on (a disk that filled up), noting when the first one failed."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.updates = 0
        self.failed_at: float | None = None

    @contextlib.contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[FailingStore]:
        original = Store.update_by_key

        def update_by_key(store: Store, table: str, key: str, rows: Any) -> None:
            if table == "samples":
                self.updates += 1
                if self.updates >= self.after:
                    if self.failed_at is None:
                        self.failed_at = time.monotonic()
                    raise duckdb.IOException(
                        f'Could not write file "{store.path}": No space left on device'
                    )
            original(store, table, key, rows)

        monkeypatch.setattr(Store, "update_by_key", update_by_key)
        yield self
        monkeypatch.setattr(Store, "update_by_key", original)


def test_a_store_that_cannot_be_written_stops_the_run_at_once(tmp_path, monkeypatch) -> None:
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:24])
    db = tmp_path / "icm.duckdb"
    responder = TimedResponder()
    # several flushes while the samples run (the default interval outlasts this fast fake run)
    interval = 0.25
    monkeypatch.setattr(runner_module, "FLUSH_INTERVAL_S", interval)
    # 50 ms a call: the run lasts several flush intervals however little CPU a sample takes
    # (without it, a run that needed under two intervals never met the failing store)
    with FakeOpenAIServer(responder=responder, latency_s=0.05) as server:
        failing_store = FailingStore(after=2).installed(monkeypatch)
        with failing_store as failing, pytest.raises(StoreWriteError) as info:
            run_pipeline(manifest, db, server, concurrency=4)
        message = str(info.value)
        assert "\n" not in message and str(db) in message
        assert "No space left on device" in message and "rerun the same command" in message
        assert failing.failed_at is not None
        # no model call after one flush interval from the failure (the calls in flight then
        # were already sent); before, the run went on calling for every sample
        late = [t for t in responder.arrivals if t > failing.failed_at + interval]
        assert late == []
        with Store.open(db, read_only=True) as store:
            done = store.scalar("SELECT count(*) FROM samples WHERE status = 'accepted'")
            assert store.scalar("SELECT status FROM runs") == "interrupted"
        assert 0 < done < 24
        # the store works again: the same command resumes to every sample
        summary = run_pipeline(manifest, db, server, concurrency=4)
    assert summary.counts["accepted"] == 24 and summary.skipped == done
    assert_complete_without_duplicates(db, 24)


# ----------------------------------------------------------------------- a real full disk
@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the simulated failure test covers the logic)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _generate(manifest: Path, db: Path, url: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, str(REPO / "graphs" / "generate.py"), str(manifest), "--db", str(db),
        "--rules", "R1,R2", "--role", f"all=openai-compatible:{url}#fake-model",
        "--role-setting", "all.jitter=false", "--role-setting", "all.backoff_base_s=0",
        "--no-perception", "--concurrency", "4", "--run", "full",
    ]  # fmt: skip
    # commits every 0.3 s: the fake server answers the whole manifest within the default 2 s
    env = {**os.environ, "COLUMNS": "4000", "ICM_FLUSH_INTERVAL_S": "0.3"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_disk_full_on_a_small_tmpfs_stops_and_resumes(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "in", CATEGORIES)  # every category: 35 samples
    responder = TimedResponder()
    with FakeOpenAIServer(responder=responder) as server:
        reference = tmp_path / "ref.duckdb"
        assert _generate(manifest, reference, server.base_url).returncode == 0
        full_run = len(responder.arrivals)
        # a fresh mount point per run: a concurrent test run never shares it
        with small_tmpfs(tmp_path / f"full-{uuid.uuid4().hex[:6]}", "3m") as disk:
            db = disk / "icm.duckdb"
            before = len(responder.arrivals)
            # calls that take a while, as real ones do: the run spans many flush intervals, so
            # what is measured is where the disk filled, not how fast this machine is
            server.latency_s = 0.05
            stopped = _generate(manifest, db, server.base_url)
            server.latency_s = 0.0
            asked = len(responder.arrivals) - before
            assert stopped.returncode == 2, stopped.stderr[-3000:]
            [error] = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
            assert error.startswith(f"error: cannot write the store {db}: ")
            assert "No space left on device" in error
            assert "Traceback" not in stopped.stderr
            assert asked < full_run * 3 / 4  # stopped early (measured 92 of 210), not at the end
            # free space, rerun: the run resumes to the same accepted set
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            resumed = _generate(manifest, db, server.base_url)
            assert resumed.returncode == 0, resumed.stderr[-3000:]
            assert _accepted(db) == _accepted(reference)
            assert_complete_without_duplicates(db, len(CATEGORIES))


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf"])
def test_a_bad_flush_interval_is_named(value, monkeypatch) -> None:
    monkeypatch.setenv("ICM_FLUSH_INTERVAL_S", value)
    with pytest.raises(ValueError, match="ICM_FLUSH_INTERVAL_S"):
        runner_module.flush_interval()


def test_the_flush_interval_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("ICM_FLUSH_INTERVAL_S", raising=False)
    assert runner_module.flush_interval() == runner_module.FLUSH_INTERVAL_S
    monkeypatch.setenv("ICM_FLUSH_INTERVAL_S", "0.3")
    assert runner_module.flush_interval() == 0.3
