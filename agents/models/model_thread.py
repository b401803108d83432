"""The one thread each in-process model runs on, shared by every in-process provider.

A model object (a transformers model, a llama.cpp context) is not safe to use from several
threads, and loading it twice would double its memory: each model gets one worker thread, on
which it is loaded and every generation runs in order, off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from agents.models.base import ProviderError

T = TypeVar("T")

_workers: dict[str, ThreadPoolExecutor] = {}
_registry_lock = threading.Lock()


def model_worker(key: str) -> ThreadPoolExecutor:
    """The single thread that loads and runs model ``key``; its calls queue there in order."""
    with _registry_lock:
        worker = _workers.get(key)
        if worker is None:
            worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"icm-model-{key}")
            _workers[key] = worker
        return worker


async def run_on_model_thread(
    worker: ThreadPoolExecutor, job: Callable[[], T], deadline: type[Exception]
) -> T:
    """Run one generation on the model's thread; every failure becomes a ``ProviderError``:
    ``deadline`` (the runtime's own out-of-time exception) is a ``timeout``, anything else a
    ``bad_request`` (an in-process failure repeats when retried, so it fails fast)."""
    try:
        return await asyncio.get_running_loop().run_in_executor(worker, job)
    except ProviderError:
        raise
    except deadline as exc:
        raise ProviderError("timeout", str(exc)) from exc
    except Exception as exc:
        raise ProviderError("bad_request", f"{type(exc).__name__}: {exc}") from exc
