"""The stage registry: the built-in stages, what derives from it, and a toy stage added through
the registry alone and run through the whole graph (scripted layer, no HTTP)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from scripted_layer import Ask, ListRecorder, ScriptedLayer, plausible

from agents.critic import critique_schema
from agents.models.base import Message
from agents.models.result import CallResult
from agents.models.settings import ROLES, ModelConfig
from agents.stages import CRITIC, Inputs, StageCall, StageRegistry, StageSpec, default_registry
from data.policy import load_policy
from graphs.generate import HELP
from graphs.pipeline import PipelineDeps, build_graph, generation_roles, initial_state
from graphs.state import SampleSpec

POLICY = load_policy("icm_sexy")
CATEGORY = "middle_leg"
RULES = ("R1", "R2")
BUILTIN = ("describer", "context_interpreter", "explainer", "qa_writer")


def test_the_builtin_stages_in_chain_order_and_what_derives_from_them() -> None:
    registry = default_registry()
    assert registry.names == BUILTIN
    assert [s.name for s in registry if s.per_rule] == ["explainer"]
    assert [s.name for s in registry if s.describes_image] == ["describer", "context_interpreter"]
    # the model layer's roles: ours, then the paper pipeline's (--preset paper)
    paper = ("paper_answers", "paper_qa", "paper_mc")
    assert tuple(ROLES) == (*BUILTIN, "critic", "judge", "moderator", "rule_drafter", *paper)
    assert generation_roles() == (*BUILTIN, "critic")
    chain = (
        "describer -> context interpreter -> explainer (per rule variant) -> Q-A writer -> critic"
    )
    assert registry.help_chain() == chain and chain in HELP
    problem = critique_schema().model_json_schema()["$defs"]["CriticProblem"]
    assert problem["properties"]["stage"]["enum"] == list(BUILTIN)
    for spec in registry:  # every stage's two templates exist
        system, user = spec.templates
        assert system.name == f"{spec.name}.system" and user.name == f"{spec.name}.user"


def test_an_unregistered_role_is_refused_by_the_model_configuration() -> None:
    with pytest.raises(ValueError, match="unknown role 'rule_decomposer'"):
        ModelConfig.from_args(["rule_decomposer=local:smollm2"])


def _spec(name: str, order: int, **overrides: Any) -> StageSpec:
    fields: dict[str, Any] = {
        "name": name,
        "order": order,
        "reads": (),
        "writes": {f"{name}_out": None},
        "schema": lambda call, inputs: BaseModel,
        "ask": _never,
        "write": lambda value, call, inputs: {},
        "summary": name,
        **overrides,
    }
    return StageSpec(**fields)


async def _never(call: StageCall, inputs: Inputs) -> CallResult[Any]:
    raise AssertionError("not called")


def test_the_registry_refuses_ambiguous_declarations() -> None:
    registry = default_registry()
    with pytest.raises(ValueError, match="'describer' is registered twice"):
        registry.extended(_spec("describer", 99))
    with pytest.raises(ValueError, match="'explainer' and 'late' share order 30"):
        registry.extended(_spec("late", 30))
    with pytest.raises(ValueError, match="per-rule stage writes exactly one key"):
        _spec("multi", 50, per_rule=True, writes={"a": {}, "b": {}})
    with pytest.raises(ValueError, match="reserved for the critic role"):
        _spec(CRITIC, 50)
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        registry.get("nope")
    assert registry.names == BUILTIN  # extended() never changes the default registry


# ----------------------------------------------------------------------------- a toy stage
class Tags(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str] = Field(min_length=1, max_length=4)


async def ask_tagger(call: StageCall, inputs: Inputs) -> CallResult[Tags]:
    rules = ", ".join(sorted(inputs["explanations"]))
    text = f"Tag this description: {inputs['description']} (explained under {rules})"
    if call.feedback:
        text += f"\nFix: {call.feedback}"
    messages = [Message("system", "You are the tagger."), Message("user", text)]
    return await call.layer.call(
        role="tagger", schema=Tags, messages=messages, sample_id=call.sample_id,
        stage="tagger", attempt=call.attempt,
    )  # fmt: skip


TAGGER = StageSpec(
    name="tagger",
    order=35,  # after the explainer, before the Q-A writer
    reads=("description", "explanations"),
    writes={"tags": None},
    schema=lambda call, inputs: Tags,
    ask=ask_tagger,
    write=lambda value, call, inputs: {"tags": list(value.tags)},
    summary="tagger",
)


def test_a_stage_added_through_the_registry_runs_in_the_graph_and_is_sent_back() -> None:
    registry: StageRegistry = default_registry().extended(TAGGER)
    assert registry.names == ("describer", "context_interpreter", "explainer", "tagger",
                              "qa_writer")  # fmt: skip
    assert "explainer (per rule variant) -> tagger -> Q-A writer" in registry.help_chain()
    base = plausible(POLICY, CATEGORY, RULES)
    critic_calls: list[Ask] = []

    def script(ask: Ask) -> Any:
        if ask.role == "tagger":
            return {"tags": ["person", "fixed" if "Fix:" in ask.user else "daylight"]}
        if ask.role == "critic":
            critic_calls.append(ask)
            if len(critic_calls) == 1:  # the LLM critic may name the new stage
                problem = {"stage": "tagger", "issue": "tags miss the legs"}
                return {"consistent": False, "problems": [problem]}
            return {"consistent": True, "problems": []}
        return base(ask)

    layer = ScriptedLayer(script)
    recorder = ListRecorder()
    deps = PipelineDeps(layer=layer, policies={"icm_sexy": POLICY}, recorder=recorder,
                        load_images=lambda s: (), registry=registry)  # fmt: skip
    spec = SampleSpec(sample_id="toy", run_id="run", policy="icm_sexy", rules=RULES,
                      category=CATEGORY)  # fmt: skip
    graph = build_graph(deps)
    out = asyncio.run(graph.ainvoke(initial_state(spec, None, None, registry)))

    assert out["status"] == "accepted", out.get("reasons")
    assert out["tags"] == ["person", "fixed"]
    stages = layer.stages()
    # tagger ran after both explanations and before the Q-A writer; the critic's objection sent
    # it back once with its words, and the Q-A writer after it was rebuilt.
    assert stages.index("tagger") > max(stages.index("explainer:R1"), stages.index("explainer:R2"))
    assert stages.index("tagger") < stages.index("qa_writer")
    assert stages.count("tagger") == 2 and stages.count("qa_writer") == 2
    assert stages.count("explainer:R1") == 1 and stages.count("describer") == 1
    retry = [c for c in layer.calls if c.role == "tagger"][1]
    assert retry.attempt == 2 and "Fix: tags miss the legs" in retry.user
    enum = critic_calls[0].schema.model_json_schema()["$defs"]["CriticProblem"]["properties"]
    assert "tagger" in enum["stage"]["enum"]
    tagger_rows = [r for r in recorder.stage_log if r["stage"] == "tagger"]
    assert [(r["attempt"], r["feedback"]) for r in tagger_rows] == [
        (1, None), (2, "tags miss the legs")
    ]  # fmt: skip
