"""Each stage is checked as soon as it has written (``stage_checks``): a description the
checks reject is redone before the context interpreter, the explainers and the Q-A writer are
asked, so none of their calls is spent on a text that is thrown away. Runs the compiled graph
over a scripted model layer (no HTTP, no model)."""

from __future__ import annotations

import asyncio
from typing import Any

from scripted_layer import Ask, ListRecorder, ScriptedLayer, plausible

from agents.stages import CRITIC
from data.policy import load_policy
from graphs.config import GenerateConfig
from graphs.pipeline import PipelineDeps, build_graph, initial_state
from graphs.state import SampleSpec

POLICY = load_policy("icm_sexy")
CATEGORY = "middle_leg"
RULES = ("R1", "R2")
#: names none of the annotated attributes: fails ``attributes_mentioned`` (a describer check)
VAGUE = "A person stands outdoors in daylight next to a low wall."


def _script(first_description: str | None = VAGUE, first_r2: str | None = None) -> Any:
    good = plausible(POLICY, CATEGORY, RULES)

    def script(ask: Ask) -> Any:
        if ask.role == "describer" and ask.attempt == 1 and first_description:
            return {"description": first_description, "key_elements": ["person", "daylight"]}
        if ask.stage == "explainer:R2" and ask.attempt == 1 and first_r2:
            return {"explanation": first_r2}
        return good(ask)

    return script


def _run(layer: ScriptedLayer, **deps: Any) -> tuple[dict[str, Any], ListRecorder]:
    recorder = ListRecorder()
    graph = build_graph(
        PipelineDeps(
            layer=layer,
            policies={"icm_sexy": POLICY},
            recorder=recorder,
            load_images=lambda spec: (),
            llm_critic=False,
            max_stage_retries=1,
            **deps,
        )
    )
    spec = SampleSpec(
        sample_id="s1", run_id="run", policy="icm_sexy", rules=RULES, category=CATEGORY
    )
    out = asyncio.run(graph.ainvoke(initial_state(spec, None, None), {"recursion_limit": 50}))
    return out, recorder


def test_a_failing_description_is_redone_before_any_later_stage_is_asked() -> None:
    layer = ScriptedLayer(_script())
    out, recorder = _run(layer)
    assert out["status"] == "accepted"
    assert layer.stages() == [
        "describer", "describer", "context_interpreter", "explainer:R1", "explainer:R2",
        "qa_writer",
    ]  # fmt: skip
    attempt, source, checks = recorder.check_log[0]
    assert (attempt, source) == (1, "stage_check")
    assert {c.stage for c in checks} == {"describer"}  # only the stage that wrote
    failed = [c for c in checks if not c.passed]
    assert [c.name for c in failed] == ["attributes_mentioned"]
    # the retry was given the check's words, and the critic's final pass is the second
    assert "never mentions" in layer.calls[1].user
    assert [(a, s) for a, s, _ in recorder.check_log] == [(1, "stage_check"), (2, "deterministic")]
    assert out["attempts"] == {
        "describer": 2, "context_interpreter": 1, "explainer": 1, "qa_writer": 1, CRITIC: 2
    }  # fmt: skip


def test_without_stage_checks_the_whole_chain_runs_before_the_critic_sends_it_back() -> None:
    layer = ScriptedLayer(_script())
    out, _ = _run(layer, stage_checks=False)
    assert out["status"] == "accepted"
    chain = ["describer", "context_interpreter", "explainer:R1", "explainer:R2", "qa_writer"]
    assert layer.stages() == chain + chain  # everything after the description asked twice


def test_a_failing_rule_is_redone_alone_before_the_qa_writer() -> None:
    wrong = "The audience and the visible attributes decide the case. The image is sexy."
    layer = ScriptedLayer(_script(first_description=None, first_r2=wrong))
    out, _ = _run(layer)
    assert out["status"] == "accepted"
    assert layer.stages() == [
        "describer", "context_interpreter", "explainer:R1", "explainer:R2", "explainer:R2",
        "qa_writer",
    ]  # fmt: skip
    assert out["explanations"]["R1"] and out["explanations"]["R2"]["argument"] != wrong


def test_a_stage_that_fails_its_checks_again_rejects_the_sample_at_once() -> None:
    def script(ask: Ask) -> Any:
        if ask.role == "describer":
            return {"description": VAGUE, "key_elements": ["person", "daylight"]}
        raise AssertionError(f"{ask.stage} asked after a rejected description")

    out, _ = _run(ScriptedLayer(script))
    assert out["status"] == "rejected"
    assert any("never mentions" in r for r in out["reasons"])


def test_the_setting_is_on_by_default_and_off_only_changes_the_run_identity() -> None:
    assert GenerateConfig().stage_checks is True
    assert "stage_checks" not in GenerateConfig().identity()
    assert GenerateConfig(stage_checks=False).identity()["stage_checks"] is False
