"""Calibrate a judge against the published GPT-4o MEQ scores.

``meq_dev.jsonl`` holds (reference, candidate) pairs that GPT-4o scored under the paper's MEQ
rubric. Running another judge on the same pairs and correlating its scores with GPT-4o's says how
far that judge can stand in for GPT-4o: per criterion Spearman and Kendall correlation, mean
absolute difference, the judge's mean next to GPT-4o's, and how many pairs it left unscored.
Statistics use scored pairs only; unscored, refused and failed pairs are counted, never zeroed.
The MEQ (mean accuracy / 100) is reported both ways side by side: over the scored pairs only
(``judge``: unparseable answers excluded, ours) and with every pair that has no scored answer
counted as 0 (``judge_zero_unparseable``: the paper's eval script, which appends 0 for a judgment
it cannot read). ``rubric="meq-paper"`` asks the judge in the paper's own wording.

The split is fixed by a hash of the image name (about 60 % ``fit``, 40 % ``held_out``), so a
metric fitted on ``fit`` (``metric:minilm``) is always reported on pairs it never saw, and any
two calibrations of the same split compare like with like.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from evaluators.judge_schemas import MEQ_CRITERIA, MEQ_RUBRICS
from evaluators.judgments import (
    Judge,
    Judgment,
    MEQItem,
    RepeatSummary,
    judge_repeated,
    summarize_repeats,
)
from evaluators.paper_meq import folder_sha256, read_judgments

Split = Literal["held_out", "fit", "all"]
SPLITS: tuple[str, ...] = ("held_out", "fit", "all")
FIT_FRACTION = 0.6
"""Share of the dev set the offline metric is fitted on; the rest is held out."""


class MEQCase(BaseModel):
    """One line of a MEQ-format JSONL file."""

    model_config = ConfigDict(extra="ignore")

    image: str
    reference: str
    candidate: str
    judge_scores: dict[str, float]
    category: str | None = None
    label: str | None = None
    judge_model: str | None = None

    @property
    def split(self) -> str:
        return split_of(self.image)


def split_of(image: str) -> str:
    """``fit`` or ``held_out``, from the first 32 bits of sha256(image name): fixed forever."""
    bucket = int(hashlib.sha256(image.encode()).hexdigest()[:8], 16) / 2**32
    return "fit" if bucket < FIT_FRACTION else "held_out"


def load_meq_set(path: str | Path) -> list[MEQCase]:
    """Read a MEQ JSONL file, or a folder of the paper's released judgment files
    (``eval_scripts/eval_meq/<model>/``, :mod:`evaluators.paper_meq`); a bad line or file
    raises ``ValueError`` naming it."""
    if Path(path).is_dir():
        return released_meq_cases(Path(path))
    cases = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cases.append(MEQCase.model_validate_json(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: not a MEQ case: {exc}") from exc
    if not cases:
        raise ValueError(f"{path}: no MEQ cases")
    return cases


def released_meq_cases(folder: Path) -> list[MEQCase]:
    """The released judgments of ``folder`` as cases; a judgment whose score table cannot be
    read has no ``judge_scores`` (it counts in no reference mean)."""
    return [
        MEQCase(
            image=j.image,
            reference=j.reference,
            candidate=j.candidate,
            judge_scores=j.scores,
            judge_model="gpt-4o",
        )
        for j in read_judgments(folder)
    ]


def select(cases: Sequence[MEQCase], split: str, limit: int | None = None) -> list[MEQCase]:
    """The cases of ``split`` in file order, at most ``limit`` of them."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (splits: {', '.join(SPLITS)})")
    chosen = [c for c in cases if split == "all" or c.split == split]
    return chosen[:limit] if limit is not None else chosen


def file_sha256(path: str | Path) -> str:
    """The set's hash: of the file, or of a released judgment folder's files."""
    if Path(path).is_dir():
        return folder_sha256(Path(path))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- statistics
