"""``--executor ray``: the samples of a run go to Ray actors; the driver keeps the store.

The driver (this process) prepares the run exactly as one process does (run row, samples,
resume selection) and stays the only writer of the DuckDB store. For each sample still to do it
first replays the sample against the LLM cache (``SampleWorker.replay``): a sample the cache
answers completely is finished here and never leaves the driver; the others go to actors with
the entries that hit. Each actor holds a share of ``--concurrency`` slots; samples go out in
small batches (a quarter of an actor's slots each, several per actor, so an actor stays busy
while a batch drains) and every finished sample streams back on its own and is committed by the
driver's writer in one transaction with its calls.

A lost actor (its process killed, its node gone) ends its batches with ``RayActorError``: the
samples of those batches that had not come back are queued again, ahead of the rest, and the
actor is replaced by a new one; a result is applied once per sample, so nothing is duplicated.
When the run ends, fails or is interrupted every actor is killed; a killed driver's actors are
ended by Ray (they belong to its job). Whatever was committed stays, and a rerun resumes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data.policy_models import Policy
from data.store import Store
from graphs.console import styled
from graphs.ray_cluster import import_ray
from graphs.runner import GenerationRun, OnSample, RunConfigError, RunSummary
from graphs.sample_worker import Dispatch, SampleResult, SampleWorker, apply_result
from graphs.state import SampleSpec

#: lost actors replaced per actor of the pool before the run gives up
REPLACEMENTS_PER_ACTOR = 3
#: samples per batch: this fraction of an actor's slots (so several batches keep it busy)
BATCHES_PER_ACTOR = 4


@dataclass
class _Slot:
    """One actor of the pool; replaced (a new actor) when it is lost."""

    index: int
    handle: Any
    pid: int
    lock: asyncio.Lock


class ActorsLost(RunConfigError):
    """More actors were lost than the run replaces; finished samples are kept (rerun resumes)."""


class RayExecutor:
    """Runs a :class:`GenerationRun`'s samples on ``actors`` Ray actors (see the module).

    ``on_result(result, slot_index)``: called after each applied result (tests kill an actor
    on it). Ray must be connected (``graphs.ray_cluster.ray_session``).
    """

    def __init__(
        self,
        actors: int,
        *,
        on_result: Callable[[SampleResult, int], None] | None = None,
        connect: Callable[[], None] | None = None,
    ) -> None:
        if actors < 1:
            raise RunConfigError("--workers: at least one Ray actor")
        self.actors = actors
        self.on_result = on_result
        self.connect = connect
        """Connects Ray when the first actor is needed (``icm generate``: a rerun with nothing
        left, or one the cache answers, never starts a cluster); None: Ray is connected."""
        self.slots: list[_Slot] = []
        self.replaced = 0
        self.replayed = 0
        """Samples the driver's cache replay finished (never dispatched)."""

    def loads_models_here(self) -> bool:
        return False  # each actor loads its own

    async def drive(
        self,
        run: GenerationRun,
        store: Store,
        policies: dict[str, Policy],
        todo: list[SampleSpec],
        summary: RunSummary,
        on_sample: OnSample | None,
    ) -> None:
        if any(b.settings.delivery == "batch" for b in run.model_config.resolved().values()):
            raise RunConfigError(
                "--executor ray sends requests as they come; delivery=batch rounds run in one "
                "process (drop --executor ray for that run)"
            )
        ray = import_ray()
        if self.connect is None and not ray.is_initialized():
            raise RunConfigError("--executor ray: Ray is not connected (graphs.ray_cluster)")
        writer = run.writer
        config = run.config
        per_actor = max(1, math.ceil(config.concurrency / self.actors))
        batch_size = max(1, math.ceil(per_actor / BATCHES_PER_ACTOR))
        feeders_per_actor = math.ceil(per_actor / batch_size)  # in flight: at most per_actor
        replayer = None
        if config.use_cache:
            replayer = SampleWorker(run, policies, store=store, cache_only=True)
            if replayer.layer.cache_is_empty():
                replayer = None  # nothing to consult: every call would miss
        queue: deque[SampleSpec | Dispatch] = deque(todo)
        applied: set[str] = set()

        def apply(result: SampleResult, slot: int) -> None:
            if result.sample_id in applied:  # a late copy: never applied twice
                return
            applied.add(result.sample_id)
            apply_result(writer, result, run, summary, on_sample)
            if self.on_result:
                self.on_result(result, slot)

        async def next_batch() -> list[Dispatch]:
            batch: list[Dispatch] = []
            while queue and len(batch) < batch_size:
                item = queue.popleft()
                if isinstance(item, Dispatch):
                    batch.append(item)
                elif replayer is None:
                    batch.append(Dispatch(item))
                else:
                    replayed = await replayer.replay(item)
                    if isinstance(replayed, SampleResult):
                        self.replayed += 1
                        apply(replayed, -1)
                    else:
                        batch.append(replayed)
            return batch

        pool: asyncio.Task[list[_Slot]] | None = None

        async def slot_of(index: int) -> _Slot:
            # Actors start when the first sample needs one: a run the cache answers
            # completely (or a rerun with nothing left) never starts them.
            nonlocal pool
            if pool is None:
                if self.connect is not None:
                    self.connect()  # blocks the loop for ray.init: nothing else runs yet
                pool = asyncio.create_task(self._start_pool(ray, run, policies))
            self.slots = await asyncio.shield(pool)
            return self.slots[index]

        async def feed(index: int) -> None:
            while batch := await next_batch():
                slot = await slot_of(index)
                handle, received = slot.handle, set()
                try:
                    stream = handle.run_batch.options(num_returns="streaming").remote(batch)
                    async for ref in stream:
                        result = await ref
                        received.add(result.sample_id)
                        apply(result, slot.index)
                except ray.exceptions.RayActorError:
                    lost = [d for d in batch if d.sample.sample_id not in received]
                    queue.extendleft(reversed(lost))
                    await self._replace(ray, slot, handle, run, policies)

        feeders: list[asyncio.Task[None]] = []
        try:
            with run.reporter.samples(run.run_id, len(todo)):  # the one-process progress line
                feeders = [
                    asyncio.create_task(feed(index))
                    for index in range(self.actors)
                    for _ in range(feeders_per_actor)
                ]
                done, _ = await asyncio.wait(feeders, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:  # the first failure ends the run (the finally stops the rest)
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in feeders:
                task.cancel()
            await asyncio.gather(*feeders, return_exceptions=True)
            if pool is not None and not pool.done():
                pool.cancel()
                await asyncio.gather(pool, return_exceptions=True)
            self.kill_all(ray)
            if replayer is not None:
                await replayer.close()

    async def _start_actor(self, ray: Any, run: GenerationRun, policies: dict) -> tuple[Any, int]:
        from graphs.ray_actor import RemoteGenerationActor  # imports ray: only on use

        handle = RemoteGenerationActor.remote(run.config, policies)
        try:
            pid = await handle.start.remote()
        except ray.exceptions.RayError as exc:  # the actor's set-up failed (a bad model)
            ray.kill(handle, no_restart=True)
            raise RunConfigError(f"a Ray actor could not start: {exc}") from exc
        return handle, int(pid)

    async def _start_pool(self, ray: Any, run: GenerationRun, policies: dict) -> list[_Slot]:
        began = time.perf_counter()
        started = await asyncio.gather(
            *(self._start_actor(ray, run, policies) for _ in range(self.actors))
        )
        pids = ", ".join(str(pid) for _, pid in started)  # printed: `kill` one to try a loss
        took = time.perf_counter() - began
        run.reporter.note(
            styled("[green]✓[/] started {} Ray actors: pids {} ", self.actors, pids)
            + f"({took:.1f} s)"
        )
        return [_Slot(n, h, pid, asyncio.Lock()) for n, (h, pid) in enumerate(started)]

    async def _replace(
        self, ray: Any, slot: _Slot, lost: Any, run: GenerationRun, policies: dict
    ) -> None:
        """A new actor in ``slot`` unless another feeder of the slot replaced ``lost`` already."""
        async with slot.lock:
            if slot.handle is not lost:
                return
            self.replaced += 1
            if self.replaced > REPLACEMENTS_PER_ACTOR * self.actors:
                raise ActorsLost(
                    f"{self.replaced} Ray actors were lost; finished samples are saved, rerun "
                    "the same command to resume"
                )
            ray.kill(lost, no_restart=True)
            run.reporter.note(f"Ray actor {slot.index} (pid {slot.pid}) lost: replacing it")
            slot.handle, slot.pid = await self._start_actor(ray, run, policies)

    def kill_all(self, ray: Any) -> None:
        """End every actor of the pool (the run is over, failed or interrupted)."""
        for slot in self.slots:
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception:  # an actor already gone
                continue
