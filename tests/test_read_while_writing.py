"""Read commands are never blocked by a writer (issue 16).

While ``icm generate`` holds the store (DuckDB: one process per file), ``icm runs``, ``traces``
and ``export`` read the snapshot the run publishes and say on stderr that the data is as of
the snapshot's time. Everything here synchronises on events (the fake server holding requests,
a committed row appearing in the snapshot, a child saying READY), never on sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import GatedResponder, ICMResponder
from test_generate import _generate_cmd, finished_in_snapshot, make_manifest, wait_for

from data.store import Store
from data.store.reading import NoSnapshotError, open_for_reading
from data.store.snapshot import open_snapshot, snapshot_path

REPO = Path(__file__).resolve().parents[1]

#: a process that holds a store the way a generation run does: opens it for writing, says READY,
#: publishes a snapshot when told, and exits when its stdin closes
HOLDER = """
import sys
from data.store import Store
from data.store.snapshot import publish_snapshot
store = Store.open(sys.argv[1])
store.execute("CREATE TABLE IF NOT EXISTS marker (n INTEGER)")
store.execute("INSERT INTO marker VALUES (1)")
print("READY", flush=True)
for line in sys.stdin:
    if line.strip() == "publish":
        publish_snapshot(store)
        print("PUBLISHED", flush=True)
store.close()
"""


def icm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "graphs.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    db = tmp_path / "held.duckdb"
    Store.open(db).close()  # migrated, so the snapshot has every table
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "READY"
    yield db, child
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=60)


def test_a_locked_store_without_a_snapshot_is_a_clear_error(holder) -> None:
    db, _ = holder
    with pytest.raises(NoSnapshotError) as info:
        open_for_reading(db)
    message = str(info.value)
    assert str(db) in message and str(snapshot_path(db)) in message
    result = icm("runs", "--db", str(db))
    assert result.returncode == 1 and "no snapshot to read instead" in result.stderr.lower()


def test_a_locked_store_is_read_from_its_snapshot(holder) -> None:
    db, child = holder
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("publish\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "PUBLISHED"
    store, as_of = open_for_reading(db)
    with store:
        assert as_of is not None
        assert store.scalar("SELECT count(*) FROM marker") == 1  # the writer's committed row
    result = icm("runs", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    assert "data as of" in result.stderr and "a run is writing this store" in result.stderr


def test_a_free_store_is_read_directly(tmp_path: Path) -> None:
    db = tmp_path / "free.duckdb"
    Store.open(db).close()
    store, as_of = open_for_reading(db)
    with store:
        assert as_of is None


def test_runs_traces_and_export_work_while_generate_runs(tmp_path: Path) -> None:
    categories = ["upper_normal", "middle_leg", "whole_normal", "lower_hips", "tongue"] * 2
    manifest = make_manifest(tmp_path / "in", categories[:8])
    db = tmp_path / "icm.duckdb"
    gate = GatedResponder(ICMResponder())
    gate.arm(open_for=12)  # a sample or so, then the run waits on the fake server
    with FakeOpenAIServer(responder=gate) as server:
        env = {**os.environ, "ICM_SNAPSHOT_INTERVAL_S": "0.2"}
        child = subprocess.Popen(
            _generate_cmd(manifest, db, server.base_url),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert gate.holding.wait(300), "the run never reached the held requests"
            wait_for(lambda: finished_in_snapshot(db) > 0, "a finished sample in the snapshot")
            assert child.poll() is None  # still running, still holding the file
            with open_snapshot(snapshot_path(db)) as snap:
                sample = snap.scalar("SELECT sample_id FROM samples WHERE status != 'pending'")
            runs = icm("runs", "--db", str(db), "--json")
            traces = icm("traces", sample, "--db", str(db), "--json")
            export = icm("export", "killed", "--db", str(db), "--format", "llava",
                         "--out", str(tmp_path / "out.json"))  # fmt: skip
            assert child.poll() is None  # the reads did not disturb the writer
        finally:
            gate.release()
        assert child.wait(timeout=600) == 0  # and it finishes normally
    for result in (runs, traces, export):
        assert result.returncode == 0, result.stderr
        assert "data as of" in result.stderr
    [run] = json.loads(runs.stdout)
    assert run["name"] == "killed" and run["status"] == "running"
    trace = json.loads(traces.stdout)
    assert trace["sample_id"] == sample and trace["status"] != "pending"
    assert (tmp_path / "out.json").exists()
