"""``icm generate --executor ray``: connect Ray, run the generation on actors, disconnect."""

from __future__ import annotations

import asyncio
import contextlib

from rich.console import Console

from graphs.config import GenerateConfig
from graphs.ray_cluster import import_ray, local_init_options, ray_session
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
    if address is None:
        local_init_options()  # Ray's loopback-only switch, read when Ray is imported
    import_ray()  # no Ray installed: say so before the run starts
    with contextlib.ExitStack() as session:

        def connect() -> None:
            # Joined when the first sample needs an actor, so a rerun with nothing left (or
            # one the cache answers) starts no cluster; left (shut down if local) at the end.
            session.enter_context(ray_session(address))

        executor = RayExecutor(actors, connect=connect)
        return asyncio.run(GenerationRun(config, console, executor).run())
