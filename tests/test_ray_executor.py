"""``generate --executor ray``: Ray actors run the samples, the driver keeps the store.

On one local Ray cluster per module (started like the command starts one: loopback only):
a run equals the single-process run (same accepted set, same rows, nothing twice); the same
after an actor is killed mid-run and after the driver is killed and the command rerun; a rerun
the cache answers never leaves the driver; no Ray process listens beyond 127.0.0.1.
Skipped only where Ray is not installed (the ``ray`` extra). Each test starts actors (a few
seconds each on a 2-core machine) and runs 18 samples against the fake OpenAI server.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
from collections.abc import Iterator
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
    finished_in_snapshot,
    make_manifest,
    run_pipeline,
    wait_for,
)
from test_sample_worker import COMPARED, rows_of
from test_workers import CATEGORIES, EVENT_TIMEOUT_S, OPEN_FOR, deliverable_sigint  # noqa: F401

from data.store import Store
from graphs.config import load_config
from graphs.ray_cluster import local_init_options
from graphs.ray_executor import RayExecutor
from graphs.runner import GenerationRun, RunSummary
from graphs.sample_worker import SampleResult

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """One local loopback cluster for the module (``ray.init`` takes seconds and ~1 GB)."""
    failures = []
    for _ in range(2):  # a loaded machine makes ray.init time out: try again, then say so
        try:
            context = ray.init(**local_init_options(num_cpus=2))
            break
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            ray.shutdown()
    else:
        pytest.fail("ray.init did not start a local cluster twice (machine overloaded?):\n"
                    + "\n".join(failures))  # fmt: skip
    yield context.address_info["gcs_address"]
    ray.shutdown()


def _config(manifest: Path, db: Path, server: FakeOpenAIServer, run: str = "r", **extra):
    spec = f"openai-compatible:{server.base_url}#fake-model"
    options = {"manifest": manifest, "db": db, "rules": ["R1", "R2"], "roles": {"all": spec},
               "role_settings": FAST, "perception": False, "concurrency": 4, "run": run,
               **extra}  # fmt: skip
    return load_config(None, options)


def _run_on_ray(config, executor: RayExecutor) -> RunSummary:
    console = Console(file=io.StringIO())
    return asyncio.run(GenerationRun(config, console, executor).run())


def _assert_same_as_reference(db: Path, reference: Path) -> None:
    assert _accepted(db) == _accepted(reference)
    assert_complete_without_duplicates(db, len(CATEGORIES))
    ours, theirs = rows_of(db), rows_of(reference)
    for table in COMPARED:
        assert ours[table] == theirs[table], table


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The manifest and its single-process run (run name ``r``)."""
    folder = tmp_path_factory.mktemp("reference")
    manifest = make_manifest(folder / "in", CATEGORIES)
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        run_pipeline(manifest, folder / "ref.duckdb", server, run="r")
    return manifest, folder / "ref.duckdb"


