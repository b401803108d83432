"""The generation graph: describer -> context interpreter -> explainer -> Q-A writer -> critic,
with the critic's conditional edges sending a failing stage back for another attempt.

One compiled graph serves every sample; each sample runs as its own thread of state. Retries
are edges, not loops in code: the critic writes ``next_stage`` and the router follows it, so
LangGraph's trace of the run shows each retry as a step. Attempts are bounded per stage; a
stage that still fails after ``max_stage_retries`` retries ends the sample as ``rejected`` with
the critic's reasons.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langgraph.graph import END, START, StateGraph

from agents.context_interpreter import context_text, interpret
from agents.critic import (
    ContradictionFinder,
    critique_to_checks,
    decide,
    deterministic_checks,
    llm_critique,
)
from agents.describer import describe
from agents.explainer import explain, rule_question
from agents.models.base import ImageInput
from agents.qa_writer import QACounts, write_qa
from agents.role_call import LayerLike
from agents.schemas import FULL, Lengths
from data.policy_models import Policy
from data.store import utcnow
from data.store.batch import BatchWriter
from evaluators.consistency import Check
from graphs.state import SampleSpec, SampleState

RECURSION_LIMIT = 200
STAGES_BEFORE_EXPLAINER = ("describer", "context_interpreter")
#: the roles a generation run asks models (the critic only when its LLM critique is on)
GENERATION_ROLES = ("describer", "context_interpreter", "explainer", "qa_writer", "critic")


class StageRecorder(Protocol):
    def stage(self, state: SampleState, stage: str, rule: str | None, attempt: int,
              result: Any, feedback: str | None) -> None: ...  # fmt: skip
    def checks(self, state: SampleState, attempt: int, checks: Sequence[Check],
               source: str) -> None: ...  # fmt: skip


@dataclass
class StoreRecorder:
    """Queues each stage result for the run's next batched commit (every fraction of a second).

    Row ids are derived from (sample, stage, rule, attempt): a sample re-run after a crash
    overwrites the rows of its interrupted attempt instead of adding duplicates.
    """

    writer: BatchWriter

    @staticmethod
    def _id(*parts: object) -> str:
        return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]

    def stage(self, state, stage, rule, attempt, result, feedback) -> None:
        sample = state["sample"]
        value = getattr(result, "value", None)
        self.writer.add(
            "stage_outputs",
            [
                {
                    "output_id": self._id(sample.sample_id, stage, rule, attempt),
                    "sample_id": sample.sample_id,
                    "run_id": sample.run_id,
                    "stage": stage,
                    "rule_variant": rule,
                    "attempt": attempt,
                    "status": result.status,
                    # pydantic's own serializer: the same JSON as the call's parsed_json trace
                    "output_json": value.model_dump_json() if value is not None else None,
                    "raw_text": result.raw_text,
                    "feedback": feedback,
                    "call_id": result.call_id,
                    "created_at": utcnow(),
                }
            ],
            on_conflict="replace",
            key="output_id",
        )

    def checks(self, state, attempt, checks, source) -> None:
        sample = state["sample"]
        now = utcnow()
        rows = [
            {
                "critique_id": self._id(sample.sample_id, attempt, source, n, c.name, c.stage),
                "sample_id": sample.sample_id,
                "run_id": sample.run_id,
                "stage": c.stage,
                "attempt": attempt,
                "check_name": c.name,
                "source": source,
                "passed": c.passed,
                "message": c.message or None,
                "created_at": now,
            }
            for n, c in enumerate(checks)
        ]
        self.writer.add("critiques", rows, on_conflict="replace", key="critique_id")


@dataclass
class PipelineDeps:
    """Everything the nodes need besides the sample's state."""

    layer: LayerLike
    policies: dict[str, Policy]
    recorder: StageRecorder
    load_images: Callable[[SampleSpec], Sequence[ImageInput]]
    qa_counts: QACounts = field(default_factory=QACounts)
    max_stage_retries: int = 2
    llm_critic: bool = True
    contradiction_finder: ContradictionFinder | None = None
    lengths: Lengths = FULL


def _bump(state: SampleState, stage: str) -> tuple[int, dict[str, int]]:
    attempts = dict(state.get("attempts") or {})
    attempts[stage] = attempts.get(stage, 0) + 1
    return attempts[stage], attempts


def _tally(state: SampleState, results: Sequence[Any]) -> dict[str, Any]:
    tokens = state.get("tokens", 0) + sum(
        (r.input_tokens or 0) + (r.output_tokens or 0) for r in results
    )
    cost = state.get("cost_usd", 0.0) + sum(r.cost_usd or 0.0 for r in results)
    return {"tokens": tokens, "cost_usd": cost}


