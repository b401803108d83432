"""A sample's chain of nodes run in order, as its compiled LangGraph graph runs them, without
LangGraph's machinery: what a run uses while nothing watches LangChain.

Why: LangGraph spends about 0.5 ms of CPU per step (a Pregel loop, channels, a checkpoint, a
callback manager and a runnable per node), a fifth of a generation run's CPU at 32 samples in
flight against a fast endpoint (issue 28). The generation graph uses none of what that buys
besides tracing: one node runs per step, each node names its successor (a ``Command``), every
state key is a plain last-value channel and there is no checkpointer. So the same node functions
are run here in a loop, with LangGraph's semantics for what this graph does:

- a node gets a fresh dict of the current values (its own changes to that dict are not kept);
- a node's ``Command.update`` sets the keys it names; keys outside the state schema are ignored;
- ``Command.goto`` names the next node, or ``END``;
- a graph that has run ``recursion_limit`` nodes without ending raises LangGraph's own
  :class:`GraphRecursionError`, with its message;
- the result holds the schema's keys that have a value, in the schema's order; input keys
  outside the schema are dropped;
- an error raised in a node propagates with LangGraph's note naming the node.

``tests/test_direct_graph.py`` runs samples through both and compares their final states and
every row they stored. Whenever LangSmith tracing or a LangChain callback hook is configured
(``agents/models/providers/langchain_watch.py``, the same test as for the default client),
the compiled LangGraph graph runs instead, so every node stays visible there; so it does with
``ICM_LANGGRAPH=1``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langgraph.errors import ErrorCode, GraphRecursionError, create_error_message
from langgraph.graph import END
from langgraph.types import Command

from agents.models.providers.langchain_watch import langchain_watchers

#: LangGraph's default when a config names no ``recursion_limit``
DEFAULT_RECURSION_LIMIT = 25
#: set to true to run every sample through the compiled LangGraph graph
FORCE_LANGGRAPH_ENV = "ICM_LANGGRAPH"

Node = Callable[[Any], Awaitable[Command[str]]]


def use_langgraph() -> bool:
    """Whether samples must run through the compiled LangGraph graph: asked for, or something
    watches LangChain (tracing sees a graph's runs only when LangGraph runs it)."""
    if (os.environ.get(FORCE_LANGGRAPH_ENV) or "").strip().lower() in ("1", "true", "yes"):
        return True
    return langchain_watchers() is not None


class DirectChain:
    """One chain's nodes, entered at ``start``; :meth:`ainvoke` as a compiled graph's."""

    def __init__(self, start: str, nodes: Mapping[str, Node], keys: Sequence[str]) -> None:
        self.start = start
        self.nodes = dict(nodes)
        self.keys = tuple(keys)  # the state schema's keys, in its order
        self._known = frozenset(self.keys)

    async def ainvoke(self, state: Mapping[str, Any], config: Any = None) -> dict[str, Any]:
        limit = (config or {}).get("recursion_limit", DEFAULT_RECURSION_LIMIT)
        values = {k: v for k, v in state.items() if k in self._known}
        node = self.start
        steps = 0
        while node != END:
            if steps >= limit:
                message = (
                    f"Recursion limit of {limit} reached without hitting a stop condition. "
                    "You can increase the limit by setting the `recursion_limit` config key."
                )
                raise GraphRecursionError(
                    create_error_message(
                        message=message, error_code=ErrorCode.GRAPH_RECURSION_LIMIT
                    )
                )
            try:
                command = await self.nodes[node](dict(values))
            except Exception as exc:
                # LangGraph's note on an error raised in a node (a failed sample's reason shows
                # it); its task ids are random, so is this one
                exc.add_note(f"During task with name '{node}' and id '{uuid.uuid4()}'")
                raise
            for key, value in (command.update or {}).items():
                if key in self._known:
                    values[key] = value
            node = command.goto  # type: ignore[assignment]
            steps += 1
        return {k: values[k] for k in self.keys if k in values}