class CriterionStats(BaseModel):
    """Agreement of one criterion with the reference judge over the scored pairs."""

    n: int
    spearman: float | None
    spearman_p: float | None
    kendall: float | None
    kendall_p: float | None
    mad: float | None
    """Mean absolute difference, in score points (0-100)."""
    judge_mean: float | None
    reference_mean: float | None
    """The reference judge's (GPT-4o's) mean over the same scored pairs."""


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def criterion_stats(judge: Sequence[float], reference: Sequence[float]) -> CriterionStats:
    """Spearman, Kendall (tau-b), MAD and means; correlations are None when undefined."""
    n = len(judge)
    if n != len(reference):
        raise ValueError("judge and reference scores differ in length")
    if n == 0:
        return CriterionStats(
            n=0, spearman=None, spearman_p=None, kendall=None, kendall_p=None, mad=None,
            judge_mean=None, reference_mean=None,
        )  # fmt: skip
    rho = tau = (math.nan, math.nan)
    if n >= 3 and len(set(judge)) > 1 and len(set(reference)) > 1:
        from scipy import stats  # half a second to import: only when scores are compared

        rho = tuple(stats.spearmanr(judge, reference))
        tau = tuple(stats.kendalltau(judge, reference))
    return CriterionStats(
        n=n,
        spearman=_finite(rho[0]),
        spearman_p=_finite(rho[1]),
        kendall=_finite(tau[0]),
        kendall_p=_finite(tau[1]),
        mad=statistics.fmean(abs(a - b) for a, b in zip(judge, reference, strict=True)),
        judge_mean=statistics.fmean(judge),
        reference_mean=statistics.fmean(reference),
    )


class JudgingTally(BaseModel):
    """What every judge report says about coverage: items, how many were scored, what became
    of the rest, and the spread across repeats (``icm judge calibrate`` and ``score``)."""

    judge_spec: str
    judge_kind: str
    n_items: int
    n_scored: int
    n_unscored: int
    """Items with no scored judgment (unparseable, refused or failed): never counted as 0."""
    unscored_rate: float
    status_counts: dict[str, int]
    """Every judgment by status (``repeats`` per item)."""
    repeats: int
    repeat_std: dict[str, float] | None = None
    """Mean over items of the per-item std across repeats (only with ``repeats`` > 1)."""


def tally_fields(
    judgments: Sequence[Sequence[Judgment]],
    summaries: Sequence[RepeatSummary],
    criteria: Sequence[str],
) -> dict[str, Any]:
    """The :class:`JudgingTally` fields (all but the judge's name) of per-item judgments and
    their summaries."""
    n_scored = sum(1 for s in summaries if s.mean is not None)
    spreads = [s.std for s in summaries if s.std]
    return {
        "n_items": len(judgments),
        "n_scored": n_scored,
        "n_unscored": len(judgments) - n_scored,
        "unscored_rate": (len(judgments) - n_scored) / len(judgments) if judgments else 0.0,
        "status_counts": dict(sorted(Counter(j.status for js in judgments for j in js).items())),
        "repeats": max((len(js) for js in judgments), default=1),
        "repeat_std": (
            {name: statistics.fmean(s[name] for s in spreads) for name in criteria}
            if spreads
            else None
        ),
    }


class CalibrationReport(JudgingTally):
    """What ``icm judge calibrate`` prints and stores."""

    dataset_path: str
    dataset_sha256: str
    split: str
    criteria: dict[str, CriterionStats]
    meq: dict[str, float | None]
    """The paper's MEQ (mean accuracy / 100): ``judge`` over the scored pairs (unparseable
    excluded, ours), ``judge_zero_unparseable`` with unscored pairs as 0 (the paper's script),
    and the reference judge's on the same scored pairs and on all pairs."""
    zero_unparseable_means: dict[str, float | None] = {}
    """Per criterion, the judge's mean over all pairs with an unscored pair counted as 0 (the
    paper's averaging); ``criteria[...].judge_mean`` is the mean over scored pairs only."""
    rubric: str = "meq"
    reference_judge: str = "gpt-4o"
    warnings: list[str] = []


