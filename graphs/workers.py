"""``--workers N``: one generation run spread over N local processes, merged into one store.

Why: a Python process spends a few milliseconds of CPU on every model call (LangGraph, the
model layer, the store), so against a fast endpoint at high concurrency one process saturates
its core before the endpoint does. Workers are ordinary shards (``--shard j/N``), each writing
its own store (DuckDB allows one writing process per file) under ``<db>.workers/<run id>/``.
The parent shows one progress bar from the workers' reports and, when they end (finished,
failed or interrupted), merges every worker store into ``--db`` by ``icm merge``'s rules.

Re-running the same command resumes each worker from its own store; samples the target store
already finished are skipped. A worker whose parent disappears (even ``kill -9``) notices its
closed stdin and stops as on Ctrl-C, so no orphan keeps a store locked.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from rich.console import Console

from data.store import Store, queries
from data.store.merge import merge_stores
from graphs.config import GenerateConfig, load_config, user_errors
from graphs.console import make_console
from graphs.report import RunReporter
from graphs.runner import FINAL, GenerationRun, RunConfigError, RunSummary

ROOT = Path(__file__).resolve().parents[1]
#: how long interrupted workers get to write their last results before they are killed
STOP_GRACE_S = 30.0


def workers_folder(config: GenerateConfig) -> Path:
    """Where the worker stores of this run live (beside ``--db``, one folder per run)."""
    return config.db.parent / f"{config.db.name}.workers" / config.run_id()


@dataclass
class Worker:
    index: int
    db: Path
    log: Path
    process: subprocess.Popen[str]


class WorkerFailed(RunConfigError):
    """A worker process ended with an error (its finished samples were still merged)."""


def worker_configs(config: GenerateConfig, workers: int, skip_file: Path) -> list[GenerateConfig]:
    """The shard configuration of each worker: same identity, own store, a share of the
    concurrency (rounded up) and of ``--limit``."""
    folder = workers_folder(config)
    out = []
    for j in range(workers):
        limit = None
        if config.limit is not None:
            limit = config.limit // workers + (1 if j < config.limit % workers else 0)
        update: dict[str, Any] = {
            "db": folder / f"worker-{j}-of-{workers}.duckdb",
            "shard": f"{j}/{workers}",
            "concurrency": math.ceil(config.concurrency / workers),
            "skip_samples": skip_file,
            "limit": limit,
        }
        out.append(config.model_copy(update=update))
    return [c for c in out if c.limit is None or c.limit > 0]


def finished_in(config: GenerateConfig) -> list[str]:
    """Sample ids of this run that ``--db`` already holds as done (so workers skip them)."""
    if not config.db.exists():
        return []
    done = ("accepted",) if config.retry_failed else FINAL
    with Store.open(config.db, read_only=True, wait_s=5.0) as store:
        if not queries.run_exists(store, config.run_id()):
            return []
        return queries.sample_ids_with_status(store, config.run_id(), done)


def run_with_workers(config: GenerateConfig, workers: int, console: Console) -> RunSummary:
    """Run ``config`` as ``workers`` shard processes, then merge their stores into ``config.db``."""
    if config.shard:
        raise RunConfigError(
            "--workers splits the run into shards itself; it cannot be combined with --shard "
            "(run each --shard with --workers 1, or drop --shard)"
        )
    started = time.perf_counter()
    folder = workers_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    skip_file = folder / "finished-in-target.json"
    skip_file.write_text(json.dumps(finished_in(config)))
    started_workers: list[Worker] = []
    reports: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
    summary = RunSummary(config.run_id(), config.db)
    summary.checked = config.checked
    try:
        for cfg in worker_configs(config, workers, skip_file):
            started_workers.append(_spawn(cfg, folder, reports))
        _follow(started_workers, reports, summary, console)
    except KeyboardInterrupt:
        _stop(started_workers)
        _merge(config, started_workers, summary, console)
        raise
    _merge(config, started_workers, summary, console)
    summary.seconds = time.perf_counter() - started
    broken = [w for w in started_workers if w.process.returncode != 0]
    if broken:
        first = broken[0]
        raise WorkerFailed(
            f"{len(broken)} of {len(started_workers)} workers failed; worker {first.index} "
            f"(exit {first.process.returncode}, log {first.log}):\n{_tail(first.log)}\n"
            "Finished samples were merged into the store; rerun the same command to resume."
        )
    return summary


def _spawn(cfg: GenerateConfig, folder: Path, reports: queue.Queue) -> Worker:
    index = int(str(cfg.shard).partition("/")[0])
    spec = folder / f"worker-{index}.yaml"
    spec.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    log = folder / f"worker-{index}.log"
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    # no viewer snapshots of worker stores: the merged store is the one to look at
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
           "ICM_SNAPSHOT_INTERVAL_S": "0"}  # fmt: skip
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "graphs.workers", str(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches the parent only; it stops workers once
        )
    reader = threading.Thread(
        target=_read_reports, args=(index, process.stdout, reports), daemon=True
    )
    reader.start()
    return Worker(index, Path(str(cfg.db)), log, process)


def _read_reports(index: int, stream: IO[str] | None, reports: queue.Queue) -> None:
    """Forward a worker's JSON report lines; ``None`` marks the end of its output."""
    for line in stream or ():
        try:
            reports.put((index, json.loads(line)))
        except ValueError:
            continue  # not a report (a library printing to stdout)
    reports.put((index, None))


