"""Issue 28: a sample's chain run without LangGraph (graphs/direct_graph.py) ends in the same
state, after the same calls and the same stored rows, as the compiled LangGraph graph; LangGraph
runs instead whenever LangChain is watched or ``ICM_LANGGRAPH`` asks for it."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from scripted_layer import Ask, ListRecorder, ScriptedLayer, plausible

from data.policy import load_policy
from graphs.direct_graph import FORCE_LANGGRAPH_ENV, DirectChain
from graphs.pipeline import PipelineDeps, build_graph, initial_state
from graphs.state import SampleSpec

POLICY = load_policy("icm_sexy")
CATEGORY = "middle_leg"
RULES = ("R1", "R2")


def _script(round_trip: bool) -> Any:
    base = plausible(POLICY, CATEGORY, RULES)
    critic_calls: list[Ask] = []

    def script(ask: Ask) -> Any:
        if ask.role == "critic" and round_trip:
            critic_calls.append(ask)
            if len(critic_calls) == 1:  # send the Q-A writer back once
                problem = {"stage": "qa_writer", "issue": "the questions repeat"}
                return {"consistent": False, "problems": [problem]}
        return base(ask)

    return script


def _run(direct: bool, round_trip: bool, description: str | None) -> tuple[Any, ...]:
    layer = ScriptedLayer(_script(round_trip))
    recorder = ListRecorder()
    deps = PipelineDeps(layer=layer, policies={"icm_sexy": POLICY}, recorder=recorder,
                        load_images=lambda s: ())  # fmt: skip
    graph = build_graph(deps)
    assert graph.direct is not None  # nothing watches LangChain in the tests
    if not direct:
        graph.direct = None  # the compiled LangGraph graphs
    spec = SampleSpec(sample_id="s1", run_id="run", policy="icm_sexy", rules=RULES,
                      category=CATEGORY, given_description=description)  # fmt: skip
    out = asyncio.run(graph.ainvoke(initial_state(spec, None, None), {"recursion_limit": 200}))
    calls = [(c.role, c.stage, c.attempt, c.user) for c in layer.calls]
    return out, calls, recorder.stage_log, recorder.check_log


@pytest.mark.parametrize("round_trip", [False, True])
@pytest.mark.parametrize("description", [None, "A person in shorts stands on a beach."])
def test_a_sample_ends_the_same_with_and_without_langgraph(
    round_trip: bool, description: str | None
) -> None:
    with_langgraph = _run(direct=False, round_trip=round_trip, description=description)
    without = _run(direct=True, round_trip=round_trip, description=description)
    assert without[0] == with_langgraph[0]
    assert list(without[0]) == list(with_langgraph[0])  # the same keys, in the same order
    assert without[1:] == with_langgraph[1:]  # the same calls, stage rows and check rows
    assert with_langgraph[0]["status"] in ("accepted", "rejected")
    if round_trip:
        assert [c[1] for c in without[1]].count("qa_writer") == 2


class _Toy(TypedDict, total=False):
    n: int
    seen: Any


def _toy_nodes(runs: list[str]) -> dict[str, Any]:
    async def loop(state: dict[str, Any]) -> Command[str]:
        runs.append("loop")
        return Command(update={"n": state["n"] + 1, "unknown": 1}, goto="loop")

    async def once(state: dict[str, Any]) -> Command[str]:
        runs.append("once")
        state["n"] = 99  # a node's change to its own copy is not kept
        return Command(update={"seen": sorted(state), "not_in_schema": 2}, goto=END)

    return {"loop": loop, "once": once}


def _langgraph(start: str, nodes: dict[str, Any]) -> Any:
    graph: Any = StateGraph(_Toy)
    graph.add_node(start, nodes[start])
    graph.add_edge(START, start)
    return graph.compile()


def test_the_recursion_limit_is_langgraphs_with_its_error() -> None:
    runs_lg: list[str] = []
    runs_direct: list[str] = []
    config = {"recursion_limit": 3}
    with pytest.raises(GraphRecursionError) as from_langgraph:
        asyncio.run(_langgraph("loop", _toy_nodes(runs_lg)).ainvoke({"n": 0}, config))
    chain = DirectChain("loop", _toy_nodes(runs_direct), ["n", "seen"])
    with pytest.raises(GraphRecursionError) as direct:
        asyncio.run(chain.ainvoke({"n": 0}, config))
    assert str(direct.value) == str(from_langgraph.value)
    assert runs_direct == runs_lg == ["loop"] * 3


def test_updates_and_inputs_outside_the_schema_and_a_nodes_own_changes() -> None:
    state = {"n": 1, "extra": "dropped"}
    from_langgraph = asyncio.run(_langgraph("once", _toy_nodes([])).ainvoke(dict(state)))
    direct = asyncio.run(DirectChain("once", _toy_nodes([]), ["n", "seen"]).ainvoke(dict(state)))
    assert direct == from_langgraph == {"n": 1, "seen": ["n"]}


def test_langgraph_runs_when_langchain_is_watched_or_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deps = PipelineDeps(layer=ScriptedLayer(lambda ask: {}), policies={"icm_sexy": POLICY},
                        recorder=ListRecorder(), load_images=lambda s: ())  # fmt: skip
    assert build_graph(deps).direct is not None
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    assert build_graph(deps).direct is None  # every node a traced run
    monkeypatch.delenv("LANGSMITH_TRACING")
    monkeypatch.setenv(FORCE_LANGGRAPH_ENV, "1")
    assert build_graph(deps).direct is None


def test_an_error_in_a_node_carries_langgraphs_note_naming_it() -> None:
    import re
    import traceback

    async def boom(state: dict[str, Any]) -> Command[str]:
        raise ValueError("boom")

    def reason(graph: Any) -> str:
        try:
            asyncio.run(graph.ainvoke({"n": 1}))
        except ValueError as exc:
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return re.sub(r"id '[0-9a-f-]{36}'", "id '<uuid>'", text)
        raise AssertionError("no error")

    direct = reason(DirectChain("boom", {"boom": boom}, ["n"]))
    assert direct == reason(_langgraph("boom", {"boom": boom}))
    assert direct == "ValueError: boom\nDuring task with name 'boom' and id '<uuid>'"
