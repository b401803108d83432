"""Where a sample's CPU goes, against what 85 % of ideal allows (issue 28's target).

At ``--level`` samples in flight and ``--latency-ms`` a call, a run reaches a fraction ``f`` of
ideal only if one process spends at most

    budget = 1000 / (f * ideal_samples_per_s)   ms of CPU per sample

(``ideal_samples_per_s = level / (sequential_calls_per_sample * latency)``; the event loop is
one thread, so CPU per sample bounds samples per second). This measures, side by side and
interleaved, against the fake OpenAI-compatible server of ``bench_generate.py`` (own process,
cache and perception off, default client):

- ``run (LangGraph)``: a generation run as it is, each sample through its compiled graph;
- ``run (nodes in a loop)``: the same run with the same compiled graph's node functions called
  one after the other, each ``Command`` followed by hand. This is the measurement's control,
  not a way to run: the difference between the two is what LangGraph's Pregel loop costs per
  sample (its steps, channels, checkpoint and callback managers);
- ``LangGraph, no-op nodes``: a graph of the same chain (same node names and state schema)
  whose nodes do nothing, per invocation: LangGraph's floor for this graph;
- ``aiohttp, bare``: CPU per request of a bare aiohttp session posting the run's own request
  bodies (recorded from the first run) at the same concurrency, times the calls per sample:
  the HTTP floor.

Run from the repository root::

    python benchmarks/bench_cpu_budget.py [--samples 256] [--level 32] [--latency-ms 50]
        [--repeats 3] [--target 0.85]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from bench_generate import fake_run_config, fake_server, make_inputs  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import Command  # noqa: E402

from agents.models.providers import openai_wire  # noqa: E402
from agents.stages import default_registry  # noqa: E402
from data.store import Store, queries  # noqa: E402
from graphs.pipeline import SampleGraph, state_schema  # noqa: E402
from graphs.runner import GenerationRun  # noqa: E402


class NodesInALoop:
    """A compiled graph's node functions called in turn (the control; see the module doc)."""

    def __init__(self, compiled: Any) -> None:
        builder = compiled.builder
        self.start = next(b for a, b in builder.edges if a == START)
        self.nodes = {name: spec.runnable.afunc for name, spec in builder.nodes.items()}

    async def ainvoke(self, state: dict[str, Any], config: Any = None) -> dict[str, Any]:
        values = dict(state)
        node = self.start
        while node != END:
            command = await self.nodes[node](dict(values))
            values.update(command.update or {})
            node = command.goto
        return values


class LoopRun(GenerationRun):
    """A generation run whose samples go through :class:`NodesInALoop`."""

    def build_pipeline(self, layer, policies, recorder) -> Any:
        graphs: SampleGraph = super().build_pipeline(layer, policies, recorder)
        return SampleGraph({flag: NodesInALoop(g) for flag, g in graphs.graphs.items()})


