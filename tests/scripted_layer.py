"""A scripted model layer for unit tests of the graph's nodes: no HTTP, no model.

:class:`ScriptedLayer` satisfies ``agents.role_call.LayerLike``. Each call is answered by a
script function that sees the role, the trace stage label, the attempt, the schema and the
rendered messages, and returns either a dict (validated against the schema, as a real model's
JSON would be) or one of the non-ok statuses. The calls are kept, so a test asserts on what a
node asked. :func:`plausible` answers every built-in role so that the deterministic checks
pass; tests override single roles around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.critic import attribute_words
from agents.models.base import Message
from agents.models.result import CallResult
from agents.stages import Target
from data.policy_models import Policy
from prompts import PromptTemplate


@dataclass(frozen=True)
class Ask:
    """One call a node made."""

    role: str
    stage: str
    attempt: int
    schema: type[BaseModel]
    messages: list[Message]
    sample_id: str | None

    @property
    def user(self) -> str:
        return self.messages[-1].text


#: what a script returns: a JSON-like dict, or a status for a call that produced no value
Answer = dict[str, Any] | str
Script = Callable[[Ask], Answer]


@dataclass
class ScriptedLayer:
    script: Script
    images: bool = False
    calls: list[Ask] = field(default_factory=list)

    async def call(
        self,
        *,
        role: str,
        schema: type[Any],
        messages: list[Message],
        prompt: PromptTemplate | Sequence[PromptTemplate] | None = None,
        sample_id: str | None = None,
        stage: str | None = None,
        attempt: int = 1,
    ) -> CallResult[Any]:
        ask = Ask(role, stage or role, attempt, schema, messages, sample_id)
        self.calls.append(ask)
        answer = self.script(ask)
        if isinstance(answer, str):  # "refused" / "failed" / "parse_failed"
            return _result(ask, answer, None, raw=f"({answer})", error=f"scripted {answer}")
        try:
            value = schema.model_validate(answer)
        except ValidationError as exc:  # a script bug must fail loudly, not look like a model
            raise AssertionError(
                f"scripted answer for {ask.stage} breaks its schema: {exc}"
            ) from exc
        return _result(ask, "ok", value, raw=json.dumps(answer))

    async def sees_images(self, role: str) -> bool:
        return self.images

    def stages(self) -> list[str]:
        return [c.stage for c in self.calls]


def _result(ask: Ask, status: Any, value: Any, *, raw: str, error: str | None = None) -> Any:
    return CallResult(
        status=status,
        value=value,
        raw_text=raw,
        error=error,
        call_id=f"call-{ask.stage}-{ask.attempt}",
        cache_hit=False,
        input_tokens=10,
        output_tokens=5,
        latency_ms=1.0,
        cost_usd=0.001,
        model_spec="scripted:test",
        role=ask.role,
    )


def rule_of(ask: Ask, rules: Sequence[str], stage: str = "explainer") -> str:
    """The rule variant a per-rule call is about (matched against its trace label)."""
    return next(r for r in rules if Target(stage, r).label == ask.stage)


def plausible(policy: Policy, category: str, rules: Sequence[str]) -> Script:
    """Answers that pass every deterministic check for ``category`` under ``rules``."""
    words = [ws[0] for ws in attribute_words(policy, category).values() if ws]

    def script(ask: Ask) -> Answer:
        if ask.role == "describer":
            out: dict[str, Any] = {
                "description": "A person stands outdoors in daylight; visible: "
                + " ".join(words)
                + ".",
                "key_elements": ["person", "daylight"],
            }
            if "proposed_category" in ask.schema.model_fields:
                out["proposed_category"] = category
            return out
        if ask.role == "context_interpreter":
            return {
                "setting": "An outdoor scene.",
                "atmosphere": "Calm and ordinary.",
                "intent": "A casual snapshot.",
                "audience_cues": "Nothing beyond the annotated attributes.",
            }
        if ask.role == "explainer":
            rule = rule_of(ask, rules)
            verdict = policy.verdict(category, rule)
            # an argument rests on the rule: it gives the rule's reason (argument_rests_on_rule)
            answer = {
                "explanation": "The audience and the visible attributes decide the case, as the "
                f"description shows: {policy.reason(category, rule)} The image is {verdict}.",
            }
            if "verdict" in ask.schema.model_fields:  # a model verdict (proposed category)
                answer["verdict"] = verdict
            return answer
        if ask.role == "qa_writer":
            return qa_answer(ask)
        if ask.role == "critic":
            return {"consistent": True, "problems": []}
        raise AssertionError(f"no scripted answer for role {ask.role!r}")

    return script


@cache
def _qa_sizes(schema: type[BaseModel]) -> dict[str, int]:
    props = schema.model_json_schema()["properties"]
    return {name: props[name]["minItems"] for name in ("yes_no", "multiple_choice", "what", "how")}


def qa_answer(ask: Ask) -> dict[str, Any]:
    """A Q-A set of the sizes the schema asks for, none of it about the policy's term."""
    sizes = _qa_sizes(ask.schema)
    return {
        "yes_no": [
            {"question": f"Is there a person in view {n}?", "answer": "Yes"}
            for n in range(sizes["yes_no"])
        ],
        "multiple_choice": [
            {
                "question": f"Where is picture {n} taken?",
                "options": ["Outdoors", "A kitchen", "A stadium", "A library"],
                "answer": "A",
            }
            for n in range(sizes["multiple_choice"])
        ],
        "what": [
            {"question": f"What is visible (item {n})?", "answer": "A person."}
            for n in range(sizes["what"])
        ],
        "how": [
            {"question": f"How is the scene lit ({n})?", "answer": "By daylight."}
            for n in range(sizes["how"])
        ],
    }


@dataclass
class ListRecorder:
    """A StageRecorder that keeps what it is given."""

    stage_log: list[dict[str, Any]] = field(default_factory=list)
    check_log: list[tuple[int, str, list[Any]]] = field(default_factory=list)

    def stage(self, state, stage, rule, attempt, result, feedback) -> None:  # type: ignore[no-untyped-def]
        self.stage_log.append(
            {"stage": stage, "rule": rule, "attempt": attempt, "status": result.status,
             "feedback": feedback}
        )  # fmt: skip

    def checks(self, state, attempt, checks, source) -> None:  # type: ignore[no-untyped-def]
        self.check_log.append((attempt, source, list(checks)))
