"""The generation graph: the registered stages in chain order (describer -> context interpreter
-> explainer per rule variant -> Q-A writer), then the critic, which sends a failing stage back
for another attempt.

Two compiled graphs serve every sample, one per chain (with the image stages, or from the
explainer for a sample with a given description); each sample runs as its own thread of state.
Retries are steps, not loops in code: the critic writes ``next_stage`` and its node names that
stage as the next node (a LangGraph ``Command``), so LangGraph's trace of the run shows each
retry as a step. Attempts are bounded per stage; a
stage that still fails after ``max_stage_retries`` retries ends the sample as ``rejected`` with
the critic's reasons.

The graph is built from the stage registry (``agents.stages``): every node is one of the
top-level functions below (:func:`stage_node`, :func:`per_rule_node`, :func:`critic_node`) bound
to a stage's declaration and the run's :class:`PipelineDeps`, so each can be called, and
tested, on its own over a constructed state.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from agents.critic import (
    ContradictionFinder,
    CriticDecision,
    GroundingFinder,
    critique_to_checks,
    decide,
    deterministic_checks,
    llm_critique,
)
from agents.models.base import ImageInput
from agents.models.result import CallResult
from agents.role_call import LayerLike
from agents.schemas import (
    FULL,
    Lengths,
    QACounts,
    context_model,
    description_with_proposal_model,
    explanation_model,
    qa_model,
)
from agents.stages import (
    CRITIC,
    PaperOptions,
    StageCall,
    StageRegistry,
    StageSpec,
    Target,
    default_registry,
)
from data.policy_models import Policy
from data.store import records, utcnow
from data.store.batch import RowQueue
from evaluators.consistency import Check
from evaluators.text_checks import schema_texts, with_garbage_checks
from graphs.state import SampleSpec, SampleState

RECURSION_LIMIT = 200
#: the roles' output-schema field descriptions, which no generated text may copy
SCHEMA_TEXTS = schema_texts(
    (
        description_with_proposal_model(("category",)),
        context_model(FULL),
        explanation_model(("label", "other label")),
        qa_model(1, 1, 1, 1),
    )
)


def generation_roles(registry: StageRegistry | None = None) -> tuple[str, ...]:
    """The roles a generation run asks models (the critic only when its LLM critique is on)."""
    return (*(registry or default_registry()).names, CRITIC)


class StageRecorder(Protocol):
    def stage(self, state: SampleState, stage: str, rule: str | None, attempt: int,
              result: CallResult[Any], feedback: str | None) -> None: ...  # fmt: skip
    def checks(self, state: SampleState, attempt: int, checks: Sequence[Check],
               source: str) -> None: ...  # fmt: skip


def _output_json(result: CallResult[Any]) -> str | None:
    """The stage output's JSON: the text the model layer wrote to the call's trace row, or
    (a result made elsewhere, e.g. a scripted layer in tests) the value serialised now."""
    if result.value is None:
        return None
    return result.parsed_json or result.value.model_dump_json()


def _digest(key: str) -> str:
    """A row id from its ``|``-joined parts: rewriting an attempt's rows overwrites them."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass
