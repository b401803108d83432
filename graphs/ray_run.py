"""``icm generate --executor ray``: connect Ray, run the generation on actors, disconnect."""

from __future__ import annotations

import asyncio

from rich.console import Console

from graphs.config import GenerateConfig
from graphs.ray_cluster import ray_session
from graphs.ray_executor import RayExecutor
from graphs.runner import GenerationRun, RunConfigError, RunSummary


def run_on_ray(
    config: GenerateConfig, actors: int, address: str | None, console: Console
) -> RunSummary:
    """The run with ``actors`` Ray actors, on the cluster at ``address`` or a local one."""
    if config.shard:
        raise RunConfigError(
            "--executor ray hands samples to actors itself; it cannot be combined with --shard"
        )
    where = f"the Ray cluster at {address}" if address else "a local Ray cluster (127.0.0.1)"
    console.print(f"{actors} Ray actor{'s' if actors > 1 else ''} on {where}")
    with ray_session(address):
        return asyncio.run(GenerationRun(config, console, RayExecutor(actors)).run())