def _begin(
    state: SampleState, stage: str
) -> tuple[int, dict[str, int], dict[str, str], str | None]:
    """A stage's attempt number, the new attempt counts, and the feedback meant for it
    (removed from the sample's pending feedback, which is returned too)."""
    attempt, attempts = _bump(state, stage)
    feedback = dict(state.get("feedback") or {})
    return attempt, attempts, feedback, feedback.pop(stage, None)


def _progress(
    state: SampleState, attempts: dict[str, int], feedback: dict[str, str], results: Sequence[Any]
) -> dict[str, Any]:
    """The update every stage returns: attempts, remaining feedback, tokens and cost so far."""
    return {"attempts": attempts, "feedback": feedback, **_tally(state, results)}


def _failure(stage: str, result: Any) -> dict[str, Any]:
    detail = result.error or (result.raw_text or "")[:200]
    return {"status": "failed", "reasons": [f"{stage}: {result.status}: {detail}"]}


def build_graph(deps: PipelineDeps) -> Any:
    """Compile the generation graph over ``deps``."""

    def policy_of(state: SampleState) -> Policy:
        return deps.policies[state["sample"].policy]

    async def run_stage(
        state: SampleState,
        stage: str,
        ask: Callable[[int, str | None], Awaitable[Any]],
        rule: str | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """One attempt of a single-call stage: ask (attempt, feedback), record, tally.

        Returns the state update and the call's result; a failed call already has its
        failure in the update.
        """
        attempt, attempts, feedback, given = _begin(state, stage)
        result = await ask(attempt, given)
        deps.recorder.stage(state, stage, rule, attempt, result, given)
        update = _progress(state, attempts, feedback, [result])
        if result.status != "ok":
            update |= _failure(stage, result)
        return update, result

    async def describer(state: SampleState) -> dict[str, Any]:
        sample = state["sample"]
        update, result = await run_stage(
            state,
            "describer",
            lambda attempt, given: describe(
                deps.layer,
                policy_of(state),
                category=sample.category,
                evidence_text=state.get("evidence_text"),
                images=deps.load_images(sample),
                feedback=given,
                sample_id=sample.sample_id,
                attempt=attempt,
                lengths=deps.lengths,
            ),
        )
        if result.status != "ok":
            return update
        value = result.value
        update |= {"description": value.description, "key_elements": list(value.key_elements)}
        if sample.category is None:
            update |= {"category": value.proposed_category, "category_source": "proposed"}
        return update

    async def context_interpreter(state: SampleState) -> dict[str, Any]:
        sample = state["sample"]
        update, result = await run_stage(
            state,
            "context_interpreter",
            lambda attempt, given: interpret(
                deps.layer,
                policy_of(state),
                category=state.get("category"),
                description=state["description"] or "",
                feedback=given,
                sample_id=sample.sample_id,
                attempt=attempt,
                lengths=deps.lengths,
            ),
        )
        if result.status != "ok":
            return update
        return update | {"context": context_text(result.value.model_dump())}

    async def explainer(state: SampleState) -> dict[str, Any]:
        sample = state["sample"]
        policy = policy_of(state)
        attempt, attempts = _bump(state, "explainer")
        feedback = dict(state.get("feedback") or {})
        explanations = dict(state.get("explanations") or {})
        retry_rules = [r for r in sample.rules if f"explainer:{r}" in feedback]
        rules = (
            retry_rules or [r for r in sample.rules if r not in explanations] or list(sample.rules)
        )
        category = state["category"]
        assert category is not None, "the describer sets the category before the explainer runs"
        notes = {rule: feedback.pop(f"explainer:{rule}", None) for rule in rules}
        results = await asyncio.gather(
            *(
                explain(
                    deps.layer,
                    policy,
                    rule=rule,
                    category=category,
                    description=state["description"] or "",
                    context=state.get("context"),
                    feedback=notes[rule],
                    sample_id=sample.sample_id,
                    attempt=attempt,
                    lengths=deps.lengths,
                )
                for rule in rules
            )
        )
        update = _progress(state, attempts, feedback, results)
        for rule, result in zip(rules, results, strict=True):
            deps.recorder.stage(state, "explainer", rule, attempt, result, notes[rule])
            if result.status != "ok":
                return update | _failure(f"explainer {rule}", result)
            explanations[rule] = {
                "explanation": result.value.explanation,
                "verdict": result.value.verdict,
                "expected": policy.verdict(category, rule),
                "question": rule_question(policy, rule),
            }
        return update | {"explanations": explanations}

    async def qa_writer(state: SampleState) -> dict[str, Any]:
        sample = state["sample"]
        rule = sample.rules[0]
        explanation = state["explanations"][rule]
        update, result = await run_stage(
            state,
            "qa_writer",
            lambda attempt, given: write_qa(
                deps.layer,
                policy_of(state),
                rule=rule,
                description=state["description"] or "",
                explanation=explanation["explanation"],
                verdict=explanation["verdict"],
                counts=deps.qa_counts,
                feedback=given,
                sample_id=sample.sample_id,
                attempt=attempt,
                lengths=deps.lengths,
            ),
            rule=rule,
        )
        if result.status != "ok":
            return update
        return update | {"qa": result.value.model_dump(), "qa_rule": rule}

    def route(
        checks: Sequence[Check], state: SampleState, attempts: dict[str, int]
    ) -> dict[str, Any]:
        verdict = decide(checks)
        if verdict.passed:
            return {"status": "accepted", "next_stage": None, "reasons": []}
        stage = verdict.stage or "describer"
        if state["sample"].given_description is not None and stage in STAGES_BEFORE_EXPLAINER:
            stage = "explainer"  # text-only samples keep their given description
        reasons = [f"{c.stage}: {c.message}" for c in checks if not c.passed]
        if attempts.get(stage, 0) > deps.max_stage_retries:
            return {"status": "rejected", "next_stage": None, "reasons": reasons}
        feedback = dict(state.get("feedback") or {})
        if stage == "explainer":
            for rule in verdict.rules or list(state["sample"].rules):
                feedback[f"explainer:{rule}"] = verdict.feedback
        else:
            feedback[stage] = verdict.feedback
        # Later stages are rebuilt from the redone one.
        update: dict[str, Any] = {"next_stage": stage, "feedback": feedback, "reasons": reasons}
        if stage in ("describer", "context_interpreter"):
            update["explanations"] = {}
        return update | {"qa": None}

    async def critic(state: SampleState) -> dict[str, Any]:
        sample = state["sample"]
        attempt, attempts = _bump(state, "critic")
        policy = policy_of(state)
        checks = deterministic_checks(
            policy, dict(state), contradiction_finder=deps.contradiction_finder
        )
        deps.recorder.checks(state, attempt, checks, "deterministic")
        update: dict[str, Any] = {"attempts": attempts}
        if any(not c.passed for c in checks) or not deps.llm_critic:
            return update | route(checks, state, attempts)
        result = await llm_critique(
            deps.layer, dict(state), sample_id=sample.sample_id, attempt=attempt
        )
        deps.recorder.stage(state, "critic", None, attempt, result, None)
        update |= _tally(state, [result])
        if result.status != "ok":
            return update | _failure("critic", result)
        llm_checks = critique_to_checks(result.value)
        deps.recorder.checks(state, attempt, llm_checks, "llm")
        return update | route(llm_checks, state, attempts)

    # Routers are coroutines: LangGraph runs a plain function given as an edge on a worker
    # thread when the graph runs async, a thread hop per edge per sample.
    async def start(state: SampleState) -> str:
        if state["sample"].given_description is not None:
            return "explainer"
        return "describer"

    def after(next_node: str) -> Callable[[SampleState], Awaitable[str]]:
        async def router(state: SampleState) -> str:
            return END if state.get("status") == "failed" else next_node

        return router

    async def after_critic(state: SampleState) -> str:
        if state.get("status") in ("accepted", "rejected", "failed"):
            return END
        return state["next_stage"] or END

    graph = StateGraph(SampleState)
    graph.add_node("describer", describer)
    graph.add_node("context_interpreter", context_interpreter)
    graph.add_node("explainer", explainer)
    graph.add_node("qa_writer", qa_writer)
    graph.add_node("critic", critic)
    graph.add_conditional_edges(START, start, ["describer", "explainer"])
    graph.add_conditional_edges(
        "describer", after("context_interpreter"), ["context_interpreter", END]
    )
    graph.add_conditional_edges("context_interpreter", after("explainer"), ["explainer", END])
    graph.add_conditional_edges("explainer", after("qa_writer"), ["qa_writer", END])
    graph.add_conditional_edges("qa_writer", after("critic"), ["critic", END])
    graph.add_conditional_edges(
        "critic",
        after_critic,
        ["describer", "context_interpreter", "explainer", "qa_writer", END],
    )
    return graph.compile()


def initial_state(
    sample: SampleSpec, evidence: dict[str, Any] | None, evidence_text: str | None
) -> SampleState:
    """The state a sample enters the graph with."""
    state: SampleState = {
        "sample": sample,
        "evidence": evidence,
        "evidence_text": evidence_text,
        "category": sample.category,
        "category_source": sample.category_source,
        "description": sample.given_description,
        "context": None,
        "explanations": {},
        "qa": None,
        "qa_rule": None,
        "attempts": {},
        "feedback": {},
        "next_stage": None,
        "status": "pending",
        "reasons": [],
        "tokens": 0,
        "cost_usd": 0.0,
    }
    return state
