"""Moderate images with a (fine-tuned) model: verdict, score and explanation, into the store.

For each image and rule variant:

- **score**: the paper's score (its ICM-Val/ICM-Test scripts). The model is asked the policy's
  bare question (``Is the image sexy?``; ``question="rule"`` asks the rule-conditioned
  ``Under rule R1 (audience: ...), is the image sexy?`` that our training data answers) and the
  score is the softmax over the next-token logits of exactly one "Yes" and one "No" token: the
  first token of each answer as the model's chat template emits it after the generation prompt
  (`` Yes`` after LLaVA's ``ASSISTANT:``, ``Yes`` after Qwen's ``assistant\n``), i.e.
  ``softmax(logit_yes, logit_no)[0]``. ``score_tokens="spellings"`` (ours) instead takes each
  side's log-sum-exp over its spellings (``Yes``, `` Yes``, ``yes``...), counting a spelling only
  where the tokenizer has it as one whole token (never a sub-word such as ``Y`` of ``YES``);
- **verdict**: the policy's flagged label when the score is above the threshold (0.5, strictly,
  as the ICM-Val script), its unflagged label otherwise;
- **explanation**: greedy decoding of the answer to the rule's instruction (``... Explain why.``).

Both run batched (left padding). Predictions land in the store's ``predictions`` table under a
run of kind ``moderate``, with the expected verdict where the image's category is known (from
``--manifest``, else from a generation sample of the same image and policy), so the evaluators
compute accuracy and the judge scores explanations from the table alone. An image that cannot
be read becomes a prediction with status ``error`` and the reason, not a crash.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from agents.explainer import rule_question as explainer_rule_question
from data.images import ImageLoadError, image_sha256, load_image
from data.manifest import read_manifest
from data.policy import load_policy
from data.policy_models import Policy
from data.store import Store, queries, records, utcnow
from finetune.loading import Loaded, load_for_inference

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
YES_SPELLINGS = ("Yes", " Yes", "yes", " yes", "YES")
NO_SPELLINGS = ("No", " No", "no", " no", "NO")

Question = Literal["rule", "plain"]
ScoreTokens = Literal["single", "spellings"]
SCORE_TOKENS: tuple[ScoreTokens, ...] = ("single", "spellings")


class ModerationError(ValueError):
    """The moderation cannot run as asked (unknown rule, no images)."""


def require_rules(policy: Policy, rules: Sequence[str]) -> None:
    """Raise :class:`ModerationError` naming the first of ``rules`` that ``policy`` lacks (and
    the rules it has), before any image is read."""
    for rule in rules:
        if rule not in policy.rules:
            raise ModerationError(
                f"policy {policy.name} has no rule {rule} (it has {', '.join(policy.rules)})"
            )


@dataclass
class Prediction:
    image_path: str
    rule: str
    image_sha256: str | None = None
    category: str | None = None
    expected_verdict: str | None = None
    verdict: str | None = None
    score: float | None = None
    explanation: str | None = None
    status: str = "ok"
    score_note: str | None = None
    """Why ``score`` is None for an ``ok`` prediction (an API without token log-probabilities,
    say); None when there is a score."""


@dataclass
class ModerationSummary:
    run_id: str
    run_name: str
    model: str
    policy: str
    rules: list[str]
    predictions: list[Prediction] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        known = [p for p in self.predictions if p.status == "ok" and p.expected_verdict]
        if not known:
            return None
        return sum(p.verdict == p.expected_verdict for p in known) / len(known)

    def as_dict(self) -> dict[str, Any]:
        ok = [p for p in self.predictions if p.status == "ok"]
        # an absent score is absent, never 0 (a zero-shot API without log-probabilities)
        scores = [p.score for p in ok if p.score is not None]
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "model": self.model,
            "policy": self.policy,
            "rules": self.rules,
            "predictions": len(self.predictions),
            "errors": len(self.predictions) - len(ok),
            "with_expected": sum(1 for p in ok if p.expected_verdict),
            "accuracy": self.accuracy,
            "mean_score": statistics.fmean(scores) if scores else None,
            "scored": len(scores),
            "score_notes": dict(Counter(p.score_note for p in ok if p.score_note)),
            "seconds": round(self.seconds, 2),
        }


# --------------------------------------------------------------------------- helpers
def rule_question(policy: Policy, rule: str) -> str:
    return explainer_rule_question(policy, rule)


def score_question(policy: Policy, rule: str, question: Question) -> str:
    if question == "plain":
        return policy.question
    return rule_question(policy, rule).removesuffix(" Explain why.")


def verdict_labels(policy: Policy) -> tuple[str, str]:
    """(flagged, unflagged): the labels a yes and a no map to (first of each in the policy)."""
    flagged = next((label for label, v in policy.verdicts.items() if v.flagged), None)
    clear = next((label for label, v in policy.verdicts.items() if not v.flagged), None)
    if flagged is None or clear is None:
        raise ModerationError(f"policy {policy.name} needs a flagged and an unflagged verdict")
    return flagged, clear


def _template_probe(processor: Any) -> tuple[str, str, str]:
    """(prompt, full Yes answer, full No answer) rendered by the model's chat template."""
    user = [{"role": "user", "content": [{"type": "text", "text": "Is the image sexy?"}]}]
    prompt = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)

    def answered(word: str) -> str:
        reply = {"role": "assistant", "content": [{"type": "text", "text": f"{word}."}]}
        return str(processor.apply_chat_template([*user, reply], tokenize=False))

    return str(prompt), answered("Yes"), answered("No")


