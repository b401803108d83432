"""Run samples away from the store: each finished sample comes back as the rows to commit.

Why: with ``--executor ray`` the driver stays the single writer of the DuckDB store (resume,
cache and traces work as in one process), while Ray actors run the graph. A
:class:`SampleWorker` runs the run's own pipeline (``GenerationRun.build_pipeline``) over a
model layer in ``collect`` mode and a :class:`~data.store.batch.SampleWrites` in place of the
run's writer, so a finished sample yields exactly the rows its ``BatchWriter`` would have
committed (stage outputs, critiques, outcome, explanations, Q-A) plus its model-call traces and
the cache entries those calls created: a :class:`SampleResult`. The driver applies it
(:func:`apply_result`) in one transaction.

The same class, cache-only over the driver's store, is the driver's replay before dispatch
(:meth:`SampleWorker.replay`): a sample whose every call the cache answers finishes in the
driver and never leaves it; one that misses goes out with the entries that did hit (a
:class:`Dispatch`), so the actor pays only for the calls the cache cannot answer.

Nothing here imports Ray: the actor (``graphs.ray_actor``) only wraps a worker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.models.cache import CacheEntry, CacheMiss
from agents.models.layer import ModelLayer
from data.policy_models import Policy
from data.store import Store, records
from data.store.batch import BatchWriter, SampleWrites, Write, replay
from graphs.pipeline import StoreRecorder
from graphs.runner import Evidence, GenerationRun, RunSummary
from graphs.state import SampleSpec


@dataclass(frozen=True)
class Dispatch:
    """A sample sent to an actor: with the cache entries the driver's replay hit and the
    perception evidence it computed (None: the actor runs perception itself)."""

    sample: SampleSpec
    seeds: tuple[CacheEntry, ...] = ()
    evidence: Evidence | None = None


@dataclass
class SampleResult:
    """Everything one finished sample writes to the store, and its tally."""

    sample_id: str
    status: str
    writes: list[Write]
    calls: list[dict[str, Any]]
    cache_rows: list[dict[str, Any]]
    tokens: int = 0
    cost_usd: float = 0.0
    pid: int = field(default_factory=os.getpid)
    """The process that ran it (an actor's, or the driver's for a cache-answered sample)."""


class SampleWorker:
    """The run's pipeline over a collecting model layer (see the module docstring).

    ``store``: where a cache-only replay reads the cache (the driver's); an actor has none.
    """

    def __init__(
        self,
        run: GenerationRun,
        policies: dict[str, Policy],
        *,
        store: Store | None = None,
        cache_only: bool = False,
    ) -> None:
        config = run.config
        self.run = run
        self.policies = policies
        self.store = store
        self.layer = ModelLayer(
            run.model_config, store, run_id=run.run_id, use_cache=config.use_cache,
            flush_every=None, collect=True, cache_only=cache_only,
        )  # fmt: skip
        self.writes = SampleWrites()
        self.graph = run.build_pipeline(self.layer, policies, StoreRecorder(self.writes))

    async def start(self) -> None:
        """Check keys, build the clients and load in-process models before the first sample."""
        self.layer.check_credentials()
        roles = self.run.roles()
        await self.layer.warm_up(roles)
        await self.run.load_local_models(roles)

    async def close(self) -> None:
        """Close the layer's HTTP clients (nothing is written: its rows went with samples)."""
        await self.layer.aclose()

    async def run_one(self, dispatch: Dispatch) -> SampleResult:
        """Run one sample; its rows come back instead of going to a store.

        Raises:
            CacheMiss: only in a cache-only worker (the driver's replay).
        """
        sample = dispatch.sample
        if dispatch.seeds:
            self.layer.seed_cache(list(dispatch.seeds))
        out = await self.run.outcome_of(self.store, self.graph, sample, dispatch.evidence)
        status = self.run.queue_outcome(self.writes, sample, self.policies[sample.policy], out)
        calls, cache_rows = self.layer.take_sample(sample.sample_id)
        return SampleResult(
            sample_id=sample.sample_id,
            status=status,
            writes=self.writes.take(sample.sample_id),
            calls=calls,
            cache_rows=cache_rows,
            tokens=int(out.get("tokens", 0) or 0),
            cost_usd=float(out.get("cost_usd", 0.0) or 0.0),
        )

    async def run_many(self, batch: Sequence[Dispatch]) -> AsyncIterator[SampleResult]:
        """Run a batch concurrently, yielding each sample as soon as it finishes."""
        tasks = [asyncio.ensure_future(self.run_one(d)) for d in batch]
        try:
            for finished in asyncio.as_completed(tasks):
                yield await finished
        finally:
            for task in tasks:
                task.cancel()

    async def replay(self, sample: SampleSpec) -> SampleResult | Dispatch:
        """Cache-only: the finished sample when the cache answers every call, else what to
        dispatch (the entries hit so far, and the evidence already computed)."""
        evidence: Evidence | None = None
        if self.run.config.perception:  # computed once, here, and shipped with the sample
            try:
                evidence = await asyncio.to_thread(self.run.evidence_for, self.store, sample)
            except Exception:  # e.g. an image gone since the check: the actor runs perception
                evidence = None  # again inside the sample's own guard, which fails only it
        try:
            return await self.run_one(Dispatch(sample, evidence=evidence))
        except CacheMiss:
            hit = [c["cache_key"] for c in self.layer.drop_sample(sample.sample_id)]
            self.writes.drop(sample.sample_id)
            return Dispatch(sample, tuple(self.layer.cached_entries(hit)), evidence)


def apply_result(
    writer: BatchWriter,
    result: SampleResult,
    run: GenerationRun,
    summary: RunSummary,
    on_sample: Callable[[str, RunSummary], None] | None = None,
) -> None:
    """Queue a finished sample's rows in the driver's writer (they commit together) and count
    it in the summary, the progress line and ``on_sample``."""
    with writer.atomically():
        replay(result.writes, writer)
        records.queue_calls(writer, result.calls, result.cache_rows)
    summary.processed += 1
    summary.tokens += result.tokens
    summary.cost_usd += result.cost_usd
    for call in result.calls:
        run.reporter.on_call(str(call.get("stage")), _CallFigures(call))
    run.reporter.on_sample(result.status, summary.cost_usd)
    if on_sample:
        on_sample(result.status, summary)


class _CallFigures:
    """A trace row read as the figures the progress line counts (``RunReporter.on_call``)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.input_tokens = row.get("input_tokens")
        self.output_tokens = row.get("output_tokens")
        self.cache_hit = bool(row.get("cache_hit"))
        self.latency_ms = row.get("latency_ms")
