"""The DuckDB store: migrations, batched round trips, and the one-writer rule."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from agents.models.cache import ResponseCache
from agents.models.trace import StoreWriter
from data.store import (
    LATEST_VERSION,
    MIGRATIONS,
    Store,
    StoreLockedError,
    StoreVersionError,
    utcnow,
)
from data.store.batch import BatchWriter
from graphs.commands.db import app as db_app

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_migrates_an_empty_file_to_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "icm.duckdb"
    with Store.open(path) as store:
        assert store.schema_version() == LATEST_VERSION
        tables = set(store.tables())
    expected = {
        "runs", "policies", "images", "samples", "stage_outputs", "explanations", "qa_items",
        "critiques", "llm_calls", "llm_cache", "perception_cache", "judgments", "calibrations",
        "finetune_runs", "finetune_metrics", "predictions", "schema_migrations",
    }  # fmt: skip
    assert expected <= tables
    # Re-opening applies nothing twice.
    with Store.open(path) as store:
        assert store.scalar("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)


def test_migrates_a_file_that_predates_the_ledger(tmp_path: Path) -> None:
    """A DuckDB file made by something else (no ledger) gets the schema added beside its tables."""
    path = tmp_path / "old.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE notes (x INTEGER)")
    conn.execute("INSERT INTO notes VALUES (7)")
    conn.close()
    with Store.open(path) as store:
        assert store.schema_version() == LATEST_VERSION
        assert store.scalar("SELECT x FROM notes") == 7


def test_refuses_a_file_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    with Store.open(path) as store:
        store.execute(
            "INSERT INTO schema_migrations VALUES (?, 'from the future', now())",
            [LATEST_VERSION + 1],
        )
    with pytest.raises(StoreVersionError, match="upgrade icm"):
        Store.open(path)


def _image_rows(n: int) -> pd.DataFrame:
    now = utcnow()
    return pd.DataFrame(
        {
            "image_sha256": [f"{i:064x}" for i in range(n)],
            "path": [f"img/{i}.jpg" for i in range(n)],
            "width": [640 + i for i in range(n)],
            "height": [480] * n,
            "format": ["JPEG"] * n,
            "size_bytes": [1000 * i for i in range(n)],
            "added_at": [now] * n,
        }
    )


def test_batched_round_trip_keeps_values_and_types(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as store:
        assert store.insert("images", _image_rows(5000)) == 5000
        rows = store.rows("SELECT * FROM images WHERE path = 'img/42.jpg'")
        assert rows[0]["width"] == 682
        assert rows[0]["size_bytes"] == 42000
        assert store.table_counts()["images"] == 5000


def test_insert_by_name_with_nulls_and_json(tmp_path: Path) -> None:
    now = utcnow()
    call = {
        "call_id": "c1",
        "provider": "openai",
        "model": "gpt-4o",
        "status": "ok",
        "started_at": now,
        "messages_json": json.dumps([{"role": "user", "content": "héllo"}]),
        "input_tokens": None,
    }
    with Store.open(tmp_path / "s.duckdb") as store:
        store.insert("llm_calls", [call])
        row = store.rows("SELECT * FROM llm_calls")[0]
    assert row["cache_hit"] is False  # column default applies to columns not given
    assert row["attempt"] == 1
    assert row["input_tokens"] is None
    assert json.loads(row["messages_json"])[0]["content"] == "héllo"


def test_on_conflict_modes(tmp_path: Path) -> None:
    now = utcnow()
    first = {"sample_id": "s1", "run_id": "r", "policy_name": "p", "status": "pending",
             "created_at": now, "updated_at": now}  # fmt: skip
    with Store.open(tmp_path / "s.duckdb") as store:
        store.insert("samples", [first])
        with pytest.raises(duckdb.ConstraintException):
            store.insert("samples", [first])
        store.insert("samples", [{**first, "status": "accepted"}], on_conflict="ignore")
        assert store.scalar("SELECT status FROM samples") == "pending"
        store.insert("samples", [{**first, "status": "accepted"}], on_conflict="replace")
        assert store.scalar("SELECT status FROM samples") == "accepted"
        assert store.scalar("SELECT count(*) FROM samples") == 1


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.insert("images", _image_rows(3))
            raise RuntimeError("crash mid-sample")
        assert store.table_counts()["images"] == 0
        with store.transaction():
            store.insert("images", _image_rows(3))
        assert store.table_counts()["images"] == 3


def test_rejects_a_table_name_that_is_not_an_identifier(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as store, pytest.raises(Exception, match="not a table"):
        store.insert('images"; DROP TABLE runs; --', _image_rows(1))


def test_second_process_gets_a_message_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                sys.path.insert(0, {str(REPO_ROOT)!r})
                from data.store import Store
                store = Store.open({str(path)!r})
                print("ready", flush=True)
                time.sleep(60)
                """
            ),
            "--holder-marker",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        for read_only in (False, True):
            with pytest.raises(StoreLockedError) as info:
                Store.open(path, read_only=read_only)
            err = info.value
            assert err.pid == holder.pid
            message = str(err)
            assert str(path) in message
            assert f"process {holder.pid}" in message
            assert "--holder-marker" in message  # the holder's command line is shown
            assert "Could not set lock" not in message
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the file opens normally and is intact.
    deadline = time.monotonic() + 10
    while True:
        try:
            with Store.open(path) as store:
                assert store.schema_version() == LATEST_VERSION
            break
        except StoreLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_db_info_command(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        store.insert("images", _image_rows(4))
    runner = CliRunner()
    result = runner.invoke(db_app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["schema_version"] == LATEST_VERSION
    assert report["tables"]["images"] == 4
    assert report["tables"]["runs"] == 0
    table = runner.invoke(db_app, ["info", str(path)])
    assert table.exit_code == 0
    assert "images" in table.output


def test_db_info_on_a_missing_file_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(db_app, ["info", str(tmp_path / "nope.duckdb")])
    assert result.exit_code == 1
    assert "no database at" in result.output
    assert not (tmp_path / "nope.duckdb").exists()


def test_open_waits_for_a_brief_holder(tmp_path: Path) -> None:
    """A writer that starts while another process reads for a moment waits instead of failing."""
    path = tmp_path / "brief.duckdb"
    Store.open(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                sys.path.insert(0, {str(REPO_ROOT)!r})
                from data.store import Store
                store = Store.open({str(path)!r}, read_only=True)
                print("ready", flush=True)
                time.sleep(1.0)
                store.close()
                time.sleep(30)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError):
            Store.open(path)  # no wait: fails at once
        started = time.monotonic()
        with Store.open(path, wait_s=20) as store:
            assert store.schema_version() == LATEST_VERSION
        assert time.monotonic() - started < 15
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- batched writer
def _sample_row(n: int, status: str = "pending") -> dict:
    now = datetime(2026, 1, 1)
    return {
        "sample_id": f"s{n}", "run_id": "r", "policy_name": "p", "status": status,
        "attempts": 0, "created_at": now, "updated_at": now,
    }  # fmt: skip


def test_batch_writer_orders_deletes_updates_inserts_in_one_commit(tmp_path: Path) -> None:
    with Store.open(tmp_path / "b.duckdb") as store:
        store.insert("samples", [_sample_row(n) for n in range(3)])
        writer = BatchWriter(store)
        writer.update("samples", "sample_id", {"sample_id": "s0", "status": "rejected"})
        writer.update("samples", "sample_id", {"sample_id": "s0", "status": "accepted"})  # wins
        writer.update("samples", "sample_id", {"sample_id": "s1", "status": "failed",
                                               "reasons_json": '["boom"]'})  # fmt: skip
        writer.update("samples", "sample_id", {"sample_id": "nope", "status": "failed"})
        writer.delete("samples", "sample_id", "s2")
        writer.add("samples", [_sample_row(2, "accepted")])  # re-inserted after the delete
        assert writer.pending == 5  # s0's second update replaced its first
        assert store.scalar("SELECT count(*) FROM samples WHERE status = 'pending'") == 3
        assert writer.flush() == 5 and writer.pending == 0
        rows = {r["sample_id"]: r for r in store.rows("SELECT * FROM samples")}
        assert {k: r["status"] for k, r in rows.items()} == {
            "s0": "accepted", "s1": "failed", "s2": "accepted"
        }  # fmt: skip
        assert rows["s1"]["reasons_json"] == '["boom"]' and rows["s0"]["reasons_json"] is None
        assert writer.flush() == 0


def test_batch_writer_keyed_rows_replace_earlier_ones_in_queue_order(tmp_path: Path) -> None:
    with Store.open(tmp_path / "b.duckdb") as store:
        writer = BatchWriter(store)
        for n in range(2000):  # queueing stays O(1) per row
            writer.add("samples", [_sample_row(n % 500)], on_conflict="replace", key="sample_id")
        writer.add("samples", [_sample_row(7, "accepted")], on_conflict="replace", key="sample_id")
        assert writer.pending == 500
        writer.flush()
        assert store.scalar("SELECT count(*) FROM samples") == 500
        assert store.scalar("SELECT status FROM samples WHERE sample_id = 's7'") == "accepted"


def test_a_failed_flush_rolls_back_everything(tmp_path: Path) -> None:
    with Store.open(tmp_path / "b.duckdb") as store:
        writer = BatchWriter(store)
        writer.add("samples", [_sample_row(1)])
        writer.add("samples", [_sample_row(1)])  # duplicate key: the insert fails
        writer.delete("samples", "sample_id", "s9")
        with pytest.raises(Exception, match=r"(?i)duplicate|constraint"):
            writer.flush()
        assert store.scalar("SELECT count(*) FROM samples") == 0


def _call_row(call_id: str, sample_id: str) -> dict:
    return {
        "call_id": call_id,
        "sample_id": sample_id,
        "provider": "offline",
        "model": "m",
        "status": "ok",
        "started_at": utcnow(),
    }


def test_a_samples_rows_and_its_calls_commit_in_one_transaction(tmp_path: Path) -> None:
    """The model layer's trace buffer attached to the run's writer: one flush commits the
    stage output and the call it came from together, and a failure keeps neither (the traces
    are queued again for the next flush)."""
    with Store.open(tmp_path / "t.duckdb") as store:
        writer = BatchWriter(store)
        traces = StoreWriter(store, ResponseCache(store), set(), batch_size=None)
        writer.attach(traces)
        writer.add("samples", [_sample_row(1)])
        traces.add(_call_row("c1", "s1"))
        assert writer.flush() == 2
        assert store.scalar("SELECT count(*) FROM llm_calls") == 1
        assert writer.flush() == 0  # nothing queued on either side

        writer.add("samples", [_sample_row(1)])  # duplicate key: this flush fails
        traces.add(_call_row("c2", "s1"))
        with pytest.raises(Exception, match=r"(?i)duplicate|constraint"):
            writer.flush()
        assert store.scalar("SELECT count(*) FROM llm_calls") == 1
        assert traces.pending == 1  # restored, not lost
        writer.add("samples", [_sample_row(2)])
        assert writer.flush() == 2
        ids = [r["call_id"] for r in store.rows("SELECT call_id FROM llm_calls ORDER BY 1")]
        assert ids == ["c1", "c2"]


def test_batches_go_in_as_arrow_and_odd_columns_still_land(tmp_path: Path) -> None:
    """Rows become an Arrow table (a key missing from a row is NULL there); a column Arrow
    cannot type falls back to pandas and still lands."""
    import pyarrow as pa

    from data.store.store import batch_frame

    rows = [{"a": 1, "b": None}, {"a": 2, "c": "x"}]
    frame = batch_frame(rows)
    assert isinstance(frame, pa.Table)
    assert frame.to_pylist() == [{"a": 1, "b": None, "c": None}, {"a": 2, "b": None, "c": "x"}]
    mixed = batch_frame([{"a": 1}, {"a": "one"}])
    assert not isinstance(mixed, pa.Table) and list(mixed["a"]) == [1, "one"]
    with Store.open(tmp_path / "s.duckdb") as store:
        store.execute("CREATE TABLE t (a INTEGER, b VARCHAR, c VARCHAR)")
        assert store.insert("t", rows) == 2
        assert store.rows("SELECT * FROM t ORDER BY a") == [
            {"a": 1, "b": None, "c": None},
            {"a": 2, "b": None, "c": "x"},
        ]