def emitted_first_token(tokenizer: Any, prompt: str, full: str, word: str) -> int:
    """The first token the model emits for ``word`` after ``prompt`` (``full`` = prompt + answer).

    The answer is tokenized in context, so a template that puts a space after ``ASSISTANT:``
    gives the space-prefixed token. Falls back to ``word`` encoded alone when the template's
    rendering does not extend the prompt or the boundary token is not a prefix of ``word``.
    """
    if full.startswith(prompt):
        head = tokenizer.encode(prompt, add_special_tokens=False)
        ids = tokenizer.encode(full, add_special_tokens=False)
        n = 0
        while n < min(len(head), len(ids)) and head[n] == ids[n]:
            n += 1
        if n < len(ids):
            text = tokenizer.decode([ids[n]]).strip()
            if text and word.lower().startswith(text.lower()):
                return int(ids[n])
    encoded = tokenizer.encode(word, add_special_tokens=False)
    if not encoded:
        raise ModerationError(f"the tokenizer encodes {word!r} to no token")
    return int(encoded[0])


def whole_word_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    """Ids of the spellings the tokenizer has as one whole token (a sub-word never counts)."""
    ids: list[int] = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        whole = len(encoded) == 1 and tokenizer.decode(encoded).strip() == word.strip()
        if whole and encoded[0] not in ids:
            ids.append(int(encoded[0]))
    return ids


def answer_token_ids(
    processor: Any, tokenizer: Any, mode: ScoreTokens = "single"
) -> tuple[list[int], list[int]]:
    """The yes and no token ids the score compares.

    ``single`` (the paper's): one id each, the first token of "Yes"/"No" as the chat template
    emits it (whatever it is, a sub-word included: that is what the model emits first).
    ``spellings`` (ours): every spelling in ``YES_SPELLINGS`` / ``NO_SPELLINGS`` that is one
    whole token, the emitted one included when it is whole; an id on both sides is dropped.
    """
    if mode not in SCORE_TOKENS:
        raise ModerationError(f"score tokens must be one of {', '.join(SCORE_TOKENS)}: {mode!r}")
    prompt, yes_full, no_full = _template_probe(processor)
    yes = [emitted_first_token(tokenizer, prompt, yes_full, "Yes")]
    no = [emitted_first_token(tokenizer, prompt, no_full, "No")]
    if mode == "spellings":
        # The emitted token counts only when it is a whole spelling itself (not "Y" of "Yes").
        yes = [i for i in yes if tokenizer.decode([i]).strip() in YES_SPELLINGS]
        no = [i for i in no if tokenizer.decode([i]).strip() in NO_SPELLINGS]
        yes += [i for i in whole_word_ids(tokenizer, YES_SPELLINGS) if i not in yes]
        no += [i for i in whole_word_ids(tokenizer, NO_SPELLINGS) if i not in no]
        shared = set(yes) & set(no)
        yes, no = [i for i in yes if i not in shared], [i for i in no if i not in shared]
    if not yes or not no or set(yes) & set(no):
        raise ModerationError("the tokenizer has no distinct yes/no tokens to score with")
    return yes, no


