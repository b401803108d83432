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


# ----------------------------------------------------------------------------- one stage's checks
_BAD_TEXTS = {
    # a description and context the checks reject in several ways at once
    "describer": 'A person stands outdoors. A person stands outdoors. {"description": 1}',
    "context_interpreter": "I'm sorry, but I cannot help with that request.",
    # pipeline talk, a repeated sentence, JSON residue and both labels in one argument
    "explainer": "As the reviewer's feedback says, the image is sexy. As the reviewer's feedback "
    'says, the image is sexy. The image is not sexy. {"explanation": "x"}',
}


def _final_states() -> list[dict[str, Any]]:
    """Final states of runs whose outputs fail checks of every stage (no retries, so the bad
    outputs stay), of a clean run, and of a sample with a given description."""
    good = plausible(POLICY, CATEGORY, RULES)
    states = []
    for bad in [None, *_BAD_TEXTS]:

        def script(ask: Ask, bad: str | None = bad) -> Any:
            if ask.role == bad == "describer":
                return {"description": _BAD_TEXTS[bad], "key_elements": ["a unicorn"]}
            if ask.role == bad == "context_interpreter":
                text = _BAD_TEXTS[bad]
                return dict.fromkeys(("setting", "atmosphere", "intent", "audience_cues"), text)
            if ask.role == bad == "explainer" and ask.stage == "explainer:R2":
                return {"explanation": _BAD_TEXTS[bad]}
            return good(ask)

        out, _ = _run(ScriptedLayer(script), stage_checks=False)
        states.append(out)
    spec = SampleSpec(
        sample_id="s2", run_id="run", policy="icm_sexy", rules=RULES, category=CATEGORY,
        given_description=_BAD_TEXTS["describer"],
    )  # fmt: skip
    graph = build_graph(
        PipelineDeps(
            layer=ScriptedLayer(good), policies={"icm_sexy": POLICY}, recorder=ListRecorder(),
            load_images=lambda spec: (), llm_critic=False, stage_checks=False,
        )
    )  # fmt: skip
    states.append(asyncio.run(graph.ainvoke(initial_state(spec, None, None))))
    return states


def test_a_stage_check_computes_only_its_stage_and_decides_as_the_whole_list_does() -> None:
    """``stage_check`` computes only the checks about its stage; they are those of the whole
    list (the passing ``no_pipeline_talk`` row aside, which reads every stage's texts), so it
    passes and fails exactly when the whole list filtered to the stage does, and a failing
    pass records the whole list's rows."""
    from graphs.pipeline import _deterministic, stage_check

    def contradictions(text: str, evidence: dict[str, Any]) -> list[str]:
        return [f"'{text[:10]}' contradicts the detector"] if "stands" in text else []

    def ungrounded(text: str, evidence: dict[str, Any], allowed: str) -> list[str]:
        return ["names a unicorn"] if "unicorn" in text or "sexy" in text else []

    states = _final_states()
    assert {s["status"] for s in states} == {"accepted", "rejected"}
    for finders in ({}, {"contradiction_finder": contradictions, "grounding_finder": ungrounded}):
        recorder = ListRecorder()
        deps = PipelineDeps(
            layer=ScriptedLayer(plausible(POLICY, CATEGORY, RULES)),
            policies={"icm_sexy": POLICY},
            recorder=recorder,
            load_images=lambda spec: (),
            **finders,  # type: ignore[arg-type]
        )
        failed_stages = set()
        for final in states:
            state = {**final, "evidence": {"ocr": []}} if finders else final
            whole = asyncio.run(_deterministic(state, deps))  # type: ignore[arg-type]
            for stage in deps.registry.names:
                ours = asyncio.run(_deterministic(state, deps, lambda s, t=stage: s == t))  # type: ignore[arg-type]
                filtered = [c for c in whole if c.stage == stage]

                def key(checks: list[Any]) -> list[Any]:
                    return [c for c in checks if (c.name, c.passed) != ("no_pipeline_talk", True)]

                assert {c.stage for c in ours} <= {stage}
                assert key(ours) == key(filtered), stage
                before = len(recorder.check_log)
                redo = asyncio.run(stage_check(stage, state, deps))  # type: ignore[arg-type]
                assert bool(redo) == (not all(c.passed for c in filtered)), stage
                if redo:
                    failed_stages.add(stage)
                    assert recorder.check_log[before][2] == filtered  # the whole list's rows
    assert failed_stages == set(_BAD_TEXTS)  # each stage with a bad text failed somewhere
