"""The Ray actor of ``--executor ray``: one :class:`~graphs.sample_worker.SampleWorker` in its
own process, running batches of samples and streaming each finished one back.

Imported only when Ray runs (it imports ``ray``). The actor never opens the store: its rows
travel back in :class:`~graphs.sample_worker.SampleResult` and the driver commits them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import ray

from data.policy_models import Policy
from graphs.config import GenerateConfig
from graphs.runner import GenerationRun
from graphs.sample_worker import Dispatch, SampleResult, SampleWorker


class GenerationActor:
    """Runs samples for the driver (one process per actor)."""

    def __init__(self, config: GenerateConfig, policies: dict[str, Policy]) -> None:
        run = GenerationRun(config)
        run.snapshots = None  # the driver publishes the store's snapshots
        self.worker = SampleWorker(run, policies)

    async def start(self) -> int:
        """Build clients and load models; returns this actor's process id."""
        await self.worker.start()
        return os.getpid()

    async def run_batch(self, batch: Sequence[Dispatch]) -> AsyncIterator[SampleResult]:
        """Called with ``num_returns="streaming"``: one result per sample, as each finishes."""
        async for result in self.worker.run_many(batch):
            yield result


#: the actor class Ray creates; no Ray restarts or task retries: the driver retries a lost
#: actor's unfinished samples on another actor itself, so Ray never reruns a sample behind it
RemoteGenerationActor: Any = ray.remote(max_restarts=0, max_task_retries=0)(GenerationActor)
