"""Joining or starting the Ray cluster ``--executor ray`` runs on (Ray is the ``ray`` extra).

With ``--ray-address`` the driver connects to an existing cluster and leaves it running. Without
it a local cluster is started for this process and shut down when the run ends (also on Ctrl-C;
when the driver is killed, Ray's own reaper process stops it). The local cluster keeps every
listener on 127.0.0.1: by default Ray binds the machine's own address (all interfaces; seen on
this kind of machine, even with ``_node_ip_address="127.0.0.1"``). Ray's local-only mode (the one
it uses on macOS and Windows) is switched on by ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which
Ray reads once, when it is imported: :func:`local_init_options` sets it for this process and
the cluster's processes, and sets Ray's constant too when Ray was imported before. No
dashboard is started. ``tests/test_ray_executor.py`` checks every listener's address.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
#: ``ray.init`` takes 3-4 s on an idle machine and times out on a heavily loaded one
INIT_HELP = (
    "starting Ray failed; on a busy machine `ray.init` can time out: retry, or start a cluster "
    "with `ray start --head --node-ip-address 127.0.0.1` and pass --ray-address"
)


class RayUnavailableError(RuntimeError):
    """Ray is not installed (the ``ray`` extra), or the cluster cannot be reached."""


def import_ray() -> Any:
    """The ``ray`` module, or a clear error naming the extra to install."""
    try:
        import ray  # optional extra
    except ImportError as exc:
        raise RayUnavailableError(
            "--executor ray needs Ray: pip install 'icm-assistant[ray]' (or pip install ray)"
        ) from exc
    return ray


def local_init_options(num_cpus: int | None = None) -> dict[str, Any]:
    """``ray.init`` options of a local, loopback-only cluster (see the module docstring)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants: Any = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        constants.ENABLE_RAY_CLUSTER = False  # read when Ray was imported, before the env var
    # The actors import this checkout's packages, whatever is installed elsewhere.
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    options: dict[str, Any] = {
        "_node_ip_address": LOOPBACK,
        "include_dashboard": False,
        "log_to_driver": False,
    }
    if num_cpus is not None:
        options["num_cpus"] = num_cpus
    return options


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray connected for the block: to ``address``, to the cluster this process already
    joined, or to a local loopback cluster started here (and shut down on leaving)."""
    local = None if address else local_init_options(num_cpus)  # before Ray is imported
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if local is None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(**local)
    except Exception as exc:  # Ray raises several kinds (timeouts, connection errors)
        where = address or "a local cluster"
        raise RayUnavailableError(f"{where}: {type(exc).__name__}: {exc}\n{INIT_HELP}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()
