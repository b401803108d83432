"""``generate --workers N``: one run over N processes, merged into ``--db``; nothing lost when
the parent is interrupted or killed, and a rerun resumes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import GatedResponder, ICMResponder
from rich.console import Console
from test_generate import (
    FAST,
    _accepted,
    _generate_cmd,
    assert_complete_without_duplicates,
    make_manifest,
    run_pipeline,
)
from typer.testing import CliRunner

from data.policy import load_policy
from data.store import Store
from graphs.cli import app
from graphs.config import load_config
from graphs.workers import run_with_workers, workers_folder

#: distinct categories: text-only requests of equal categories would be cache hits
CATEGORIES = list(load_policy("icm_sexy").categories)[:18]


def _no_duplicates_and_nothing_pending(db: Path) -> None:
    assert_complete_without_duplicates(db, len(CATEGORIES))
    with Store.open(db, read_only=True) as store:
        assert store.scalar("SELECT status FROM runs") == "finished"


def _finished(db: Path) -> int:
    # a worker still saving after an interrupt holds its store: wait for it to let go
    with Store.open(db, read_only=True, wait_s=120) as store:
        return int(store.scalar("SELECT count(*) FROM samples WHERE status <> 'pending'"))


def test_two_workers_equal_one_process_and_a_rerun_has_nothing_left(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "in", CATEGORIES)
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        reference = tmp_path / "ref.duckdb"
        # A fixed run name fixes the sample ids and so the workers' split (ids derived from the
        # server's port would now and then put all six samples on one worker).
        run_pipeline(manifest, reference, server, run="split")
        db = tmp_path / "workers.duckdb"
        spec = f"openai-compatible:{server.base_url}#fake-model"
        config = load_config(
            None,
            {"manifest": manifest, "db": db, "rules": ["R1", "R2"], "roles": {"all": spec},
             "role_settings": FAST, "perception": False, "concurrency": 4, "run": "split"},
        )  # fmt: skip
        console = Console(file=io.StringIO())
        summary = run_with_workers(config, 2, console)
        assert summary.processed == len(CATEGORIES) and summary.skipped == 0
        assert summary.counts["accepted"] == len(CATEGORIES)
        assert summary.tokens > 0
        again = run_with_workers(config, 2, console)
    assert again.processed == 0 and again.skipped == len(CATEGORIES)
    assert _accepted(db) == _accepted(reference)
    _no_duplicates_and_nothing_pending(db)
    folder = workers_folder(config)
    stores = sorted(p.name for p in folder.glob("worker-*.duckdb"))
    assert stores == ["worker-0-of-2.duckdb", "worker-1-of-2.duckdb"]
    for store in stores:  # each worker did a share of the work, not all of it
        assert 0 < _finished(folder / store) < len(CATEGORIES)


#: requests the fake answers before it holds the rest: enough for several samples to finish
#: (each needs 7+ calls, at most 4 are in flight), far fewer than the run needs (~130)
OPEN_FOR = 60
#: upper bound on waiting for an event; a wait that hits it fails the test, it never paces it
EVENT_TIMEOUT_S = 300


@pytest.fixture
def deliverable_sigint():
    """Children get Ctrl-C's default action even when this process runs with SIGINT ignored
    (any background job of a non-interactive shell does, e.g. ``pytest ... &`` in a CI or load
    script): an exec'd child keeps an ignored signal ignored, but a caught one is reset to the
    default, so catching it here makes the generate parent interruptible again."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_then_rerun(tmp_path: Path, sig: signal.Signals) -> tuple[Path, Path, int]:
    """Start a 2-worker run, send ``sig`` to the parent once the fake server holds requests
    (some samples finished, none can finish any more), then rerun to the end."""
    manifest = make_manifest(tmp_path / "in", CATEGORIES)
    gate = GatedResponder(ICMResponder())
    with FakeOpenAIServer(responder=gate) as server:
        reference = tmp_path / "ref.duckdb"
        run_pipeline(manifest, reference, server, run="killed")
        server.reset()
        db = tmp_path / "workers.duckdb"
        command = [*_generate_cmd(manifest, db, server.base_url), "--workers", "2"]
        gate.arm(open_for=OPEN_FOR)
        parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert gate.holding.wait(EVENT_TIMEOUT_S), "the run never reached the held requests"
            os.kill(parent.pid, sig)
            _, err = parent.communicate(timeout=EVENT_TIMEOUT_S)
        finally:
            gate.release()
            if parent.poll() is None:
                parent.kill()
        code = parent.returncode
        folder = db.parent / f"{db.name}.workers" / "killed"
        done = sum(_finished(p) for p in folder.glob("worker-*.duckdb"))
        assert 0 < done < len(CATEGORIES), (done, err)
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
    return db, reference, code


@pytest.mark.usefixtures("deliverable_sigint")
def test_ctrl_c_stops_the_workers_merges_their_work_and_the_rerun_completes(tmp_path) -> None:
    db, reference, code = _interrupt_then_rerun(tmp_path, signal.SIGINT)
    assert code == 130
    assert _accepted(db) == _accepted(reference)
    _no_duplicates_and_nothing_pending(db)


@pytest.mark.usefixtures("deliverable_sigint")  # orphaned workers stop by SIGINT-ing themselves
def test_workers_stop_by_themselves_when_the_parent_is_killed(tmp_path: Path) -> None:
    # SIGKILL gives the parent no chance to stop its workers: they see their stdin close, stop
    # as on Ctrl-C and release their stores (the rerun could not open them otherwise).
    db, reference, code = _interrupt_then_rerun(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert _accepted(db) == _accepted(reference)
    _no_duplicates_and_nothing_pending(db)


def test_workers_and_shard_together_are_refused(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:2])
    result = CliRunner().invoke(
        app,
        ["generate", str(manifest), "--db", str(tmp_path / "x.duckdb"), "--workers", "2",
         "--shard", "0/2", "--role", "all=openai-compatible:http://127.0.0.1:9/v1#m"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--workers" in result.output and "--shard" in result.output


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_must_be_positive(tmp_path: Path, workers: int) -> None:
    result = CliRunner().invoke(app, ["generate", "--workers", str(workers)])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--executor", "threads"], "--executor"),
        (["--ray-address", "127.0.0.1:6379"], "--executor ray"),
        (["--executor", "ray", "--shard", "0/2"], "--shard"),
    ],
)
def test_executor_options_that_cannot_work_are_refused(
    tmp_path: Path, options: list[str], named: str
) -> None:
    # refused before any cluster is started or joined (no Ray needed)
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:1])
    result = CliRunner().invoke(
        app,
        ["generate", str(manifest), "--db", str(tmp_path / "x.duckdb"), *options,
         "--role", "all=openai-compatible:http://127.0.0.1:9/v1#m"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert named in " ".join(result.output.split())


def test_the_cli_does_not_import_ray_unless_asked() -> None:
    code = (
        "import sys, graphs.cli, graphs.config; graphs.config.user_errors(); "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
