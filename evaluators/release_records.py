"""ICM-Instruct records read from the release's training-text folders, for the audit.

The authors' repository (zhaoyuzhi/ICM-Assistant) keeps its training text under
``data/ICM-Instruct_data_generation_pipeline/prepare_jsons_for_training/``: ``reason/1/`` (the
merged explanation of each image; ``reason/2..5`` hold the same text), ``qa/`` (a markdown table
``| Type of Question | Question | Answer |``) and ``mc/`` (``| Question | Choices | Answer |``,
the four choices as cells of their own), one ``<image>.txt`` per image in each. The shipped dev
set (``instruct_dev.jsonl``) is 420 of these images in the audit's record format;
:func:`release_records` builds the same records for any others, so the audit's precision can be
measured on records it was never tuned on. The label is the policy's base-rule verdict of the
image's category (the release labels by category).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from data.policy_models import Policy
from evaluators.paper_import import category_of

TRAINING = Path("data") / "ICM-Instruct_data_generation_pipeline" / "prepare_jsons_for_training"


def _rows(text: str) -> Iterator[list[str]]:
    """The body rows of a markdown table, as stripped cells (header and rule rows skipped)."""
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if all(set(c) <= set("-: ") for c in cells):
            continue
        if cells[:1] in (["Type of Question"], ["Question"]):
            continue
        yield cells


def qa_items(text: str) -> list[dict[str, str]]:
    """``{type, question, answer}`` of each row of a ``qa/`` table (rows of 3 cells)."""
    return [
        {"type": cells[0], "question": cells[1], "answer": cells[-1]}
        for cells in _rows(text)
        if len(cells) >= 3
    ]


def mc_items(text: str) -> list[dict[str, Any]]:
    """``{question, choices, answer}`` of each row of an ``mc/`` table: the question, the
    choice cells, the answer (rows of at least 3 cells)."""
    return [
        {"question": cells[0], "choices": cells[1:-1], "answer": cells[-1]}
        for cells in _rows(text)
        if len(cells) >= 3
    ]


def release_images(release: Path) -> list[str]:
    """The image names that have an explanation, a Q-A table and an MC table, sorted."""
    root = Path(release) / TRAINING

    def names(folder: Path) -> set[str]:
        return {p.name[: -len(".txt")] for p in folder.glob("*.txt")}

    return sorted(names(root / "reason" / "1") & names(root / "qa") & names(root / "mc"))


def release_records(
    release: Path, images: Iterable[str], policy: Policy
) -> Iterator[dict[str, Any]]:
    """One audit record (image, category, label, explanation, qa, mc) per image name."""
    root = Path(release) / TRAINING
    base = policy.base_rule or next(iter(policy.rules))
    for image in images:
        category = category_of(image, policy)
        explanation = (root / "reason" / "1" / f"{image}.txt").read_text(encoding="utf-8")
        yield {
            "image": image,
            "category": category,
            "label": policy.verdict(category, base) if category else "unknown",
            "explanation": explanation.strip(),
            "qa": qa_items((root / "qa" / f"{image}.txt").read_text(encoding="utf-8")),
            "mc": mc_items((root / "mc" / f"{image}.txt").read_text(encoding="utf-8")),
        }
