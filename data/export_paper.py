"""The paper's LLaVA training records (``icm export --format llava --style paper``).

The ICM-Assistant release converts its generated text to LLaVA JSON with
``prepare_jsons_for_training/txt2llava.py``; this writes the same shape from a run in our store:

- one **single-turn** record per Q-A pair and per explanation copy (not one multi-turn
  conversation per sample and rule, our ``--style ours``);
- the explanation is repeated ``copies`` times (the paper trains on five explanations per image),
  each copy under a question drawn from paraphrases of "is the image <term>? explain";
- the human turn is ``question + "\\n<image>"`` (the image token after the text);
- multiple-choice questions list their options one a line, then an instruction drawn from
  paraphrases of "answer with the option's letter"; the answer is the letter and a period
  (``B.``); yes/no, what and how answers end with a period;
- ids ``identity_<sample>_description<k>``, ``identity_<sample>_pair<j>``,
  ``identity_<sample>_mc_pair<j>`` as the converter names them.

The paraphrase lists are ours (the paper's lists have the same role and about the same sizes:
33 and 21). Drawing is seeded, so one run and one seed give the same file.

The paper's records carry no rule: it trained on one rule (R1). A bare question answered
differently under two rules would teach a contradiction, so this style exports the policy's base
rule only and counts every other rule's explanation as skipped. The converter's stray space
before the multiple-choice instruction (``"\\n " + instruction``) is not reproduced.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from data.atomic_write import write_texts_atomically
from data.export import (
    IMAGE_TOKEN,
    ExportError,
    ExportRecord,
    ExportSummary,
    QAItem,
    collect_records,
    json_text,
    meta_text,
    sidecar_path,
)
from data.policy import PolicyError, load_policy
from data.store import Store

EXPLANATION_COPIES = 5

EXPLAIN_QUESTIONS: tuple[str, ...] = (
    "Is the image {term}? Explain why.",
    "Is this image {term}? Explain your answer.",
    "Would you call this image {term}? Give your reasons.",
    "Is the picture {term}? Explain what makes it so or not.",
    "Does this image look {term}? Explain.",
    "Judge whether the image is {term} and explain your judgment.",
    "Decide if the photo is {term}, then explain the decision.",
    "Is the content of this image {term}? Justify your answer.",
    "Tell me whether the image is {term} and why.",
    "Assess whether this picture is {term}, and explain the assessment.",
    "Could this image be considered {term}? Explain your reasoning.",
    "Look at the image: is it {term}? Explain what you see that decides it.",
    "Determine whether the image is {term} and give an explanation.",
    "Is the photograph {term}? Describe the reasons for your verdict.",
    "Evaluate if the image is {term} and explain the evaluation.",
    "Would this image be judged {term}? Explain the grounds.",
    "Explain whether or not the image is {term}.",
    "Is there anything {term} about this image? Explain.",
    "Say whether the picture is {term} and support your answer.",
    "Is this a {term} image? Explain why or why not.",
    "Moderate the image: is it {term}? Explain the verdict.",
    "Classify the image as {term} or not, and explain the classification.",
    "Does the picture come across as {term}? Explain what leads you there.",
    "Examine the image and explain whether it is {term}.",
    "Give a verdict on whether the image is {term}, with an explanation.",
    "Is the scene in the image {term}? Explain.",
    "From what is shown, is the image {term}? Explain your view.",
    "Should this image be regarded as {term}? Explain.",
    "Check whether the image is {term} and explain the result.",
    "Is this photo {term}? Walk through the reasons.",
)
"""Ours: paraphrases of "is the image <term>? explain" (``{term}`` is the policy's term)."""

MC_INSTRUCTIONS: tuple[str, ...] = (
    "Answer with the letter of the correct option.",
    "Reply with the option's letter only.",
    "Give the letter of your choice.",
    "Choose one option and answer with its letter.",
    "Respond with the letter of the right answer.",
    "Pick the correct choice and give its letter.",
    "Answer by writing the letter of the option you choose.",
    "Select an option; reply with its letter alone.",
    "Your answer should be a single option letter.",
    "State the letter of the best option.",
    "Write only the letter of the correct choice.",
    "Indicate the right option by its letter.",
    "Answer using the letter of one of the options.",
    "Choose from the options above and give the letter.",
    "Reply with the letter that matches your answer.",
    "Which option is correct? Answer with its letter.",
    "Give your answer as the letter of an option.",
    "Select the correct letter from the choices.",
    "Mark your choice by giving its letter.",
    "Answer directly with the option letter.",
)
"""Ours: paraphrases of the multiple-choice instruction."""

_LETTER = re.compile(r"\s*\(?([A-Ea-e])(?:[.):\s]|$)")


def _with_period(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else f"{text}."


def mc_answer(answer: str) -> str | None:
    """``"B"``, ``"b)"``, ``"B. A kitchen"`` -> ``"B."``; None when no option letter leads."""
    match = _LETTER.match(answer)
    return f"{match.group(1).upper()}." if match else None


def _turns(question: str, answer: str) -> list[dict[str, str]]:
    return [
        {"from": "human", "value": f"{question}\n{IMAGE_TOKEN}"},
        {"from": "gpt", "value": answer},
    ]


def _qa_record(
    record: ExportRecord, item: QAItem, n: int, rng: random.Random
) -> tuple[dict[str, Any] | None, str | None]:
    """One Q-A pair as a record, or (None, why it cannot be one)."""
    if item.qa_type == "multiple_choice":
        letter = mc_answer(item.answer)
        if letter is None or not item.options:
            return None, "multiple-choice answer without an option letter"
        options = item.prompt().split("\n")[1:-1]  # the labelled options, one a line
        question = "\n".join([item.question, *options, rng.choice(MC_INSTRUCTIONS)])
        rid = f"identity_{record.sample_id}_mc_pair{n}"
        return {"id": rid, "image": record.image, "conversations": _turns(question, letter)}, None
    rid = f"identity_{record.sample_id}_pair{n}"
    turns = _turns(item.question.strip(), _with_period(item.answer))
    return {"id": rid, "image": record.image, "conversations": turns}, None


def paper_llava_records(
    records: list[ExportRecord],
    *,
    terms: dict[str, str],
    base_rules: dict[str, str | None],
    seed: int = 0,
    copies: int = EXPLANATION_COPIES,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter[str]]:
    """(LLaVA records, their provenance lines, skipped counts) in the paper's shape.

    ``terms`` and ``base_rules`` map a policy name to its term and base rule. A policy with no
    base rule exports its records' first rule per sample.
    """
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    first_rule: dict[str, str] = {}
    for record in records:
        wanted = base_rules.get(record.policy) or first_rule.setdefault(
            record.sample_id, record.rule
        )
        if record.rule != wanted:
            skipped[f"{record.rule} explanation (the paper style exports the base rule only)"] += 1
            continue
        provenance = {"sample_id": record.sample_id, "run_id": record.run_id,
                      "policy": record.policy, "rule": record.rule,
                      "category": record.category, "status": record.status}  # fmt: skip
        term = terms[record.policy]
        for k in range(1, copies + 1):
            question = rng.choice(EXPLAIN_QUESTIONS).format(term=term)
            rid = f"identity_{record.sample_id}_description{k}"
            turns = _turns(question, record.explanation.strip())
            out.append({"id": rid, "image": record.image, "conversations": turns})
            meta.append({"id": rid, "kind": "explanation", **provenance})
        for n, item in enumerate(record.qa):
            made, why = _qa_record(record, item, n, rng)
            if made is None:
                skipped[why or "qa item"] += 1
                continue
            out.append(made)
            meta.append({"id": made["id"], "kind": item.qa_type, "qa_id": item.qa_id,
                         **provenance})  # fmt: skip
    return out, meta, skipped


def export_paper_run(
    store: Store,
    run: str,
    out: Path,
    *,
    include_all: bool = False,
    image_root: Path | None = None,
    seed: int = 0,
    copies: int = EXPLANATION_COPIES,
) -> ExportSummary:
    """Write ``run`` as the paper's LLaVA JSON to ``out`` (and a ``.meta.jsonl`` sidecar).

    Raises:
        ExportError: unknown run, an image outside ``image_root``, a policy that cannot be
            loaded by name (its term and base rule are needed).
    """
    out = Path(out)
    selection = collect_records(store, run, include_all=include_all, image_root=image_root)
    terms: dict[str, str] = {}
    base_rules: dict[str, str | None] = {}
    for name in sorted({r.policy for r in selection.records}):
        try:
            policy = load_policy(name)
        except PolicyError as exc:
            raise ExportError(f"policy {name!r} of run {run} cannot be loaded: {exc}") from exc
        terms[name], base_rules[name] = policy.term, policy.base_rule
    records, meta, skipped = paper_llava_records(
        selection.records, terms=terms, base_rules=base_rules, seed=seed, copies=copies
    )
    if include_all:  # a file that mixes statuses says which is which (see ``with_status``)
        records = [{**made, "status": m["status"]} for made, m in zip(records, meta, strict=True)]
    sidecar = sidecar_path(out)
    write_texts_atomically({out: json_text(records), sidecar: meta_text(meta)})
    return ExportSummary(
        run_id=selection.run["run_id"],
        run_name=selection.run["name"],
        fmt="llava (paper style)",
        path=out,
        records=len(records),
        samples=len({m["sample_id"] for m in meta}),
        include_all=include_all,
        status_counts=selection.status_counts,
        skipped=dict(selection.skipped + skipped),
        extra_files=(sidecar,),
    )