def run_once(manifest: Path, url: str, level: int, rules: list[str], loop: bool) -> dict:
    """One run over ``manifest``: CPU ms per sample (this process, start-up included),
    efficiency over the span of its model calls, calls per sample."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "budget.duckdb"
        config = fake_run_config(manifest, db, url, rules, level)
        cpu = time.process_time()
        summary = asyncio.run((LoopRun if loop else GenerationRun)(config).run())
        cpu = time.process_time() - cpu
        with Store.open(db, read_only=True) as store:
            calls = queries.call_count(store)
            explainer = queries.call_count(store, role="explainer")
            span = queries.call_span_s(store) or float("nan")
    samples = summary.processed
    return {
        "accepted": summary.counts.get("accepted", 0),
        "cpu_ms_per_sample": cpu * 1000 / samples,
        "samples_per_s": samples / span,
        "calls_per_sample": calls / samples,
        "sequential": (calls - explainer + explainer / len(rules)) / samples,
    }


def record_bodies() -> tuple[list[dict[str, Any]], Any]:
    """Patch the raw client to keep the first request body of each role; returns the list
    they are added to and the original ``post`` (to put back)."""
    bodies: list[dict[str, Any]] = []
    seen: set[str] = set()
    original = openai_wire.RawChatClient.post

    async def post(self, body: dict[str, Any], timeout: float | None) -> str:
        schema = str((body.get("response_format") or {}).get("json_schema", {}).get("name"))
        if schema not in seen:
            seen.add(schema)
            bodies.append(body)
        return await original(self, body, timeout)

    openai_wire.RawChatClient.post = post
    return bodies, original


async def http_floor(url: str, bodies: list[dict[str, Any]], level: int, n: int) -> float:
    """CPU ms per request of a bare aiohttp session posting ``bodies`` in turn, ``level`` at
    a time (one keep-alive session, as the raw client keeps)."""
    payloads = [orjson.dumps(b) for b in bodies]
    headers = {"Authorization": "Bearer fake", "Content-Type": "application/json"}
    limit = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers) as session:
        gate = asyncio.Semaphore(level)

        async def one(i: int) -> None:
            async with (
                gate,
                session.post(
                    f"{url}/chat/completions", data=payloads[i % len(payloads)], timeout=limit
                ) as reply,
            ):
                await reply.text()

        await asyncio.gather(*(one(i) for i in range(2 * level)))  # connections open
        cpu = time.process_time()
        await asyncio.gather(*(one(i) for i in range(n)))
        return (time.process_time() - cpu) * 1000 / n


def langgraph_floor(level: int, n: int) -> float:
    """CPU ms per invocation of the generation chain's shape (same node names, same state
    schema) with nodes that do nothing, ``level`` invocations at a time."""
    registry = default_registry()
    chain = [*registry.chain(False)]
    schema = state_schema(registry)
    graph: Any = StateGraph(schema)
    for name, following in zip(chain, [*chain[1:], END], strict=True):

        async def node(state: Any, following: str = following) -> Command[str]:
            await asyncio.sleep(0)  # a real node awaits its model call
            return Command(update={"tokens": 1}, goto=following)

        graph.add_node(name, node, destinations=(following,))
    graph.add_edge(START, chain[0])
    compiled = graph.compile()
    keys = typing.get_type_hints(schema)
    state = {k: None for k in keys} | {"attempts": {}, "feedback": {}, "reasons": []}

    async def measure() -> float:
        gate = asyncio.Semaphore(level)

        async def one() -> None:
            async with gate:
                await compiled.ainvoke(state)

        await asyncio.gather(*(one() for _ in range(level)))
        cpu = time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        return (time.process_time() - cpu) * 1000 / n

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--level", type=int, default=32, help="samples in flight")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rules", default="R1,R2")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind, interleaved")
    parser.add_argument("--target", type=float, default=0.85, help="fraction of ideal")
    args = parser.parse_args()
    rules = args.rules.split(",")
    latency = args.latency_ms / 1000
    runs: dict[bool, list[dict]] = {False: [], True: []}
    loads = []
    with tempfile.TemporaryDirectory() as tmp, fake_server(latency) as (url, _):
        manifest = make_inputs(Path(tmp), args.samples)
        bodies, original = record_bodies()
        try:
            warm = Path(tmp) / "warm"
            warm.mkdir()
            warm_manifest = make_inputs(warm, 2 * args.level)
            for loop in (False, True):  # imports and first renderings, outside the figures
                run_once(warm_manifest, url, args.level, rules, loop)
            for _ in range(args.repeats):
                for loop in (False, True):
                    runs[loop].append(run_once(manifest, url, args.level, rules, loop))
                    loads.append(os.getloadavg()[0])
        finally:
            openai_wire.RawChatClient.post = original
        http = [asyncio.run(http_floor(url, bodies, args.level, 2000)) for _ in range(args.repeats)]
    graph_floor = [langgraph_floor(args.level, 2000) for _ in range(args.repeats)]

    # the control must have done the same work: same calls, same verdicts
    work = {(r["accepted"], r["calls_per_sample"]) for kind in runs.values() for r in kind}
    if len(work) != 1:
        raise SystemExit(f"the runs did not do the same work (accepted, calls a sample): {work}")

    def med(kind: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    sequential = med(False, "sequential")
    calls = med(False, "calls_per_sample")
    ideal = args.level / (sequential * latency)
    budget = 1000 / (args.target * ideal)
    print(
        f"\n{args.level} in flight, {args.latency_ms:.0f} ms a call, {args.samples} samples, "
        f"rules {args.rules}: {calls:.2f} calls and {sequential:.2f} sequential calls a sample, "
        f"ideal {ideal:.1f} samples/s; {args.target:.0%} of ideal allows {budget:.2f} ms of "
        f"CPU per sample (load {min(loads):.2f}-{max(loads):.2f})\n"
    )
    print("| measured | CPU ms per sample: median (runs) | % of ideal: median (runs) |")
    print("| --- | --- | --- |")
    for loop, name in ((False, "run (LangGraph)"), (True, "run (nodes in a loop)")):
        cpu = ", ".join(f"{r['cpu_ms_per_sample']:.2f}" for r in runs[loop])
        eff = [r["samples_per_s"] / ideal for r in runs[loop]]
        spread = ", ".join(f"{e:.0%}" for e in eff)
        print(
            f"| {name} | {med(loop, 'cpu_ms_per_sample'):.2f} ({cpu}) | "
            f"{statistics.median(eff):.0%} ({spread}) |"
        )
    floors = ", ".join(f"{x:.2f}" for x in graph_floor)
    print(f"| LangGraph, no-op nodes | {statistics.median(graph_floor):.2f} ({floors}) | |")
    per_sample = [x * calls for x in http]
    spread = ", ".join(f"{x:.2f}" for x in per_sample)
    print(
        f"| aiohttp, bare ({statistics.median(http):.3f} ms a request x {calls:.2f}) | "
        f"{statistics.median(per_sample):.2f} ({spread}) | |"
    )
    cost = med(False, "cpu_ms_per_sample") - med(True, "cpu_ms_per_sample")
    print(f"\nLangGraph's share of a run (difference of the medians): {cost:.2f} ms a sample")
    print("reproduce: python benchmarks/bench_cpu_budget.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