class StoreRecorder:
    """Queues each stage result for the run's next batched commit (every fraction of a second).

    Row ids are derived from (sample, stage, rule, attempt): a sample re-run after a crash
    overwrites the rows of its interrupted attempt instead of adding duplicates. The ``stage``
    column holds the registered stage's name (or ``critic``).
    """

    writer: RowQueue

    @staticmethod
    def _id(*parts: object) -> str:
        return _digest("|".join(map(str, parts)))

    def stage(
        self,
        state: SampleState,
        stage: str,
        rule: str | None,
        attempt: int,
        result: CallResult[Any],
        feedback: str | None,
    ) -> None:
        sample = state["sample"]
        records.queue_stage_output(
            self.writer,
            {
                "output_id": self._id(sample.sample_id, stage, rule, attempt),
                "sample_id": sample.sample_id,
                "run_id": sample.run_id,
                "stage": stage,
                "rule_variant": rule,
                "attempt": attempt,
                "status": result.status,
                # the call's parsed_json trace (pydantic's serialiser), made once per call
                "output_json": _output_json(result),
                "raw_text": result.raw_text,
                "feedback": feedback,
                "call_id": result.call_id,
                "created_at": utcnow(),
            },
        )

    def checks(
        self, state: SampleState, attempt: int, checks: Sequence[Check], source: str
    ) -> None:
        sample = state["sample"]
        now = utcnow()
        key = f"{sample.sample_id}|{attempt}|{source}"  # the id's parts common to every row
        rows = [
            {
                "critique_id": _digest(f"{key}|{n}|{c.name}|{c.stage}"),
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
        records.queue_critiques(self.writer, rows)


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
    grounding_finder: GroundingFinder | None = None
    """Holds texts written without sight to the evidence (run only for a blind describer)."""
    lengths: Lengths = FULL
    registry: StageRegistry = field(default_factory=default_registry)
    paper: PaperOptions = field(default_factory=PaperOptions)
    checks: bool = True
    """Run the critic's deterministic checks (the paper's release has none: ``--preset
    paper`` turns them off)."""
    stage_checks: bool = True
    """Also run each stage's deterministic checks as soon as it has written (with ``checks``):
    a failing stage is redone before the stages after it are asked, instead of after the
    whole chain has run on its output (:func:`stage_check`)."""


# ----------------------------------------------------------------------------- bookkeeping
def _bump(state: SampleState, stage: str) -> tuple[int, dict[str, int]]:
    attempts = dict(state.get("attempts") or {})
    attempts[stage] = attempts.get(stage, 0) + 1
    return attempts[stage], attempts


def _tally(state: SampleState, results: Sequence[CallResult[Any]]) -> dict[str, Any]:
    tokens = state.get("tokens", 0) + sum(
        (r.input_tokens or 0) + (r.output_tokens or 0) for r in results
    )
    cost = state.get("cost_usd", 0.0) + sum(r.cost_usd or 0.0 for r in results)
    return {"tokens": tokens, "cost_usd": cost}


def _progress(
    state: SampleState,
    attempts: dict[str, int],
    feedback: dict[Target, str],
    results: Sequence[CallResult[Any]],
) -> dict[str, Any]:
    """The update every stage returns: attempts, remaining feedback, tokens and cost so far."""
    return {"attempts": attempts, "feedback": feedback, **_tally(state, results)}


def _failure(where: str, result: CallResult[Any]) -> dict[str, Any]:
    detail = result.error or (result.raw_text or "")[:200]
    return {"status": "failed", "reasons": [f"{where}: {result.status}: {detail}"]}


def policy_of(state: SampleState, deps: PipelineDeps) -> Policy:
    return deps.policies[state["sample"].policy]


def inputs_of(spec: StageSpec, state: SampleState) -> dict[str, Any]:
    """The state keys ``spec`` declares it reads (and only those)."""
    view: Mapping[str, Any] = state
    return {key: view.get(key) for key in spec.reads}


def stage_call(
    deps: PipelineDeps, state: SampleState, attempt: int, feedback: str | None, rule: str | None
) -> StageCall:
    sample = state["sample"]
    return StageCall(
        layer=deps.layer,
        policy=policy_of(state, deps),
        sample_id=sample.sample_id,
        attempt=attempt,
        feedback=feedback,
        rule=rule,
        lengths=deps.lengths,
        qa_counts=deps.qa_counts,
        images=lambda: deps.load_images(sample),
        paper=deps.paper,
    )


# ----------------------------------------------------------------------------- nodes
async def stage_node(spec: StageSpec, state: SampleState, deps: PipelineDeps) -> dict[str, Any]:
    """One attempt of a single-call stage: ask with the feedback meant for it, record, tally,
    and write its declared outputs (or the failure)."""
    attempt, attempts = _bump(state, spec.name)
    feedback = dict(state.get("feedback") or {})
    given = feedback.pop(Target(spec.name), None)
    inputs = inputs_of(spec, state)
    call = stage_call(deps, state, attempt, given, None)
    result = await spec.ask(call, inputs)
    deps.recorder.stage(state, spec.name, spec.about_rule(inputs), attempt, result, given)
    update = _progress(state, attempts, feedback, [result])
    if result.status != "ok":
        return update | _failure(spec.name, result)
    return update | spec.write(result.value, call, inputs)


def rules_to_run(spec: StageSpec, state: SampleState) -> list[str]:
    """A per-rule stage's rule variants this attempt: those the critic sent back, else those
    without an output yet, else all of them."""
    rules = state["sample"].rules
    feedback = state.get("feedback") or {}
    done: Mapping[str, Any] = typing.cast(Mapping[str, Any], state).get(_collects(spec)) or {}
    retry = [r for r in rules if Target(spec.name, r) in feedback]
    return retry or [r for r in rules if r not in done] or list(rules)


def _collects(spec: StageSpec) -> str:
    """The one state key a per-rule stage writes (rule -> item)."""
    return next(iter(spec.writes))


async def per_rule_node(spec: StageSpec, state: SampleState, deps: PipelineDeps) -> dict[str, Any]:
    """One attempt of a per-rule stage: its rule variants asked concurrently, each with its own
    feedback; every result is recorded before a failure ends the sample."""
    attempt, attempts = _bump(state, spec.name)
    rules = rules_to_run(spec, state)
    feedback = dict(state.get("feedback") or {})
    notes = {rule: feedback.pop(Target(spec.name, rule), None) for rule in rules}
    inputs = inputs_of(spec, state)
    calls = {rule: stage_call(deps, state, attempt, notes[rule], rule) for rule in rules}
    results = await asyncio.gather(*(spec.ask(calls[rule], inputs) for rule in rules))
    update = _progress(state, attempts, feedback, results)
    key = _collects(spec)
    items = dict(typing.cast(Mapping[str, Any], state).get(key) or {})
    failure: dict[str, Any] | None = None
    for rule, result in zip(rules, results, strict=True):
        deps.recorder.stage(state, spec.name, rule, attempt, result, notes[rule])
        if result.status != "ok":
            failure = failure or _failure(f"{spec.name} {rule}", result)
        elif failure is None:
            items[rule] = spec.write(result.value, calls[rule], inputs)
    if failure is not None:
        return update | failure
    return update | {key: items}


async def run_stage(spec: StageSpec, state: SampleState, deps: PipelineDeps) -> dict[str, Any]:
    """The node of ``spec``: per rule variant or a single call."""
    if spec.per_rule:
        return await per_rule_node(spec, state, deps)
    return await stage_node(spec, state, deps)


def redo_stage(stage: str, sample: SampleSpec, registry: StageRegistry) -> str | None:
    """The stage a redo of ``stage`` actually goes to: itself, or for a sample with a given
    description (whose image stages never run) the first later stage that runs. None when no
    registered stage can be redone (a failure of the critic's own)."""
    if stage not in registry:
        return None
    has_description = sample.given_description is not None
    if registry.get(stage).runs_for(has_description):
        return stage
    for spec in registry.after(stage):
        if spec.runs_for(has_description):
            return spec.name
    return None


def route(
    decision: CriticDecision, state: SampleState, attempts: Mapping[str, int], deps: PipelineDeps
) -> dict[str, Any]:
    """Turn the critic's decision into the sample's next step: accepted, rejected (retry
    budget spent), or a redo with typed feedback; the redone stage's later stages are reset to
    their not-yet-run values so they are rebuilt from it."""
    if decision.passed:
        return {"status": "accepted", "next_stage": None, "reasons": []}
    registry = deps.registry
    sample = state["sample"]
    reasons = [f"{c.stage}: {c.message}" for c in decision.checks if not c.passed]
    stage = redo_stage(decision.stage or registry.names[0], sample, registry)
    if stage is None or attempts.get(stage, 0) > deps.max_stage_retries:
        return {"status": "rejected", "next_stage": None, "reasons": reasons}
    spec = registry.get(stage)
    feedback = dict(state.get("feedback") or {})
    if spec.per_rule:
        named = decision.rules if decision.stage == stage else []
        for rule in named or list(sample.rules):
            feedback[Target(stage, rule)] = decision.feedback
    else:
        feedback[Target(stage)] = decision.feedback
    update: dict[str, Any] = {"next_stage": stage, "feedback": feedback, "reasons": reasons}
    has_description = sample.given_description is not None
    fresh = registry.initial_outputs()
    for later in registry.after(stage):
        if later.runs_for(has_description):
            update |= {key: fresh[key] for key in later.writes}
    return update


async def _deterministic(
    state: SampleState, deps: PipelineDeps, want: Callable[[str], bool] | None = None
) -> list[Check]:
    """Every deterministic check over the sample's outputs so far (of the stages ``want``
    keeps: a check's stage name -> whether it is wanted; None: all). The garbage checks
    (looping, two labels, JSON residue, key elements, Q-A fragments, synonym-aware attribute
    mentions) run with the critic's own; a stage not yet run has nothing to check."""
    policy = policy_of(state, deps)
    plain = typing.cast(dict[str, Any], state)
    blind = deps.grounding_finder is not None and not await deps.layer.sees_images("describer")
    return with_garbage_checks(
        policy,
        plain,
        deterministic_checks(
            policy,
            plain,
            contradiction_finder=deps.contradiction_finder,
            grounding_finder=deps.grounding_finder if blind else None,
            want=want,
        ),
        SCHEMA_TEXTS,
        explanation_limit=deps.lengths.explanation,
        answer_limit=deps.lengths.answer,
        want=want,
    )


async def stage_check(stage: str, state: SampleState, deps: PipelineDeps) -> dict[str, Any]:
    """The deterministic checks of ``stage`` right after it wrote: ``{}`` when they pass, else
    the critic's route (a redo of the stage with the checks' feedback, or the sample rejected
    once its retries are spent).

    Why: a description the critic would reject after the whole chain ran on it costs the
    context, every rule's explanation and the Q-A before it is redone (the offline demo spent
    a fifth of its calls so). Checks that read later stages run with the critic, which still
    checks everything at the end; a failing pass is recorded as one of the critic's passes,
    with source ``stage_check``.

    Only the checks about ``stage`` are computed (the others are most of the work, and their
    stages have either passed theirs or not run yet); when one fails, the pass is computed
    again as the whole list filtered to ``stage``, so the rows it records are exactly those
    (the passing ``no_pipeline_talk`` row depends on every stage's texts)."""
    registry = deps.registry

    def about_stage(name: str) -> bool:
        return registry.canonical(name) == stage

    checks = await _deterministic(state, deps, about_stage)
    if all(c.passed for c in checks if about_stage(c.stage)):
        return {}
    checks = [c for c in await _deterministic(state, deps) if about_stage(c.stage)]
    if all(c.passed for c in checks):
        return {}
    attempt, attempts = _bump(state, CRITIC)
    deps.recorder.checks(state, attempt, checks, "stage_check")
    return {"attempts": attempts} | route(decide(checks, registry), state, attempts, deps)


async def critic_node(state: SampleState, deps: PipelineDeps) -> dict[str, Any]:
    """Deterministic checks; when they pass (and the LLM critique is on) the LLM critique;
    then :func:`route` on whichever decided."""
    attempt, attempts = _bump(state, CRITIC)
    if not deps.checks:  # the paper's way: no checks (the LLM critique, if on, still runs)
        return await _llm_critic(state, deps, attempt, attempts)
    checks = await _deterministic(state, deps)
    deps.recorder.checks(state, attempt, checks, "deterministic")
    if any(not c.passed for c in checks):
        return {"attempts": attempts} | route(decide(checks, deps.registry), state, attempts, deps)
    return await _llm_critic(state, deps, attempt, attempts)


async def _llm_critic(
    state: SampleState, deps: PipelineDeps, attempt: int, attempts: dict[str, int]
) -> dict[str, Any]:
    """The LLM critique (when on) and the route it decides; without it the sample passes."""
    update: dict[str, Any] = {"attempts": attempts}
    if not deps.llm_critic:
        return update | route(decide([], deps.registry), state, attempts, deps)
    sample = state["sample"]
    plain = typing.cast(dict[str, Any], state)
    result = await llm_critique(
        deps.layer, plain, sample_id=sample.sample_id, attempt=attempt, registry=deps.registry
    )
    deps.recorder.stage(state, CRITIC, None, attempt, result, None)
    update |= _tally(state, [result])
    if result.status != "ok" or result.value is None:
        return update | _failure(CRITIC, result)
    llm_checks = critique_to_checks(result.value, deps.registry)
    deps.recorder.checks(state, attempt, llm_checks, "llm")
    return update | route(decide(llm_checks, deps.registry), state, attempts, deps)


# ----------------------------------------------------------------------------- routing
def after_critic(state: SampleState) -> str:
    """END once the sample is decided, else the stage the critic sent it back to."""
    if state.get("status") in ("accepted", "rejected", "failed"):
        return END
    return state.get("next_stage") or END


def state_schema(registry: StageRegistry) -> type:
    """:class:`SampleState`, plus any key a registered stage writes that it does not declare
    (LangGraph keeps only declared keys)."""
    hints = typing.get_type_hints(SampleState)
    extra = {k: Any for spec in registry for k in spec.writes if k not in hints}
    if not extra:
        return SampleState
    make: Any = typing.TypedDict  # the functional form, with keys known only at run time
    return typing.cast(type, make("SampleStateWithStages", {**hints, **extra}, total=False))


class SampleGraph:
    """The compiled graph of each chain a sample can take (image stages first, or straight to
    the explainer for a sample with a given description); :meth:`ainvoke` runs a sample
    through its own. Each starts at its first stage by a plain edge: no router runs at START.
    """

    def __init__(self, graphs: Mapping[bool, Any]) -> None:
        self.graphs = dict(graphs)  # by whether the sample has a given description

    async def ainvoke(self, state: SampleState, config: Any = None) -> dict[str, Any]:
        graph = self.graphs[state["sample"].given_description is not None]
        out: dict[str, Any] = await graph.ainvoke(state, config)
        return out


def build_graph(deps: PipelineDeps) -> SampleGraph:
    """Compile the generation graphs over ``deps.registry``'s stages.

    Each node names its successor itself (a LangGraph ``Command``): the routing functions above
    decide it, applied to the state as the node leaves it. A conditional edge per node would do
    the same at the price of one more runnable invocation per step (config, callbacks), about a
    tenth of the graph's CPU per sample at high concurrency (``benchmarks/bench_generate.py``).
    """
    schema = state_schema(deps.registry)  # known only at run time
    return SampleGraph(
        {flag: _compile_chain(deps, schema, deps.registry.chain(flag)) for flag in (False, True)}
    )


def _compile_chain(deps: PipelineDeps, schema: type, chain: Sequence[str]) -> Any:
    """One chain's graph: START -> its stages in order -> the critic, which ends the sample
    or sends it back to one of them."""
    graph: Any = StateGraph(schema)
    for name, following in itertools.pairwise(chain):
        spec = deps.registry.get(name)
        # the stage itself: its own checks may send it back at once (stage_check)
        graph.add_node(
            name, _bind_stage(spec, deps, following), destinations=(following, name, END)
        )

    async def critic(state: SampleState) -> Command[str]:
        update = await critic_node(state, deps)
        return Command(update=update, goto=after_critic(_after(state, update)))

    graph.add_node(CRITIC, critic, destinations=(*chain[:-1], END))
    graph.add_edge(START, chain[0])
    return graph.compile()


def _after(state: SampleState, update: Mapping[str, Any]) -> SampleState:
    """The state as a node leaves it (its update over it), for routing."""
    return typing.cast(SampleState, {**state, **update})


def _bind_stage(
    spec: StageSpec, deps: PipelineDeps, following: str
) -> Callable[[SampleState], typing.Awaitable[Command[str]]]:
    # the last stage is followed by the critic, which checks everything anyway
    check_now = deps.checks and deps.stage_checks and following != CRITIC

    async def node(state: SampleState) -> Command[str]:
        update = await run_stage(spec, state, deps)
        after = _after(state, update)
        if check_now and after.get("status") not in ("failed", "rejected"):
            redo = await stage_check(spec.name, after, deps)
            if redo:
                update = {**update, **redo}
                return Command(update=update, goto=after_critic(_after(state, update)))
        return Command(update=update, goto=next_after_stage(after, following))

    return node


def next_after_stage(state: SampleState, following: str) -> str:
    """END after a failure (or a stage's own rejection), else ``following``, the next node of
    the sample's chain."""
    if state.get("status") in ("failed", "rejected"):  # a stage may reject its sample
        return END
    return following


def initial_state(
    sample: SampleSpec,
    evidence: dict[str, Any] | None,
    evidence_text: str | None,
    registry: StageRegistry | None = None,
) -> SampleState:
    """The state a sample enters the graph with: every stage's outputs not yet written."""
    outputs = (registry or default_registry()).initial_outputs()
    state: dict[str, Any] = {
        **outputs,
        "sample": sample,
        "evidence": evidence,
        "evidence_text": evidence_text,
        "category": sample.category,
        "category_source": sample.category_source,
        "description": sample.given_description,
        "attempts": {},
        "feedback": {},
        "next_stage": None,
        "status": "pending",
        "reasons": [],
        "tokens": 0,
        "cost_usd": 0.0,
    }
    return typing.cast(SampleState, state)