def _follow(
    workers: list[Worker], reports: queue.Queue, summary: RunSummary, console: Console
) -> None:
    """One progress line for all workers (the one a single process shows: ``RunReporter``),
    until every worker's output has ended. Each report carries its worker's running totals."""
    todo: dict[int, int] = {}
    open_streams = len(workers)
    latest: dict[int, dict[str, Any]] = {}
    reporter = RunReporter(console)
    with reporter.samples(f"{summary.run_id} ({len(workers)} workers)", None):
        while open_streams:
            index, report = reports.get()
            if report is None:
                open_streams -= 1
                continue
            if report.get("event") == "start":
                todo[index] = int(report["todo"])
                summary.skipped += int(report["skipped"])
                if len(todo) == len(workers):
                    reporter.set_total(sum(todo.values()))
                continue
            latest[index] = report
            summary.processed += 1

            def total(name: str) -> Any:
                return sum(r.get(name, 0) for r in latest.values())

            summary.tokens, summary.cost_usd = total("tokens"), total("cost_usd")
            reporter.tally.set(total("calls"), total("cached"), summary.tokens)
            reporter.on_sample(report["status"], summary.cost_usd)
    summary.calls, summary.cached_calls = reporter.tally.calls, reporter.tally.cached
    for worker in workers:
        worker.process.wait()


def _stop(workers: list[Worker]) -> None:
    """Ask running workers to stop as on Ctrl-C, give them time to save, then kill."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def _merge(
    config: GenerateConfig, workers: list[Worker], summary: RunSummary, console: Console
) -> None:
    """Bring every worker store into ``config.db``; set the run's counts from the result."""
    sources = [w.db for w in workers if w.db.exists()]
    if not sources:
        return
    status = console.status(f"merging {len(sources)} worker stores into {config.db}")
    with status, Store.open(config.db, wait_s=5.0) as target:
        merge_stores(target, sources)
        summary.counts = GenerationRun(config).counts(target)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------- worker side
def worker_main(config_path: Path) -> int:
    """Run one shard from its YAML configuration, reporting progress as JSON lines on stdout."""
    import asyncio

    config = load_config(config_path, {})
    console = make_console(stderr=True, force_terminal=False, width=120)
    out = sys.stdout

    def report(event: dict[str, Any]) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()

    def on_start(todo: int, skipped: int) -> None:
        report({"event": "start", "todo": todo, "skipped": skipped})

    run = GenerationRun(config, console)

    def on_sample(status: str, summary: RunSummary) -> None:
        tally = run.reporter.tally
        report(
            {"event": "sample", "status": status, "tokens": summary.tokens,
             "cost_usd": summary.cost_usd, "calls": tally.calls, "cached": tally.cached}
        )  # fmt: skip

    threading.Thread(target=_stop_when_orphaned, daemon=True).start()
    try:
        asyncio.run(run.run(on_start=on_start, on_sample=on_sample))
    except KeyboardInterrupt:
        return 130
    except user_errors() as exc:
        console.print(f"error: {exc}", markup=False, highlight=False)
        return 2
    return 0


def _stop_when_orphaned() -> None:
    """The parent holds our stdin open; when it closes (the parent is gone), stop gracefully."""
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    sys.exit(worker_main(Path(sys.argv[1])))
