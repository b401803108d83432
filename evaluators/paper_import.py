"""Read a model's released evaluation outputs into prediction rows, and the paper's own formulas.

The ICM-Assistant authors released ICM-LLaVA-v1.5's raw outputs next to their eval scripts
(github.com/zhaoyuzhi/ICM-Assistant, ``eval_scripts/``):

- ``eval_icm_val/*.json`` and ``eval_icm_test/*.json``: a JSON list of ``{"image_name",
  "logit_yes", "logit_no", "sexy_score", "sexy_conclusion"}``. An ICM-Val image name starts with
  its category (``bite_finger_2023..._1005.JPEG``); an ICM-Test name with ``sexy_`` or
  ``not-sexy_``;
- ``eval_mqa/``: answer files of alternating lines, an image path then the answer
  (``bite_finger/bite_finger_..._1005.JPEG`` / ``D.``), one for the model and one for the
  reference (``mc_gt.txt``, ``openqa_gt.txt``).

:func:`eval_json_rows`, :func:`mqa_rows` and :func:`jsonl_rows` turn these (and a generic JSONL
of ``image, rule, verdict or score, expected``) into ``predictions`` rows. The paper's formulas
are here too, so a figure computed from the store can be set beside the one its script prints:

- ICM-Val (``eval_icm_val/eval.py``): an image is predicted sexy when ``sexy_score > 0.5``; its
  truth is "not sexy" for the ``*_normal`` categories and "sexy" otherwise; accuracy is summed
  over the 35 category keywords, an image counting under *every* keyword its name contains (so a
  ``wearing_stockings`` image counts twice, also under ``stockings``);
- ICM-Test (``eval_icm_test/eval.py``): predicted not sexy when ``sexy_score < 0.5``, truth from
  ``not-sexy`` in the name;
- MQA (``eval_mqa/eval.py``): an answer is right when its first character, upper-cased, is one of
  A-D, Y, N and equals the reference's first character; accuracy = right / all, multiple choice
  and open questions pooled (the script prints that pooled figure in all three columns).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.policy_models import Policy
from data.store import utcnow
from data.store.predictions import MQA_TASKS, record_imported_predictions
from data.store.records import RunRecord

PAPER_THRESHOLD = 0.5
MQA_LETTERS = ("A", "B", "C", "D", "Y", "N")
FORMATS: tuple[str, ...] = ("icm-assistant", "jsonl")


class ImportFormatError(ValueError):
    """A file is not in the format it was given as; the message names the file and entry."""


@dataclass(frozen=True)
class ImportedRow:
    """One prediction as read from a file, before it gets a run."""

    image: str
    rule: str
    task: str = "verdict"
    category: str | None = None
    expected: str | None = None
    verdict: str | None = None
    score: float | None = None
    explanation: str | None = None
    status: str = "ok"


def category_of(image_name: str, policy: Policy) -> str | None:
    """The policy category an image name starts with (the longest such key), else None."""
    name = Path(image_name).name
    matches = [key for key in policy.categories if name.startswith(f"{key}_")]
    return max(matches, key=len) if matches else None


def _labels(policy: Policy) -> tuple[str, str]:
    flagged = next(label for label, v in policy.verdicts.items() if v.flagged)
    clear = next(label for label, v in policy.verdicts.items() if not v.flagged)
    return flagged, clear


_TEST_NAME = re.compile(r"^(?:not-)?sexy_\d+\.\w+$")


def is_test_name(image_name: str) -> bool:
    """An ICM-Test image name (``sexy_00001234.jpg``, ``not-sexy_00007639.jpg``); a category
    name that starts with ``sexy_`` (``sexy_kiss_2023..._11.jpg``) is not one."""
    return bool(_TEST_NAME.match(Path(image_name).name))


def eval_json_rows(path: Path, policy: Policy, rule: str | None = None) -> list[ImportedRow]:
    """Rows of an ``eval_icm_val`` / ``eval_icm_test`` JSON: the score, the verdict as the
    paper's script decides it, the category and expected verdict from the image name."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(entries, list):
        raise ImportFormatError(f"{path}: expected a JSON list of image entries")
    rule = rule or policy.base_rule or next(iter(policy.rules))
    flagged, clear = _labels(policy)
    rows = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "image_name" not in entry:
            raise ImportFormatError(f"{path}: entry {n}: no image_name")
        name = str(entry["image_name"])
        try:
            score = float(entry["sexy_score"])
        except (KeyError, TypeError, ValueError):
            raise ImportFormatError(f"{path}: entry {n} ({name}): no numeric sexy_score") from None
        category = category_of(name, policy)
        expected: str | None
        if is_test_name(name):
            expected = clear if Path(name).name.startswith("not-sexy") else flagged
            verdict = clear if score < PAPER_THRESHOLD else flagged  # eval_icm_test: < 0.5
        else:
            expected = policy.verdict(category, rule) if category else None
            verdict = flagged if score > PAPER_THRESHOLD else clear  # eval_icm_val: > 0.5
        rows.append(
            ImportedRow(
                image=name,
                rule=rule,
                category=category,
                expected=expected,
                verdict=verdict,
                score=score,
            )
        )
    return rows


