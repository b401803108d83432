"""Keep the KV state of recent prompts, so a call re-reads only what differs from one of them.

llama.cpp by itself reuses the longest common prefix with the *previous* call only. The demo's
calls alternate between roles and samples (two samples in flight share one model: describer,
context interpreter, explainer, Q-A writer, each with its own system prompt and schema), so
nearly every call started from an empty cache and re-read its whole system prompt; the issue's
trace had 118 calls re-reading a long shared prefix.

llama-cpp-python's ``LlamaRAMCache`` keeps whole states keyed by their tokens and, before each
completion, restores the one sharing the longest prefix with the new prompt when that beats
what is already evaluated. Its ``save_state`` also copies the score rows of the last batch (up
to ``n_batch`` x vocabulary floats: 311 MB for qwen2.5's 151,936 tokens), which nothing reads
back: a restored state always re-evaluates at least one token before sampling. Saving here
keeps one zero row instead (``load_state`` broadcasts it), so a state costs only its KV cells
(about 28 KB per token for qwen2.5-1.5b: ~20-40 MB a call) and the cache is bounded by
``ICM_LLAMA_PREFIX_CACHE_MB`` (default 1024; ``0`` turns it off).

Greedy decoding is unchanged: the restored KV holds the same tokens' keys and values; only
the batching of the prefill differs.
"""

from __future__ import annotations

import ctypes
import os
from types import MethodType
from typing import Any

from agents.models.base import ProviderError

CACHE_ENV = "ICM_LLAMA_PREFIX_CACHE_MB"
DEFAULT_MB = 1024


def cache_megabytes() -> int:
    """The cache bound from the environment (0: off); a bad value is an error naming it."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if not value:
        return DEFAULT_MB
    try:
        number = int(value)
    except ValueError:
        raise ProviderError("bad_request", f"{CACHE_ENV}={value!r} is not an integer") from None
    if number < 0:
        raise ProviderError("bad_request", f"{CACHE_ENV} must be 0 or more, got {number}")
    return number


def _save_state_without_scores(self: Any) -> Any:
    """``Llama.save_state`` without the score rows (see the module docstring)."""
    import llama_cpp
    import numpy as np
    from llama_cpp.llama import LlamaState

    size = int(llama_cpp.llama_state_get_size(self._ctx.ctx))
    buffer = (ctypes.c_uint8 * size)()
    written = int(llama_cpp.llama_state_get_data(self._ctx.ctx, buffer, size))
    if written > size:
        raise RuntimeError("llama.cpp wrote more state than it sized")
    return LlamaState(
        scores=np.zeros((1, self._n_vocab), dtype=np.single),
        input_ids=self.input_ids.copy(),
        n_tokens=self.n_tokens,
        llama_state=bytes(memoryview(buffer)[:written]),
        llama_state_size=written,
        seed=self._seed,
    )


def attach_prefix_cache(llama: Any, megabytes: int | None = None) -> bool:
    """Give ``llama`` a bounded RAM cache of prompt states; False when it is turned off."""
    megabytes = cache_megabytes() if megabytes is None else megabytes
    if megabytes <= 0:
        return False
    from llama_cpp.llama_cache import LlamaRAMCache

    llama.save_state = MethodType(_save_state_without_scores, llama)
    llama.set_cache(LlamaRAMCache(capacity_bytes=megabytes << 20))
    return True