def yes_probability(last_logits: torch.Tensor, yes: list[int], no: list[int]) -> torch.Tensor:
    """Softmax over the yes/no logits: P(yes) per row. With one id a side this is exactly
    ``softmax(logit_yes, logit_no)[0]``; with several, each side is the log-sum-exp of its ids."""
    logits = last_logits.float()
    pair = torch.stack([logits[:, yes].logsumexp(-1), logits[:, no].logsumexp(-1)], -1)
    return pair.softmax(-1)[:, 0]


def expand_images(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders to the image files in them (sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(path)
    return out


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- the moderator
class ImageModerator(Protocol):
    """What :func:`moderate_images` needs: one prediction per (image, rule). :class:`Moderator`
    (a local or tuned model, with the paper's score) and ``finetune.moderate_api.SpecModerator``
    (a hosted or served model, zero-shot) are the two."""

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
    ) -> list[Prediction]: ...


class Moderator:
    """A loaded model plus what scoring and explaining need."""

    def __init__(
        self,
        model: str,
        *,
        loaded: Loaded | None = None,
        threshold: float = 0.5,
        max_new_tokens: int = 96,
        question: Question = "plain",
        score_tokens: ScoreTokens = "single",
    ) -> None:
        self.model_path = model
        self.loaded = loaded or load_for_inference(model)
        self.processor = self.loaded.processor
        self.tokenizer = self.processor.tokenizer
        self.threshold = threshold
        self.max_new_tokens = max_new_tokens
        self.question = question
        self.score_tokens = score_tokens
        self.yes, self.no = answer_token_ids(self.processor, self.tokenizer, score_tokens)

    def _inputs(self, images: list[Any], questions: list[str]) -> dict[str, Any]:
        texts = []
        for question in questions:
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            ]
            texts.append(
                self.processor.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            )
        bos = self.tokenizer.bos_token
        batch = self.processor(
            text=texts,
            images=[[image] for image in images],
            padding=True,
            padding_side="left",
            add_special_tokens=not (bos and texts[0].startswith(bos)),
            return_tensors="pt",
        )
        device = self.loaded.model.device
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    @torch.inference_mode()
    def scores(self, images: list[Any], questions: list[str]) -> list[float]:
        batch = self._inputs(images, questions)
        logits = self.loaded.model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
        return yes_probability(logits, self.yes, self.no).tolist()

    @torch.inference_mode()
    def explain(self, images: list[Any], questions: list[str]) -> list[str]:
        batch = self._inputs(images, questions)
        out = self.loaded.model.generate(
            **batch,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

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
        """One prediction per (image, rule); unreadable images become ``error`` predictions."""
        require_rules(policy, rules)
        flagged, clear = verdict_labels(policy)
        categories = categories or {}
        loaded_images: list[tuple[Path, Any, str]] = []
        predictions: list[Prediction] = []
        for path in images:
            try:
                image = load_image(path)
            except ImageLoadError as exc:
                for rule in rules:
                    predictions.append(
                        Prediction(str(path), rule, status="error", explanation=str(exc))
                    )
                continue
            loaded_images.append((path, image.image, image.sha256))
        jobs = [(p, img, sha, rule) for p, img, sha in loaded_images for rule in rules]
        for chunk in _batches(jobs, batch_size):
            pics = [img for _, img, _, _ in chunk]
            score_q = [score_question(policy, rule, self.question) for *_, rule in chunk]
            scores = self.scores(pics, score_q)
            texts = (
                self.explain(pics, [rule_question(policy, rule) for *_, rule in chunk])
                if explain
                else [None] * len(chunk)
            )
            for (path, _, sha, rule), score, text in zip(chunk, scores, texts, strict=True):
                category = categories.get(sha) or categories.get(str(Path(path).resolve()))
                expected = None
                if category and category in policy.categories:
                    expected = policy.verdict(category, rule)
                predictions.append(
                    Prediction(
                        image_path=str(Path(path).resolve()),
                        rule=rule,
                        image_sha256=sha,
                        category=category,
                        expected_verdict=expected,
                        verdict=flagged if score > self.threshold else clear,
                        score=float(score),
                        explanation=text,
                    )
                )
            if progress:
                progress(len(predictions))
        return predictions


# --------------------------------------------------------------------------- categories
def categories_from_manifest(path: Path, policy: Policy) -> dict[str, str]:
    """image sha256 and resolved path -> category, from a generation manifest (JSONL or CSV)."""

    rows = read_manifest(path, {policy.name: policy}, default_policy=policy.name)
    out: dict[str, str] = {}
    for row in rows:
        if row.category and row.image_path:
            out[str(row.image_path)] = row.category
            out[image_sha256(row.image_path)] = row.category
    return out


def categories_from_store(store: Any, policy: Policy) -> dict[str, str]:
    """image sha256 -> category of the latest generation sample of this policy."""
    return queries.categories_by_image(store, policy.name)


# --------------------------------------------------------------------------- store
def record(
    store: Any,
    predictions: list[Prediction],
    *,
    run_name: str | None,
    model: str,
    policy: Policy,
    rules: list[str],
    settings: dict[str, Any],
) -> tuple[str, str]:
    """Write the run row and its predictions in one transaction; returns (run_id, name)."""
    run_id = f"mod-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    name = run_name or run_id
    now = utcnow()
    rows = []
    for p in predictions:
        key = f"{run_id}|{p.image_sha256 or p.image_path}|{policy.name}|{p.rule}"
        rows.append(
            {
                "prediction_id": hashlib.sha256(key.encode()).hexdigest()[:20],
                "run_id": run_id,
                "model_path": model,
                "image_sha256": p.image_sha256,
                "image_path": p.image_path,
                "policy_name": policy.name,
                "rule_variant": p.rule,
                "category": p.category,
                "expected_verdict": p.expected_verdict,
                "verdict": p.verdict,
                "score": p.score,
                "explanation": p.explanation,
                "status": p.status,
                "created_at": now,
            }
        )
    run = records.RunRecord(
        run_id=run_id,
        name=name,
        kind="moderate",
        status="finished",
        created_at=now,
        finished_at=utcnow(),
        config={"model": model, **settings},
        policy_name=policy.name,
        policy_sha256=policy.sha256,
        rule_variants=",".join(rules),
    )
    records.record_predictions(store, run, rows)
    return run_id, name


def moderate_images(
    images: list[str | Path],
    *,
    model: str,
    policy: str,
    rules: list[str] | None = None,
    db: Path | None = None,
    run_name: str | None = None,
    manifest: Path | None = None,
    batch_size: int = 4,
    threshold: float = 0.5,
    max_new_tokens: int = 96,
    question: Question = "plain",
    score_tokens: ScoreTokens = "single",
    explain: bool = True,
    moderator: ImageModerator | None = None,
    progress: Any = None,
) -> ModerationSummary:
    """Moderate ``images`` and (with ``db``) record the predictions; the summary has accuracy
    where expected verdicts are known."""
    started = time.perf_counter()
    loaded_policy = load_policy(policy)
    chosen = rules or [loaded_policy.base_rule or next(iter(loaded_policy.rules))]
    files = expand_images(images)
    if not files:
        raise ModerationError("no images to moderate")
    categories: dict[str, str] = {}
    if manifest is not None:
        categories.update(categories_from_manifest(Path(manifest), loaded_policy))
    store = None
    if db is not None:
        store = Store.open(db)
    try:
        if store is not None and not manifest:
            categories.update(categories_from_store(store, loaded_policy))
        moderator = moderator or Moderator(
            model, threshold=threshold, max_new_tokens=max_new_tokens, question=question,
            score_tokens=score_tokens,
        )  # fmt: skip
        predictions = moderator.moderate(
            files, loaded_policy, chosen, categories=categories, batch_size=batch_size,
            explain=explain, progress=progress,
        )  # fmt: skip
        settings = {
            "policy": loaded_policy.name, "rules": chosen, "threshold": threshold,
            "question": question, "score_tokens": score_tokens, "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "manifest": str(manifest) if manifest else None, "images": len(files),
            # why scores are absent, kept with the run (the predictions table has no column)
            "score_notes": dict(Counter(p.score_note for p in predictions if p.score_note)),
        }  # fmt: skip
        run_id, name = "", run_name or ""
        if store is not None:
            run_id, name = record(
                store, predictions, run_name=run_name, model=model, policy=loaded_policy,
                rules=chosen, settings=settings,
            )  # fmt: skip
    finally:
        if store is not None:
            store.close()
    summary = ModerationSummary(run_id, name, model, loaded_policy.name, chosen, predictions)
    summary.seconds = time.perf_counter() - started
    return summary


def summary_json(summary: ModerationSummary) -> str:
    return json.dumps(
        {**summary.as_dict(), "items": [p.__dict__ for p in summary.predictions]}, indent=2
    )
