"""Which client sends an OpenAI-style role's requests when its settings name none.

The default is ``raw`` (aiohttp, no SDK: the least CPU per call, so a run reaches the endpoint's
limit at high concurrency; benchmarks/bench_generate.py, docs/throughput.md), except where
someone is watching LangChain: LangSmith tracing switched on (``LANGSMITH_TRACING`` /
``LANGCHAIN_TRACING_V2`` and their variants, or a ``tracing_context``/``tracing_v2_enabled``
block, or a LangSmith run tree around the call) or a LangChain callback hook configured (a
handler registered with ``register_configure_hook``, by its context variable or its environment
variable). Then the calls go through LangChain's ChatOpenAI, so every one of them shows up
there. A role's ``client`` setting always wins.
"""

from __future__ import annotations

import os

#: environment variables that switch LangSmith tracing on (langsmith reads both prefixes)
TRACING_VARIABLES = (
    "LANGSMITH_TRACING",
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_TRACING",
)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def langchain_watchers() -> str | None:
    """Why the calls must go through LangChain (a short reason), or None when nothing watches.

    Read at each client's construction (not cached: langsmith's own environment lookup is, and
    a process may switch tracing on between runs)."""
    for name in TRACING_VARIABLES:
        if _truthy(os.environ.get(name)):
            return f"{name} is set"
    try:  # the tracing contexts and callback hooks live in langchain-core and langsmith
        from langchain_core.tracers.context import _configure_hooks, tracing_v2_callback_var
        from langsmith.run_helpers import get_current_run_tree, get_tracing_context
    except ImportError:  # pragma: no cover - both come with langchain-openai
        return None
    if get_tracing_context().get("enabled") or get_current_run_tree() is not None:
        return "a LangSmith tracing context is active"
    if tracing_v2_callback_var.get() is not None:
        return "LangChain tracing (tracing_v2_enabled) is active"
    for hook in list(_configure_hooks):
        try:  # langchain-core's own registry (context var, inheritable, handler, env var)
            var, _inheritable, handler, env_var = hook
            if var is tracing_v2_callback_var:
                continue
            active = var.get() is not None
        except (TypeError, ValueError, AttributeError):  # a shape this code does not know
            continue
        if active or (env_var is not None and _truthy(os.environ.get(env_var))):
            named = getattr(handler, "__name__", None) or var.name
            return f"a LangChain callback hook ({named}) is configured"
    return None


def choose_client(setting: str | None, default: str) -> str:
    """The role's ``client`` setting, else ``langchain`` when something watches LangChain
    (:func:`langchain_watchers`), else ``default``."""
    if setting is not None:
        return setting
    return "langchain" if langchain_watchers() else default