def test_a_ray_run_equals_the_single_process_run_and_a_cached_rerun_stays_in_the_driver(
    ray_address: str, reference: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest, ref = reference
    db = tmp_path / "ray.duckdb"
    pids: set[int] = set()
    executor = RayExecutor(2, on_result=lambda result, slot: pids.add(result.pid))
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        summary = _run_on_ray(_config(manifest, db, server), executor)
        assert summary.processed == len(CATEGORIES) and summary.tokens > 0
        assert len(pids) == 2 and os.getpid() not in pids  # both actors worked, not the driver
        _assert_same_as_reference(db, ref)
        requests = len(server.chat_requests())
        # Another run of the same requests: the cache answers all of them, in the driver.
        again = RayExecutor(2)
        cached = _run_on_ray(_config(manifest, db, server, run="again"), again)
        assert len(server.chat_requests()) == requests
    assert cached.processed == len(CATEGORIES) == again.replayed
    assert again.slots == []  # no actor was started
    assert cached.calls == cached.cached_calls > 0


def test_the_command_joins_ray_only_when_a_sample_needs_an_actor(
    ray_address: str, reference: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    """``icm generate --executor ray`` (``run_on_ray``): a rerun with nothing left starts no
    cluster; a run with samples to do joins one (here the module's, already connected)."""
    import graphs.ray_run as ray_run

    manifest, ref = reference
    joined: list[str | None] = []
    real_session = ray_run.ray_session

    def recording_session(address: str | None):
        joined.append(address)
        return real_session(address)

    monkeypatch.setattr(ray_run, "ray_session", recording_session)
    console = Console(file=io.StringIO())
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        db = tmp_path / "cli.duckdb"
        first = ray_run.run_on_ray(_config(manifest, db, server), 2, None, console)
        assert first.processed == len(CATEGORIES) and joined == [None]
        requests = len(server.chat_requests())
        rerun = ray_run.run_on_ray(_config(manifest, db, server), 2, None, console)
    assert rerun.processed == 0 and joined == [None]  # nothing left: Ray was never joined
    assert len(server.chat_requests()) == requests
    _assert_same_as_reference(db, ref)


def test_a_killed_actor_s_samples_are_run_again_elsewhere_and_nothing_twice(
    ray_address: str, reference: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest, ref = reference
    db = tmp_path / "ray.duckdb"
    killed: list[int] = []

    def kill_first_actor(result: SampleResult, slot: int) -> None:
        if slot == 0 and not killed:  # its first finished sample: others are still in flight
            killed.append(result.pid)
            os.kill(result.pid, signal.SIGKILL)

    executor = RayExecutor(2, on_result=kill_first_actor)
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        summary = _run_on_ray(_config(manifest, db, server), executor)
    assert killed and executor.replaced == 1
    assert executor.slots[0].pid != killed[0]  # a new actor took the slot
    assert summary.processed == len(CATEGORIES)
    _assert_same_as_reference(db, ref)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


@pytest.mark.usefixtures("deliverable_sigint")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_killed_or_interrupted_driver_leaves_no_actor_and_the_rerun_completes(
    ray_address: str, reference: tuple[Path, Path], tmp_path: Path, sig: signal.Signals
) -> None:
    manifest, ref = reference
    db = tmp_path / "ray.duckdb"
    gate = GatedResponder(ICMResponder())
    with FakeOpenAIServer(responder=gate) as server:
        command = _generate_cmd(manifest, db, server.base_url)
        command[command.index("killed")] = "r"  # the reference's run name: same sample ids
        command += ["--executor", "ray", "--workers", "2", "--ray-address", ray_address]
        gate.arm(open_for=OPEN_FOR)
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert gate.holding.wait(EVENT_TIMEOUT_S), "the run never reached the held requests"
            wait_for(lambda: finished_in_snapshot(db) > 0, "a committed sample")
            driver.send_signal(sig)
            _, err = driver.communicate(timeout=EVENT_TIMEOUT_S)
            # Ctrl-C: the driver kills its actors and says how to resume (exit 130)
            assert driver.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
        finally:
            if driver.poll() is None:
                driver.kill()
        listed = re.search(rb"pids ([\d, ]+)", err)
        assert listed, err.decode(errors="replace")
        actors = [int(p) for p in listed.group(1).split(b",")]
        # Ray ends a dead driver's actors (they belong to its job), an interrupted driver
        # kills them itself: none keeps running.
        wait_for(lambda: not any(_alive(p) for p in actors), "the actors to end")
        gate.release()
        with Store.open(db, read_only=True) as store:
            done = store.scalar("SELECT count(*) FROM samples WHERE status <> 'pending'")
        assert 0 < done < len(CATEGORIES)
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
    _assert_same_as_reference(db, ref)


def _listening_sockets() -> dict[str, str]:
    """Socket inode -> local address of every TCP socket in LISTEN state (/proc/net/tcp*)."""
    out = {}
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                out[fields[9]] = fields[1].rsplit(":", 1)[0]
    return out


def _is_loopback(hex_address: str) -> bool:
    if len(hex_address) == 8:  # IPv4, little-endian: 127.x.x.x ends with 7F
        return hex_address.endswith("7F")
    # IPv6: ::1, or ::ffff:127.x.x.x (the v4-mapped form some Ray servers bind)
    return hex_address == "0" * 31 + "1" or (
        hex_address[:24] == "0000000000000000FFFF0000" and hex_address.endswith("7F")
    )


def _descendants(root: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def test_the_local_cluster_listens_on_loopback_only(ray_address: str) -> None:
    @ray.remote
    def pid() -> int:
        return os.getpid()

    assert ray.get(pid.remote())  # a worker process is up, with its own listeners
    assert ray_address.startswith("127.0.0.1:")
    listening = _listening_sockets()
    seen = []
    for process in _descendants(os.getpid()):  # this driver, GCS, raylet, workers
        for fd in Path(f"/proc/{process}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            inode = target[len("socket:[") : -1] if target.startswith("socket:[") else None
            if inode in listening:
                seen.append((process, listening[inode]))
    assert len(seen) >= 3  # GCS, raylet, the worker at least
    assert all(_is_loopback(address) for _, address in seen), seen
