"""The generation graph's nodes one at a time, over constructed states and a scripted model
layer (no HTTP): the describer, the explainer per rule variant, the critic's decision and its
routing, including a policy whose rule ids are not R1..R4."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from scripted_layer import Ask, ListRecorder, ScriptedLayer, plausible, rule_of

from agents.critic import CriticDecision, RuleCheck, about_rule, decide, deterministic_checks
from agents.explainer import MissingCategoryError
from agents.stages import CRITIC, Target, default_registry
from data.policy import load_policy
from data.policy_models import Policy
from evaluators.consistency import Check, check_verdict_matches_rule
from graphs.pipeline import (
    PipelineDeps,
    after_critic,
    build_graph,
    critic_node,
    initial_state,
    next_after_stage,
    route,
    run_stage,
)
from graphs.state import SampleSpec, SampleState

POLICY = load_policy("icm_sexy")
CATEGORY = "middle_leg"  # R1: sexy, R2: not sexy
RULES = ("R1", "R2")
STAGES = default_registry()
#: passes the describer's checks for CATEGORY
DESCRIPTION = "A person stands outdoors in daylight; visible: middle leg bare skin."


def renamed_rules(policy: Policy, names: dict[str, str]) -> Policy:
    """The same policy with its rule variants under other ids (``kids`` instead of ``R1``)."""
    rules = {new: policy.rules[old] for old, new in names.items()}
    return policy.model_copy(update={"name": "renamed", "rules": rules})


def sample(**overrides: Any) -> SampleSpec:
    fields: dict[str, Any] = {
        "sample_id": "s1",
        "run_id": "run",
        "policy": "icm_sexy",
        "rules": RULES,
        "category": CATEGORY,
        **overrides,
    }
    return SampleSpec(**fields)


def deps_for(layer: ScriptedLayer, **overrides: Any) -> PipelineDeps:
    return PipelineDeps(
        layer=layer,
        policies={"icm_sexy": POLICY},
        recorder=ListRecorder(),
        load_images=lambda spec: (),
        **overrides,
    )


def state_for(spec: SampleSpec, **values: Any) -> SampleState:
    state = initial_state(spec, None, None)
    state.update(values)  # type: ignore[typeddict-item]
    return state


def explanation(policy: Policy, rule: str, verdict: str | None = None) -> dict[str, str]:
    expected = policy.verdict(CATEGORY, rule)
    verdict = verdict or expected
    return {
        "explanation": f"{policy.reason(CATEGORY, rule)} The image is {verdict}.",
        "verdict": verdict,
        "expected": expected,
        "question": f"Under rule {rule}?",
    }


# ----------------------------------------------------------------------------- describer
def test_describer_writes_its_declared_outputs_and_takes_its_feedback() -> None:
    layer = ScriptedLayer(plausible(POLICY, CATEGORY, RULES))
    deps = deps_for(layer)
    state = state_for(sample(), feedback={Target("describer"): "mention the legs"})
    update = asyncio.run(run_stage(STAGES.get("describer"), state, deps))

    assert update["description"].startswith("A person stands outdoors")
    assert update["key_elements"] == ["person", "daylight"]
    assert "category" not in update  # annotated: the describer proposes nothing
    assert update["feedback"] == {}  # consumed by this attempt
    assert update["attempts"] == {"describer": 1}
    assert update["tokens"] == 15 and update["cost_usd"] == pytest.approx(0.001)
    (call,) = layer.calls
    assert call.role == "describer" and call.stage == "describer" and call.attempt == 1
    assert "mention the legs" in call.user
    recorded = deps.recorder.stage_log  # type: ignore[attr-defined]
    assert recorded == [
        {"stage": "describer", "rule": None, "attempt": 1, "status": "ok",
         "feedback": "mention the legs"}
    ]  # fmt: skip


def test_describer_proposes_a_category_for_an_unannotated_image() -> None:
    layer = ScriptedLayer(plausible(POLICY, CATEGORY, RULES))
    state = state_for(sample(category=None, category_source="proposed"))
    update = asyncio.run(run_stage(STAGES.get("describer"), state, deps_for(layer)))
    assert update["category"] == CATEGORY and update["category_source"] == "proposed"
    assert "proposed_category" in layer.calls[0].schema.model_fields


def test_a_refused_describer_fails_the_sample_with_its_status() -> None:
    layer = ScriptedLayer(lambda ask: "refused")
    update = asyncio.run(run_stage(STAGES.get("describer"), state_for(sample()), deps_for(layer)))
    assert update["status"] == "failed"
    assert update["reasons"] == ["describer: refused: scripted refused"]
    assert "description" not in update


# ----------------------------------------------------------------------------- explainer
def test_explainer_asks_every_rule_variant_with_the_rule_tables_expectation() -> None:
    layer = ScriptedLayer(plausible(POLICY, CATEGORY, RULES))
    state = state_for(sample(), description="A person in daylight, legs visible.")
    update = asyncio.run(run_stage(STAGES.get("explainer"), state, deps_for(layer)))

    assert sorted(layer.stages()) == ["explainer:R1", "explainer:R2"]
    assert {r: e["verdict"] for r, e in update["explanations"].items()} == {
        "R1": "sexy",
        "R2": "not sexy",
    }
    assert all(e["expected"] == e["verdict"] for e in update["explanations"].values())
    assert update["tokens"] == 30  # both calls tallied


def test_explainer_redoes_only_the_rules_sent_back_each_with_its_own_feedback() -> None:
    layer = ScriptedLayer(plausible(POLICY, CATEGORY, RULES))
    kept = explanation(POLICY, "R1")
    state = state_for(
        sample(),
        description="A person in daylight.",
        explanations={"R1": kept, "R2": explanation(POLICY, "R2", verdict="sexy")},
        feedback={Target("explainer", "R2"): "under R2 the verdict must be 'not sexy'"},
        attempts={"explainer": 1, "critic": 1},
    )
    update = asyncio.run(run_stage(STAGES.get("explainer"), state, deps_for(layer)))

    assert layer.stages() == ["explainer:R2"]
    assert layer.calls[0].attempt == 2
    assert "must be 'not sexy'" in layer.calls[0].user
    assert update["explanations"]["R1"] is kept
    assert update["explanations"]["R2"]["verdict"] == "not sexy"
    assert update["feedback"] == {}


def test_explainer_records_every_rule_before_one_failure_ends_the_sample() -> None:
    base = plausible(POLICY, CATEGORY, RULES)

    def script(ask: Ask) -> Any:
        return "parse_failed" if ask.stage == "explainer:R1" else base(ask)

    deps = deps_for(ScriptedLayer(script))
    update = asyncio.run(run_stage(STAGES.get("explainer"), state_for(sample()), deps))
    assert update["status"] == "failed"
    assert update["reasons"][0].startswith("explainer R1: parse_failed")
    assert "explanations" not in update
    statuses = {r["rule"]: r["status"] for r in deps.recorder.stage_log}  # type: ignore[attr-defined]
    assert statuses == {"R1": "parse_failed", "R2": "ok"}


def test_explainer_without_a_category_says_so() -> None:
    layer = ScriptedLayer(plausible(POLICY, CATEGORY, RULES))
    state = state_for(sample(category=None), description="A person.")
    with pytest.raises(MissingCategoryError, match="s1: the explainer needs a category"):
        asyncio.run(run_stage(STAGES.get("explainer"), state, deps_for(layer)))
    assert layer.calls == []


def test_explainer_works_for_rule_ids_that_are_not_r_numbers() -> None:
    policy = renamed_rules(POLICY, {"R1": "kids", "R2": "adults_eu"})
    layer = ScriptedLayer(plausible(policy, CATEGORY, ("kids", "adults_eu")))
    spec = sample(policy="renamed", rules=("kids", "adults_eu"))
    deps = PipelineDeps(layer=layer, policies={"renamed": policy}, recorder=ListRecorder(),
                        load_images=lambda s: ())  # fmt: skip
    update = asyncio.run(run_stage(STAGES.get("explainer"), state_for(spec), deps))
    assert sorted(update["explanations"]) == ["adults_eu", "kids"]


# ----------------------------------------------------------------------------- critic: decide
def failed(stage: str, name: str = "x", rule: str | None = None) -> Check:
    check = Check(name, stage, False, f"{name} failed")
    return about_rule(rule, check) if rule else check


def test_decide_picks_the_earliest_failing_stage_in_registry_order() -> None:
    checks = [failed("qa_writer"), failed("explainer", rule="R2"), Check("ok", "describer", True)]
    decision = decide(checks)
    assert isinstance(decision, CriticDecision) and not decision.passed
    assert decision.stage == "explainer" and decision.rules == ["R2"]
    assert decision.feedback == "x failed"
    assert decide([Check("ok", "describer", True)]).passed


def test_decide_takes_rules_from_the_checks_not_their_wording() -> None:
    """Rule ids that are not R<n>: the old message parsing found none and redid every rule."""
    policy = renamed_rules(POLICY, {"R1": "kids", "R2": "adults_eu", "R3": "adults_asia"})
    state: dict[str, Any] = {
        "sample": sample(policy="renamed", rules=("kids", "adults_eu", "adults_asia")),
        "description": DESCRIPTION,
        "explanations": {
            "kids": explanation(policy, "kids"),
            "adults_eu": explanation(policy, "adults_eu", verdict="sexy"),
            "adults_asia": explanation(policy, "adults_asia"),
        },
    }
    checks = deterministic_checks(policy, state)
    decision = decide(checks)
    assert decision.stage == "explainer"
    assert decision.rules == ["adults_eu"]
    assert "under adults_eu the verdict must be 'not sexy'" in decision.feedback


def test_decide_names_a_stage_the_registry_does_not_know() -> None:
    with pytest.raises(ValueError, match="stage 'summariser', which is not registered"):
        decide([failed("summariser")])


def test_every_check_about_an_explanation_carries_its_rule() -> None:
    state: dict[str, Any] = {
        "sample": sample(),
        "description": "A person.",
        "explanations": {"R1": explanation(POLICY, "R1"), "R2": explanation(POLICY, "R2")},
    }
    explainer_checks = [c for c in deterministic_checks(POLICY, state) if c.stage == "explainer"]
    assert explainer_checks and all(isinstance(c, RuleCheck) for c in explainer_checks)
    assert {c.rule for c in explainer_checks} == {"R1", "R2"}  # type: ignore[attr-defined]
    check = check_verdict_matches_rule("R1", "sexy", "sexy")
    assert about_rule("R1", check).passed and about_rule("R1", check).name == check.name


# ----------------------------------------------------------------------------- critic: route
def test_route_sends_failing_rules_back_with_typed_feedback_and_resets_later_stages() -> None:
    deps = deps_for(ScriptedLayer(lambda ask: {}))
    state = state_for(sample(), qa={"yes_no": []}, qa_rule="R1")
    decision = decide([failed("explainer", "verdict_matches_rule", rule="R2")])
    update = route(decision, state, {"explainer": 1, "critic": 1}, deps)
    assert update["next_stage"] == "explainer"
    assert update["feedback"] == {Target("explainer", "R2"): "verdict_matches_rule failed"}
    assert update["qa"] is None and update["qa_rule"] is None  # rebuilt after the redo
    assert "explanations" not in update  # the other rule's explanation is kept
    assert update["reasons"] == ["explainer: verdict_matches_rule failed"]


def test_route_without_known_rules_redoes_every_rule_variant() -> None:
    deps = deps_for(ScriptedLayer(lambda ask: {}))
    update = route(decide([failed("explainer")]), state_for(sample()), {"explainer": 1}, deps)
    assert set(update["feedback"]) == {Target("explainer", "R1"), Target("explainer", "R2")}


def test_route_redoing_the_describer_resets_every_later_output() -> None:
    deps = deps_for(ScriptedLayer(lambda ask: {}))
    state = state_for(sample(), context="c", explanations={"R1": explanation(POLICY, "R1")})
    update = route(decide([failed("describer")]), state, {"describer": 1}, deps)
    assert update["next_stage"] == "describer"
    assert update["feedback"] == {Target("describer"): "x failed"}
    assert update["context"] is None and update["explanations"] == {} and update["qa"] is None


def test_route_sends_a_sample_with_a_given_description_to_the_first_stage_that_runs() -> None:
    deps = deps_for(ScriptedLayer(lambda ask: {}))
    spec = sample(given_description="Given text.")
    state = state_for(spec, explanations={"R1": explanation(POLICY, "R1")})
    update = route(decide([failed("describer")]), state, {"explainer": 1}, deps)
    assert update["next_stage"] == "explainer"
    assert set(update["feedback"]) == {Target("explainer", "R1"), Target("explainer", "R2")}
    assert "description" not in update  # the given description is never reset


def test_route_accepts_and_rejects_after_the_retry_budget() -> None:
    deps = deps_for(ScriptedLayer(lambda ask: {}), max_stage_retries=2)
    state = state_for(sample())
    accepted = route(decide([Check("ok", "describer", True)]), state, {}, deps)
    assert accepted == {"status": "accepted", "next_stage": None, "reasons": []}
    rejected = route(decide([failed("qa_writer")]), state, {"qa_writer": 3}, deps)
    assert rejected["status"] == "rejected" and rejected["reasons"] == ["qa_writer: x failed"]
    assert route(decide([failed("qa_writer")]), state, {"qa_writer": 2}, deps)["next_stage"] == (
        "qa_writer"
    )


def test_critic_node_routes_deterministic_failures_without_asking_the_llm() -> None:
    layer = ScriptedLayer(plausible(POLICY, CATEGORY, RULES))
    deps = deps_for(layer)
    state = state_for(
        sample(),
        description=DESCRIPTION,
        explanations={"R1": explanation(POLICY, "R1"), "R2": explanation(POLICY, "R2", "sexy")},
        attempts={"explainer": 1},
    )
    update = asyncio.run(critic_node(state, deps))
    assert layer.calls == []  # a provable failure is not shown to the LLM critic
    assert update["next_stage"] == "explainer"
    assert set(update["feedback"]) == {Target("explainer", "R2")}
    assert update["attempts"] == {"explainer": 1, CRITIC: 1}
    (attempt, source, checks) = deps.recorder.check_log[0]  # type: ignore[attr-defined]
    assert (attempt, source) == (1, "deterministic") and any(not c.passed for c in checks)


def test_critic_node_turns_the_llm_critiques_problem_into_a_redo() -> None:
    def script(ask: Ask) -> Any:
        assert ask.role == "critic"
        return {"consistent": False, "problems": [{"stage": "qa_writer", "issue": "repeats"}]}

    deps = deps_for(ScriptedLayer(script))
    good = {r: explanation(POLICY, r) for r in RULES}
    state = state_for(
        sample(),
        description=DESCRIPTION,
        explanations=good,
    )
    update = asyncio.run(critic_node(state, deps))
    assert update["next_stage"] == "qa_writer"
    assert update["feedback"] == {Target("qa_writer"): "repeats"}


# ----------------------------------------------------------------------------- routing
def test_routing_follows_the_registry_chain() -> None:
    plain = state_for(sample())
    image_chain = ("describer", "context_interpreter", "explainer", "qa_writer", CRITIC)
    assert STAGES.chain(False) == image_chain
    assert STAGES.chain(True) == ("explainer", "qa_writer", CRITIC)  # a given description
    graphs = build_graph(deps_for(ScriptedLayer(lambda ask: {}))).graphs
    assert set(graphs[True].nodes) == {"__start__", *STAGES.chain(True)}  # only its own stages
    assert after_critic({**plain, "next_stage": "explainer"}) == "explainer"  # type: ignore[typeddict-item]
    assert after_critic({**plain, "status": "accepted"}) == "__end__"  # type: ignore[typeddict-item]
    assert next_after_stage(plain, "context_interpreter") == "context_interpreter"
    for ended in ("failed", "rejected"):  # a stage's failure (or its own rejection) ends it
        ended_state = {**plain, "status": ended}
        assert next_after_stage(ended_state, "context_interpreter") == "__end__"  # type: ignore[arg-type]
    assert rule_of(Ask("explainer", "explainer:R2", 1, dict, [], None), RULES) == "R2"  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- table verdicts
def test_the_rule_table_fixes_the_verdict_and_code_writes_the_conclusion() -> None:
    layer = ScriptedLayer(plausible(POLICY, CATEGORY, RULES))
    update = asyncio.run(run_stage(STAGES.get("explainer"), state_for(sample()), deps_for(layer)))
    assert all("verdict" not in c.schema.model_fields for c in layer.calls)  # argument only
    assert "Do not end with a verdict sentence of your own" in layer.calls[0].messages[0].text
    r1, r2 = update["explanations"]["R1"], update["explanations"]["R2"]
    assert (r1["verdict"], r2["verdict"]) == ("sexy", "not sexy")
    assert r1["verdict_source"] == r2["verdict_source"] == "rule_table"
    assert r1["explanation"] == r1["argument"] + " Conclusion: The picture is sexy."
    assert r2["explanation"].endswith("Conclusion: The picture is not sexy.")


def test_an_argument_for_another_label_is_sent_back_though_the_verdict_is_fixed() -> None:
    def script(ask: Ask) -> Any:  # R2 (table: "not sexy") argued as "sexy"
        return {"explanation": "Her pose and the bare leg decide it for this audience. The image "
                "is sexy."}  # fmt: skip

    layer = ScriptedLayer(script)
    spec = sample(rules=("R2",))
    update = asyncio.run(run_stage(STAGES.get("explainer"), state_for(spec), deps_for(layer)))
    item = update["explanations"]["R2"]
    assert item["verdict"] == "not sexy"  # the table's, whatever the model argued
    state: dict[str, Any] = {
        "sample": spec,
        "description": DESCRIPTION,
        "explanations": {"R2": item},
    }
    decision = decide(deterministic_checks(POLICY, state))
    assert decision.stage == "explainer" and decision.rules == ["R2"]
    assert decision.feedback == ("under R2 the verdict must be 'not sexy', not 'sexy'")


def test_an_argument_without_a_verdict_sentence_passes() -> None:
    item = {"argument": "The audience and the visible attributes decide the case here.",
            "explanation": "... Conclusion: The picture is sexy.", "verdict": "sexy",
            "verdict_source": "rule_table", "expected": "sexy", "question": "?"}  # fmt: skip
    state: dict[str, Any] = {"sample": sample(rules=("R1",)), "description": "x",
                             "explanations": {"R1": item}}  # fmt: skip
    explainer_checks = [c for c in deterministic_checks(POLICY, state) if c.stage == "explainer"]
    assert explainer_checks and all(c.passed for c in explainer_checks)


def test_a_proposed_category_keeps_a_model_verdict_marked_as_such() -> None:
    def script(ask: Ask) -> Any:  # the model's verdict differs from the table's under R1
        return {"explanation": "The audience decides it; the leg is covered. The image is not "
                "sexy.", "verdict": "not sexy"}  # fmt: skip

    layer = ScriptedLayer(script)
    spec = sample(category=None, category_source="proposed", rules=("R1",))
    state = state_for(spec, category=CATEGORY, category_source="proposed")
    update = asyncio.run(run_stage(STAGES.get("explainer"), state, deps_for(layer)))
    assert "verdict" in layer.calls[0].schema.model_fields
    item = update["explanations"]["R1"]
    assert (item["verdict"], item["verdict_source"], item["expected"]) == (
        "not sexy", "model", "sexy"
    )  # fmt: skip
    assert item["explanation"].endswith("Conclusion: The picture is not sexy.")
    checked = {**state, "description": DESCRIPTION, "explanations": {"R1": item}}
    decision = decide(deterministic_checks(POLICY, checked))  # type: ignore[arg-type]
    assert "under R1 the verdict must be 'sexy', not 'not sexy'" in decision.feedback