def build_report(
    cases: Sequence[MEQCase],
    judgments: Sequence[Sequence[Judgment]],
    *,
    judge_spec: str,
    judge_kind: str,
    dataset_path: str,
    dataset_sha256: str,
    split: str,
    criteria: Sequence[str] = MEQ_CRITERIA,
    rubric: str = "meq",
) -> CalibrationReport:
    """Correlate the judge (mean of its scored repeats per item) with the cases' scores."""
    summaries = [summarize_repeats(js) for js in judgments]
    zero_means = zero_unparseable_means(summaries, criteria)
    scored = [(c, s) for c, s in zip(cases, summaries, strict=True) if s.mean is not None]
    per_criterion = {}
    for name in criteria:
        pairs = [
            (s.mean[name], c.judge_scores[name])
            for c, s in scored
            if s.mean is not None and name in c.judge_scores
        ]
        per_criterion[name] = criterion_stats([p[0] for p in pairs], [p[1] for p in pairs])
    accuracy = per_criterion.get("accuracy")
    all_accuracy = [c.judge_scores["accuracy"] for c in cases if "accuracy" in c.judge_scores]
    judge_mean = accuracy.judge_mean if accuracy else None
    zero_accuracy = zero_means.get("accuracy")
    meq = {
        "judge": judge_mean / 100 if judge_mean is not None else None,
        "judge_zero_unparseable": zero_accuracy / 100 if zero_accuracy is not None else None,
        "reference_same_items": (
            accuracy.reference_mean / 100
            if accuracy and accuracy.reference_mean is not None
            else None
        ),
        "reference_all_items": statistics.fmean(all_accuracy) / 100 if all_accuracy else None,
    }
    return CalibrationReport(
        judge_spec=judge_spec,
        judge_kind=judge_kind,
        dataset_path=dataset_path,
        dataset_sha256=dataset_sha256,
        split=split,
        criteria=per_criterion,
        meq=meq,
        zero_unparseable_means=zero_means,
        rubric=rubric,
        **tally_fields(judgments, summaries, criteria),
        reference_judge=(cases[0].judge_model or "gpt-4o") if cases else "gpt-4o",
    )


def zero_unparseable_means(
    summaries: Sequence[RepeatSummary], criteria: Sequence[str]
) -> dict[str, float | None]:
    """Per criterion, the mean over every item with an item that has no scored judgment counted
    as 0, as the paper's ``eval_meq/eval.py`` averages (None when there are no items)."""
    if not summaries:
        return dict.fromkeys(criteria)
    return {
        name: statistics.fmean((s.mean or {}).get(name, 0.0) for s in summaries)
        for name in criteria
    }


# --------------------------------------------------------------------------- running
def meq_items(cases: Sequence[MEQCase]) -> list[MEQItem]:
    return [MEQItem(item_id=c.image, reference=c.reference, candidate=c.candidate) for c in cases]


async def calibrate(
    judge: Judge,
    set_path: str | Path,
    *,
    split: str = "held_out",
    limit: int | None = None,
    repeats: int = 1,
    progress: Callable[[int], None] | None = None,
    rubric: str = "meq",
) -> tuple[CalibrationReport, list[list[Judgment]]]:
    """Judge the split's pairs (``repeats`` times each) under ``rubric`` (``meq`` or the paper's
    wording, ``meq-paper``) and build the report. Writes nothing."""
    if rubric not in MEQ_RUBRICS:
        raise ValueError(f"calibration takes a MEQ rubric ({', '.join(MEQ_RUBRICS)}), not {rubric}")
    if not judge.supports(rubric):
        raise ValueError(f"{judge.spec} cannot apply the {rubric} rubric")
    cases = select(load_meq_set(set_path), split, limit)
    items = meq_items(cases)
    per_item = await judge_repeated(judge, rubric, items, repeats, progress=progress)
    report = build_report(
        cases,
        per_item,
        judge_spec=judge.spec,
        judge_kind=judge.kind,
        dataset_path=str(set_path),
        dataset_sha256=file_sha256(set_path),
        split=split,
        rubric=rubric,
    )
    report.warnings = calibration_warnings(judge, split, report.reference_judge)
    return report, per_item


def calibration_warnings(judge: Judge, split: str, reference_judge: str) -> list[str]:
    """Caveats a reader of the correlations must see next to them."""
    warnings = []
    if judge.kind == "metric" and split != "held_out":
        warnings.append(
            f"{judge.spec} was fitted on the 'fit' part of this set: on split '{split}' its "
            "correlations are (partly) in-sample; report the held_out split"
        )
    if judge.kind == "llm":
        model = judge.spec.partition("?")[0].rsplit("#", 1)[-1].rsplit(":", 1)[-1]
        if model.lower() == reference_judge.lower():
            warnings.append(
                f"the judge is {reference_judge}, the model that wrote the reference scores: "
                "this measures its consistency with itself, not agreement with another judge"
            )
    return warnings


def report_json(report: CalibrationReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=False)
