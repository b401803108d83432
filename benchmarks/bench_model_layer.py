"""How much time does the model layer add to a call? Measured against the fake OpenAI server.

Three variants run interleaved in one process, against the same loopback server, so machine
noise hits them alike:

- ``raw_sdk``: ``AsyncOpenAI.chat.completions.create`` on the layer's HTTP client (aiohttp)
  with the same ``json_schema`` response format, then ``json.loads`` + pydantic validation
  (what any caller must do);
- ``layer``: ``ModelLayer.call`` with the cache off (ChatOpenAI, pacing, retry loop, validation,
  trace rows batched into a DuckDB store);
- ``layer_cache_hit``: ``ModelLayer.call`` answered from the cache (no request at all).

The layer's overhead is ``layer - raw_sdk`` (targets: < 2 ms per call; a cache hit < 1 ms).
The mean includes the batched store writes (one DuckDB commit per 64 trace rows); the median
mostly does not. The layer sends ``response_format`` in the request body, skipping the SDK's
client-side transform of the schema that the raw call pays, so part of its cost is offset.

Run from the repository root::

    python benchmarks/bench_model_layer.py --calls 300 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from agents.models.base import Message  # noqa: E402
from agents.models.layer import ModelLayer  # noqa: E402
from agents.models.settings import ModelConfig  # noqa: E402
from data.store import Store, queries  # noqa: E402
from tests.fakes import FakeOpenAIServer  # noqa: E402

KEY = "sk-bench-not-a-real-key"


class Finding(BaseModel):
    """A small structured answer, shaped like a describer's."""

    category: str = Field(description="the attribute product the image shows")
    confidence: float
    reasons: list[str]


MESSAGES = [
    Message("system", "You describe images for content moderation. Answer as JSON."),
    Message("user", "Describe the image: a person at a beach, swimwear, daylight."),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run(calls: int, warmup: int, base_url: str, db_path: Path) -> dict[str, list[float]]:
    schema = Finding.model_json_schema()
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Finding", "schema": schema, "strict": False},
    }
    # The same HTTP client as the layer's default (aiohttp), so the difference is the layer.
    raw_client = openai.AsyncOpenAI(
        api_key=KEY, base_url=base_url, max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    raw_messages = [{"role": "system", "content": MESSAGES[0].text}]
    raw_messages.append({"role": "user", "content": MESSAGES[1].text})

    async def raw_call() -> None:
        completion = await raw_client.chat.completions.create(
            model="gpt-4o",
            messages=raw_messages,
            response_format=response_format,
            temperature=0.0,
            max_completion_tokens=1024,
        )
        Finding.model_validate(json.loads(completion.choices[0].message.content or ""))

    config = ModelConfig.from_args([f"describer=openai:gpt-4o?base_url={base_url}"])
    store = Store.open(db_path)
    uncached = ModelLayer(config, store, run_id="bench", use_cache=False)
    cached = ModelLayer(config, store, run_id="bench", use_cache=True)

    async def layer_call() -> None:
        result = await uncached.call(role="describer", schema=Finding, messages=MESSAGES)
        assert result.ok, result.error

    async def hit_call() -> None:
        result = await cached.call(role="describer", schema=Finding, messages=MESSAGES)
        assert result.ok and result.cache_hit, result

    await cached.call(role="describer", schema=Finding, messages=MESSAGES)  # prime the cache
    variants = {"raw_sdk": raw_call, "layer": layer_call, "layer_cache_hit": hit_call}
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for i in range(warmup + calls):
        order = names[i % 3 :] + names[: i % 3]  # rotate who goes first
        for name in order:
            start = time.perf_counter()
            await variants[name]()
            elapsed = (time.perf_counter() - start) * 1000.0
            if i >= warmup:
                times[name].append(elapsed)
    await uncached.aclose()
    await cached.aclose()
    trace_rows = queries.call_count(store)
    store.close()
    await raw_client.close()
    assert trace_rows == 2 * (warmup + calls) + 1, trace_rows
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {
        name: {
            "median_ms": statistics.median(v),
            "p95_ms": percentile(v, 0.95),
            "mean_ms": statistics.fmean(v),
            "n": len(v),
        }
        for name, v in times.items()
    }
    raw, layer = times["raw_sdk"], times["layer"]
    paired = [a - b for a, b in zip(layer, raw, strict=True)]
    out["overhead_layer_minus_raw"] = {
        "median_ms": statistics.median(layer) - statistics.median(raw),
        "p95_ms": percentile(layer, 0.95) - percentile(raw, 0.95),
        "mean_ms": statistics.fmean(layer) - statistics.fmean(raw),
        "paired_median_ms": statistics.median(paired),
        "n": len(paired),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="measured calls per variant")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory() as tmp:
        times = asyncio.run(run(args.calls, args.warmup, server.base_url, Path(tmp) / "b.duckdb"))
    summary = summarise(times)

    print(f"{'variant':<28}{'median ms':>12}{'p95 ms':>12}{'mean ms':>12}{'n':>6}")
    for name, row in summary.items():
        print(
            f"{name:<28}{row['median_ms']:>12.3f}{row['p95_ms']:>12.3f}"
            f"{row['mean_ms']:>12.3f}{row['n']:>6}"
        )
    paired = summary["overhead_layer_minus_raw"]["paired_median_ms"]
    print(f"paired median overhead (layer - raw, same iteration): {paired:.3f} ms")
    print("targets: overhead < 2 ms per call; cache hit < 1 ms")
    print(
        f"reproduce: python benchmarks/bench_model_layer.py --calls {args.calls} "
        f"--warmup {args.warmup}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": summary}, indent=2
            )
        )


if __name__ == "__main__":
    main()