def _pairs(path: Path) -> list[tuple[str, str]]:
    """(image, answer) pairs of an alternating-lines MQA file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if len(lines) % 2:
        raise ImportFormatError(f"{path}: {len(lines)} lines; expected image/answer line pairs")
    return [(lines[i].strip(), lines[i + 1]) for i in range(0, len(lines), 2)]


def mqa_rows(
    answers: Path, reference: Path, policy: Policy, task: str, rule: str | None = None
) -> list[ImportedRow]:
    """Rows of one MQA answer file against its reference file, paired line by line as the
    paper's script pairs them (the image lines must agree: a shifted file is an error)."""
    rule = rule or policy.base_rule or next(iter(policy.rules))
    got, want = _pairs(answers), _pairs(reference)
    if len(got) != len(want):
        raise ImportFormatError(
            f"{answers}: {len(got)} answers but {reference} has {len(want)} references"
        )
    rows = []
    for n, ((image, answer), (ref_image, ref_answer)) in enumerate(zip(got, want, strict=True)):
        if image != ref_image:
            raise ImportFormatError(
                f"{answers}:{2 * n + 1}: image {image!r}, but {reference} has {ref_image!r} there"
            )
        rows.append(
            ImportedRow(
                image=image,
                rule=rule,
                task=task,
                category=category_of(image, policy),
                expected=ref_answer,
                verdict=answer,
            )
        )
    return rows


def jsonl_rows(path: Path, policy: Policy) -> list[ImportedRow]:
    """Rows of a generic JSONL: ``image``, ``rule`` (default: the base rule), ``verdict`` or
    ``score`` (a score alone is thresholded as the paper's ICM-Val script: > 0.5 is flagged),
    ``expected`` (default: the rule table's verdict of ``category``), optional ``category``."""
    flagged, clear = _labels(policy)
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"{path}:{n}: not JSON ({exc})") from exc
        if not isinstance(entry, dict) or not entry.get("image"):
            raise ImportFormatError(f"{path}:{n}: no image")
        rule = str(entry.get("rule") or policy.base_rule or next(iter(policy.rules)))
        if rule not in policy.rules:
            raise ImportFormatError(f"{path}:{n}: rule {rule!r} is not in policy {policy.name}")
        score = entry.get("score")
        verdict = entry.get("verdict")
        if verdict is None and score is None:
            raise ImportFormatError(f"{path}:{n}: neither verdict nor score")
        if verdict is None:
            verdict = flagged if float(str(score)) > PAPER_THRESHOLD else clear
        elif verdict not in policy.verdicts:
            raise ImportFormatError(
                f"{path}:{n}: verdict {verdict!r} is not a label of {policy.name} "
                f"({', '.join(policy.verdicts)})"
            )
        category = entry.get("category") or category_of(str(entry["image"]), policy)
        if category is not None and category not in policy.categories:
            raise ImportFormatError(f"{path}:{n}: unknown category {category!r}")
        expected = entry.get("expected") or (policy.verdict(category, rule) if category else None)
        rows.append(
            ImportedRow(
                image=str(entry["image"]),
                rule=rule,
                category=category,
                expected=expected,
                verdict=verdict,
                score=None if score is None else float(score),
                explanation=entry.get("explanation"),
            )
        )
    return rows


def prediction_rows(
    rows: Sequence[ImportedRow], *, run_id: str, model: str, policy: Policy, now: Any
) -> list[dict[str, Any]]:
    """``predictions`` table rows; ids keep the file order within each task."""
    out = []
    for n, row in enumerate(rows):
        digest = hashlib.sha256(f"{run_id}|{row.task}|{n}|{row.image}".encode()).hexdigest()
        out.append(
            {
                "prediction_id": f"{row.task}-{n:07d}-{digest[:8]}",
                "run_id": run_id,
                "model_path": model,
                "image_sha256": None,
                "image_path": row.image,
                "policy_name": policy.name,
                "rule_variant": row.rule,
                "category": row.category,
                "expected_verdict": row.expected,
                "verdict": row.verdict,
                "score": row.score,
                "explanation": row.explanation,
                "status": row.status,
                "created_at": now,
                "task": row.task,
            }
        )
    return out


# --------------------------------------------------------------------------- the paper's formulas
def paper_val_accuracy(names: Sequence[str], scores: Sequence[float], policy: Policy) -> float:
    """``eval_icm_val/eval.py``'s accuracy: per category keyword, every image whose name
    *contains* the keyword is right when (score > 0.5) equals (the keyword is not a *_normal
    one); summed over keywords."""
    right = total = 0
    for keyword in sorted(policy.categories):
        truth = "normal" not in keyword
        for name, score in zip(names, scores, strict=True):
            if keyword in name:
                total += 1
                right += (score > PAPER_THRESHOLD) == truth
    if not total:
        raise ValueError("no image name contains a category keyword")
    return right / total


