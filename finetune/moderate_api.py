"""A hosted or served generation model as a zero-shot moderator (``icm moderate --model SPEC``).

Any model spec the model layer knows (``openai:gpt-4o``, ``anthropic:...``,
``openai-compatible:http://host:port/v1#model``) can stand in for a fine-tuned moderator, as the
paper's zero-shot MLLM baselines do. Per image and rule variant it is asked two questions:

1. the score question (``Is the image sexy?``, or the rule-conditioned one with
   ``question="rule"``), answered as ``{"answer": "Yes" | "No"}``: the verdict is the policy's
   flagged label for Yes, its unflagged label for No;
2. the rule's instruction (``Under rule R1 (...), is the image sexy? Explain why.``), answered as
   ``{"explanation": ...}``.

The score is the paper's: the softmax over the "Yes" and "No" tokens' log-probabilities at the
answer, read where the API returns them (the moderator role asks for ``top_logprobs=20``;
``finetune.token_score``). Where it returns none (Anthropic's API has none) the score stays
empty, with ``score_note`` saying why, rather than a 1/0 that would pose as a probability. The
verdict is the model's answer. A call that ends ``parse_failed``, ``refused`` or ``failed``
becomes a prediction with that status and no verdict (unscored in the metrics, never a "No").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.explainer import rule_question
from agents.models.base import Message
from agents.models.images import prepare_image
from agents.models.layer import ModelLayer
from agents.models.result import CallResult
from agents.models.settings import ModelConfig
from agents.models.spec import parse_spec
from data.images import ImageLoadError
from data.policy_models import Policy
from finetune.moderate import (
    Prediction,
    Question,
    require_rules,
    score_question,
    verdict_labels,
)
from finetune.token_score import yes_no_score
from prompts import load_prompt

ROLE = "moderator"
EXPLANATION_MAX = 2000
#: alternatives per answer token the moderator asks for (OpenAI's maximum): "No" must be among
#: them when the model answers "Yes" for the score to exist
TOP_LOGPROBS = 20


class YesNoAnswer(BaseModel):
    """The moderator's answer to the yes/no question."""

    model_config = ConfigDict(extra="forbid")

    answer: Literal["Yes", "No"] = Field(description="Yes or No.")


class ModeratorExplanation(BaseModel):
    """The moderator's answer to the rule's instruction."""

    model_config = ConfigDict(extra="forbid")

    explanation: str = Field(
        min_length=1,
        max_length=EXPLANATION_MAX,
        description="The verdict under the rule and why, from what the image shows.",
    )


def is_model_spec(model: str) -> bool:
    """Whether ``model`` is a generation model spec rather than a local checkpoint or folder."""
    if ":" not in model or Path(model).exists():
        return False
    try:
        parse_spec(model)
    except ValueError:
        return False
    return True


class SpecModerator:
    """Moderates through the model layer; same ``moderate`` interface as the local Moderator."""

    def __init__(
        self,
        spec: str,
        *,
        question: Question = "plain",
        settings: Sequence[str] = (),
        layer: ModelLayer | None = None,
        layer_options: dict[str, Any] | None = None,
    ) -> None:
        self.model_path = spec
        self.question = question
        settings = [f"top_logprobs={TOP_LOGPROBS}", *settings]  # a given one wins
        config = ModelConfig.from_args([f"{ROLE}={spec}"], [f"{ROLE}.{s}" for s in settings])
        self.layer = layer or ModelLayer(config, None, use_cache=False, **(layer_options or {}))
        self.system = load_prompt(f"{ROLE}.system")
        self.verdict_user = load_prompt("moderator_verdict.user")
        self.explain_user = load_prompt("moderator_explain.user")

    async def _ask(
        self, schema: type[BaseModel], user: Any, text: str, image: Any, tag: str
    ) -> CallResult[Any]:
        return await self.layer.call(
            role=ROLE,
            schema=schema,
            messages=[
                Message(role="system", text=self.system.render()),
                Message(role="user", text=text, images=(image,)),
            ],
            prompt=[self.system, user],
            sample_id=image.sha256,
            stage=tag,
        )

    async def _one(
        self, path: Path, image: Any, policy: Policy, rule: str, explain: bool,
        categories: dict[str, str],
    ) -> Prediction:  # fmt: skip
        flagged, clear = verdict_labels(policy)
        question = self.verdict_user.render(question=score_question(policy, rule, self.question))
        verdict_call = self._ask(YesNoAnswer, self.verdict_user, question, image, f"verdict:{rule}")
        calls = [verdict_call]
        if explain:
            text = self.explain_user.render(instruction=rule_question(policy, rule))
            calls.append(self._ask(ModeratorExplanation, self.explain_user, text, image,
                                   f"explain:{rule}"))  # fmt: skip
        results = await asyncio.gather(*calls)
        answer = results[0]
        category = categories.get(image.sha256) or categories.get(str(path.resolve()))
        expected = None
        if category and category in policy.categories:
            expected = policy.verdict(category, rule)
        prediction = Prediction(
            image_path=str(path.resolve()), rule=rule, image_sha256=image.sha256,
            category=category, expected_verdict=expected,
        )  # fmt: skip
        if answer.status != "ok" or answer.value is None:
            prediction.status = answer.status
            prediction.explanation = answer.error or answer.raw_text
            return prediction
        prediction.verdict = flagged if answer.value.answer == "Yes" else clear
        scored = yes_no_score(answer.logprobs)
        prediction.score, prediction.score_note = scored.score, scored.note
        if explain:
            said = results[1]
            told = said.value if said.status == "ok" else None
            prediction.explanation = told.explanation if told is not None else None
        return prediction

    async def _all(
        self,
        images: Sequence[str | Path],
        policy: Policy,
        rules: list[str],
        categories: dict[str, str],
        explain: bool,
        progress: Any,
    ) -> list[Prediction]:
        predictions: list[Prediction] = []
        jobs = []
        for path in images:
            try:
                image = prepare_image(Path(path))
            except ImageLoadError as exc:
                for rule in rules:
                    predictions.append(
                        Prediction(str(path), rule, status="error", explanation=str(exc))
                    )
                continue
            jobs += [self._one(Path(path), image, policy, rule, explain, categories)
                     for rule in rules]  # fmt: skip
        try:
            done = await asyncio.gather(*jobs)
        finally:
            await self.layer.aclose()
        predictions += done
        if progress:
            progress(len(predictions))
        return predictions

    def moderate(
        self,
        images: list[Path],
        policy: Policy,
        rules: list[str],
        *,
        categories: dict[str, str] | None = None,
        batch_size: int = 4,
        explain: bool = True,
        progress: Any = None,
    ) -> list[Prediction]:
        """One prediction per (image, rule); ``batch_size`` is unused (the layer bounds
        concurrency per model)."""
        require_rules(policy, rules)
        self.layer.check_credentials()
        return asyncio.run(self._all(images, policy, rules, categories or {}, explain, progress))
