"""Generation throughput against a fake OpenAI-compatible server with a fixed latency per call.

For each concurrency level: a fresh store and a run over distinct samples, every role on the
fake server (which runs in its own process, so it does not compete with the run for the GIL),
perception off, cache off so every call goes over HTTP. Reported: samples per minute over the
span of the model calls (start-up, i.e. imports and store set-up, excluded; the wall-clock
figure is reported too), and the ideal for that concurrency from the calls the run made:

    ideal = concurrency * 60 / (sequential_calls_per_sample * latency)

Sequential calls are those on a sample's critical path: the explainer's calls for several rule
variants run in parallel, so they count once. Efficiency = measured / ideal.

``CPU ms/call`` is the CPU time the run's process (and, second, the fake server's) spent per
model call: one process saturates where calls per second times that figure reaches one second,
so it says where a level's shortfall comes from.

Run from the repository root::

    python benchmarks/bench_generate.py [--latency-ms 50] [--samples 96] [--levels 1,8,32]
        [--clients default,langchain,sdk,raw] [--workers 1,2] [--executors local,ray]
        [--repeats 3]

``--clients default`` sets no ``client`` at all: what a run gets when none is given (``raw``,
or ``langchain`` where LangSmith tracing or a LangChain callback hook is configured in the
environment; agents/models/providers/langchain_watch.py); the table names what it resolved to.
Each row reports the 1-minute load average at its end (``os.getloadavg``), since the machine
may be shared.

``--executors ray`` runs each ``--workers`` count as that many Ray actors on one local
loopback cluster (started once, before the first measurement; the ``ray`` extra). Its CPU
ms/call then adds the actors' CPU (read from /proc, from each actor's first finished sample to
its last) to the driver's; ``driver CPU ms/sample`` is this process's alone (with Ray: the
store, dispatch and applying each sample's rows; start-up and the final report included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402

import agents.models.providers.openai_chat  # noqa: E402  (imported before the CPU clock starts)
from agents.models.providers.langchain_watch import choose_client  # noqa: E402
from data.policy import load_policy  # noqa: E402
from data.store import Store, queries  # noqa: E402
from graphs.config import load_config  # noqa: E402
from graphs.runner import GenerationRun, RunSummary  # noqa: E402
from graphs.workers import run_with_workers  # noqa: E402


def make_inputs(folder: Path, n: int) -> Path:
    categories = list(load_policy("icm_sexy").categories)
    rows = []
    for i in range(n):
        Image.new("RGB", (32 + i % 50, 24 + i // 50), (i % 256, 60, 120)).save(folder / f"{i}.png")
        category = categories[i % len(categories)]
        rows.append({"image": f"{i}.png", "policy": "icm_sexy", "category": category})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return manifest


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None where /proc is absent."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def fake_server(latency_s: float) -> Iterator[tuple[str, int]]:
    """Start ``tests/fakes/serve.py``; yield its base URL and process id."""
    command = [sys.executable, str(ROOT / "tests" / "fakes" / "serve.py")]
    command += ["--latency-ms", str(latency_s * 1000)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.split()[1], proc.pid
    finally:
        proc.kill()
        proc.wait()


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the workers of ``--workers``)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_on_ray(config, actors: int) -> tuple[RunSummary, float]:
    """The run on ``actors`` Ray actors; returns it and the CPU seconds its actors used."""
    from graphs.ray_executor import RayExecutor

    first: dict[int, float] = {}
    last: dict[int, float] = {}

    def note(result, slot: int) -> None:
        # From each actor's first finished sample on: its start-up (imports, clients) is
        # left out, like the driver's; so is the work of its first sample (a slight undercount)
        used = process_cpu_s(result.pid)
        if used is not None and result.pid != os.getpid():
            first.setdefault(result.pid, used)
            last[result.pid] = used

    executor = RayExecutor(actors, on_result=note)
    summary = asyncio.run(GenerationRun(config, executor=executor).run())
    return summary, sum(last[pid] - first[pid] for pid in last)


def fake_run_config(
    manifest: Path, db: Path, base_url: str, rules: list[str], level: int, client: str = "default"
):
    """A run of ``manifest`` with every role on the fake server at ``base_url``: cache and
    perception off (every call goes over HTTP), no pacing; ``client`` default sets none."""
    role_settings = {"max_concurrency": "1024", "jitter": "false"}
    if client != "default":  # default: no setting, as a run that names none
        role_settings["client"] = client
    return load_config(
        None,
        {
            "manifest": manifest,
            "db": db,
            "rules": rules,
            "roles": {"all": f"openai-compatible:{base_url}#fake"},
            "role_settings": {"all": role_settings},
            "concurrency": level,
            "use_cache": False,
            "perception": False,
        },
    )


def measure(
    manifest: Path,
    level: int,
    latency_s: float,
    rules: list[str],
    client: str,
    workers: int,
    executor: str = "local",
) -> dict:
    with tempfile.TemporaryDirectory() as tmp, fake_server(latency_s) as (base_url, server_pid):
        db = Path(tmp) / "bench.duckdb"
        config = fake_run_config(manifest, db, base_url, rules, level, client)
        start, cpu_start = time.perf_counter(), time.process_time() + children_cpu_s()
        server_start = process_cpu_s(server_pid)
        actors_cpu = 0.0
        if executor == "ray":
            summary, actors_cpu = run_on_ray(config, workers)
        elif workers > 1:
            summary = run_with_workers(config, workers, Console(stderr=True))
        else:
            summary = asyncio.run(GenerationRun(config).run())
        wall = time.perf_counter() - start
        driver_cpu = time.process_time() + children_cpu_s() - cpu_start
        cpu = driver_cpu + actors_cpu
        server_end = process_cpu_s(server_pid)
        with Store.open(db, read_only=True) as store:
            calls = queries.call_count(store)
            explainer = queries.call_count(store, role="explainer")
            busy = queries.call_span_s(store) or float("nan")
    samples = summary.processed
    sequential = (calls - explainer + explainer / len(rules)) / samples
    ideal = level * 60.0 / (sequential * latency_s)
    measured = samples * 60.0 / busy
    return {
        "concurrency": level,
        "client": client,
        "client_used": choose_client(
            None if client == "default" else client,
            agents.models.providers.openai_chat.DEFAULT_CLIENT,
        ),
        "load_1min": round(os.getloadavg()[0], 2),
        "executor": executor,
        "workers": workers,
        "samples": samples,
        "accepted": summary.counts.get("accepted", 0),
        "calls": calls,
        "sequential_calls_per_sample": round(sequential, 2),
        "seconds_calls": round(busy, 2),
        "seconds_wall": round(wall, 2),
        "samples_per_min": round(measured, 1),
        "samples_per_min_wall": round(samples * 60.0 / wall, 1),
        "ideal_samples_per_min": round(ideal, 1),
        "efficiency": round(measured / ideal, 3),
        "cpu_ms_per_call": round(cpu * 1000 / calls, 2),
        "driver_cpu_ms_per_sample": round(driver_cpu * 1000 / samples, 2),
        "server_cpu_ms_per_call": (
            round((server_end - server_start) * 1000 / calls, 2)
            if server_start is not None and server_end is not None
            else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--samples", type=int, default=96, help="samples per level (>= 2x level)")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--rules", default="R1,R2")
    parser.add_argument("--repeats", type=int, default=1, help="runs per level; median kept")
    parser.add_argument(
        "--clients",
        default="default,sdk",
        help="how requests are sent (role setting client), comma-separated: default (no "
        "setting: what a run gets), langchain (ChatOpenAI), sdk (the openai SDK's own post), "
        "raw (aiohttp)",
    )
    parser.add_argument(
        "--workers", default="1,2", help="process counts (--workers of generate), comma-separated"
    )
    parser.add_argument(
        "--executors", default="local", help="local (processes) and/or ray (actors)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rules = args.rules.split(",")
    setups = [
        (client, int(w), executor)
        for client in args.clients.split(",")
        for executor in args.executors.split(",")
        for w in args.workers.split(",")
    ]
    results = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if "ray" in args.executors.split(","):
            from graphs.ray_cluster import ray_session

            stack.enter_context(ray_session(None))
        for level in (int(x) for x in args.levels.split(",")):
            n = max(args.samples, 2 * level) if level > 1 else max(16, args.samples // 4)
            folder = Path(tmp) / f"in{level}"
            folder.mkdir()
            manifest = make_inputs(folder, n)
            latency = args.latency_ms / 1000
            # Setups alternate within each repeat, so a noisy minute hits all of them alike.
            runs: dict[tuple[str, int, str], list[dict]] = {setup: [] for setup in setups}
            for _ in range(args.repeats):
                for client, workers, executor in setups:
                    one = measure(manifest, level, latency, rules, client, workers, executor)
                    runs[(client, workers, executor)].append(one)
            for setup in setups:
                kept = sorted(runs[setup], key=lambda r: r["efficiency"])[len(runs[setup]) // 2]
                kept["efficiency_runs"] = [r["efficiency"] for r in runs[setup]]
                kept["loads"] = [r["load_1min"] for r in runs[setup]]
                results.append(kept)
                print(json.dumps(kept), file=sys.stderr)
    print(f"\nlatency {args.latency_ms:.0f} ms per call, rules {args.rules}, cache off")
    print(
        "concurrency | client | executor | workers | samples | seq. calls/sample | samples/min | "
        "ideal | efficiency (median; all) | wall | CPU ms/call (run, fake server) | "
        "driver CPU ms/sample | load (1 min)"
    )
    for r in results:
        spread = ", ".join(f"{e:.0%}" for e in r["efficiency_runs"])
        client = (
            r["client"]
            if r["client"] == r["client_used"]
            else f"{r['client']} ({r['client_used']})"
        )
        print(
            f"{r['concurrency']} | {client} | {r['executor']} | {r['workers']} | "
            f"{r['samples']} | "
            f"{r['sequential_calls_per_sample']} | {r['samples_per_min']} | "
            f"{r['ideal_samples_per_min']} | {r['efficiency']:.0%} ({spread}) | "
            f"{r['samples_per_min_wall']}/min | {r['cpu_ms_per_call']}, "
            f"{r['server_cpu_ms_per_call']} | {r['driver_cpu_ms_per_sample']} | "
            f"{', '.join(str(x) for x in r['loads'])}"
        )
    print("\nreproduce: python benchmarks/bench_generate.py " + " ".join(sys.argv[1:]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