def paper_test_accuracy(names: Sequence[str], scores: Sequence[float]) -> float:
    """``eval_icm_test/eval.py``'s accuracy: not sexy when score < 0.5, truth ``not-sexy`` in
    the name."""
    if not names:
        raise ValueError("no images")
    right = sum(
        (score >= PAPER_THRESHOLD) == ("not-sexy" not in name)
        for name, score in zip(names, scores, strict=True)
    )
    return right / len(names)


def paper_mqa_correct(answer: str, reference: str) -> bool:
    """``eval_mqa/eval.py``'s ``eval_line``: the first characters, upper-cased, are equal and
    one of A-D, Y, N (an empty answer is wrong)."""
    if not answer or not reference:
        return False
    got = answer[0].upper()
    return got in MQA_LETTERS and got == reference[0].upper()


@dataclass(frozen=True)
class MQATally:
    correct: int
    total: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


def paper_mqa(pairs: Iterable[tuple[str, str]]) -> MQATally:
    """Right / all over (answer, reference) pairs by :func:`paper_mqa_correct`."""
    correct = total = 0
    for answer, reference in pairs:
        total += 1
        correct += paper_mqa_correct(answer, reference)
    return MQATally(correct, total)


# --------------------------------------------------------------------------- the import
@dataclass(frozen=True)
class MQAFile:
    """One MQA answer file, its reference file, and which kind of questions they hold."""

    answers: Path
    reference: Path
    task: str = "mqa_mc"


def import_predictions(
    store: Any,
    *,
    policy: Policy,
    predictions: Path | None = None,
    fmt: str = "icm-assistant",
    mqa: Sequence[MQAFile] = (),
    name: str | None = None,
    rule: str | None = None,
) -> tuple[str, str]:
    """Read the files and record them as one finished ``moderate`` run; returns (id, name).

    Raises:
        ImportFormatError: a file that is not in its format (named, with the entry or line).
    """
    if fmt not in FORMATS:
        raise ImportFormatError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if rule is not None and rule not in policy.rules:
        raise ImportFormatError(f"policy {policy.name} has no rule {rule}")
    rows: list[ImportedRow] = []
    if predictions is not None:
        if fmt == "icm-assistant":
            rows += eval_json_rows(predictions, policy, rule)
        else:
            rows += jsonl_rows(predictions, policy)
    for item in mqa:
        if item.task not in MQA_TASKS:
            raise ImportFormatError(f"MQA task must be one of {', '.join(MQA_TASKS)}")
        rows += mqa_rows(item.answers, item.reference, policy, item.task, rule)
    if not rows:
        raise ImportFormatError("nothing to import: give --predictions and/or MQA answer files")
    run_id = f"imp-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    sources = [str(predictions)] if predictions is not None else []
    sources += [f"{m.answers} vs {m.reference}" for m in mqa]
    now = utcnow()
    run = RunRecord(
        run_id=run_id,
        name=name or run_id,
        kind="moderate",
        status="finished",
        created_at=now,
        finished_at=now,
        config={"imported_from": sources, "format": fmt},
        policy_name=policy.name,
        policy_sha256=policy.sha256,
        rule_variants=",".join(sorted({r.rule for r in rows})),
    )
    model = str(predictions) if predictions is not None else str(mqa[0].answers)
    record_imported_predictions(
        store, run, prediction_rows(rows, run_id=run_id, model=model, policy=policy, now=now)
    )
    return run_id, run.name


def paper_figures(verdicts: Any, mqa: Any, policy: Policy) -> dict[str, Any]:
    """The paper scripts' figures of a run's stored rows (``verdicts``: image_path, score;
    ``mqa``: task, answer, reference), each None where the run has no such rows."""
    names = [str(n) for n in verdicts["image_path"]] if len(verdicts) else []
    scores = [float(s) for s in verdicts["score"]] if len(verdicts) else []
    scored = [(n, s) for n, s in zip(names, scores, strict=True) if s == s]  # drop NaN scores
    val = [(n, s) for n, s in scored if not is_test_name(n)]
    test = [(n, s) for n, s in scored if is_test_name(n)]
    figures: dict[str, Any] = {"icm_val_accuracy": None, "icm_test_accuracy": None}
    if val and any(key in n for n, _ in val for key in policy.categories):
        figures["icm_val_accuracy"] = paper_val_accuracy(
            [n for n, _ in val], [s for _, s in val], policy
        )
    if test:
        figures["icm_test_accuracy"] = paper_test_accuracy(
            [n for n, _ in test], [s for _, s in test]
        )
    for task in ("mqa_mc", "mqa_qa", None):
        part = mqa if task is None else mqa[mqa["task"] == task] if len(mqa) else mqa
        pairs = list(zip(part["answer"], part["reference"], strict=True)) if len(part) else []
        tally = paper_mqa((str(a or ""), str(r or "")) for a, r in pairs)
        figures[f"{task or 'mqa'}_accuracy"] = tally.accuracy
        figures[f"{task or 'mqa'}_n"] = tally.total
    return figures
