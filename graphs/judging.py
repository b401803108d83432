"""Judge runs in the store: their run rows, their judgments, and what they judge.

A judge command is a run like any other (``runs.kind`` = ``judge``, ``calibrate`` or
``pairwise``) whose ``llm_calls`` carry its run id, so ``icm traces`` shows every judge call with
its raw answer. Each judgment is one ``judgments`` row; unscored, refused and failed ones are
stored with their status and no scores.

This module also turns a generation run's explanations into judge items: reference-free items
with the rule variant, the description, the context and the cached detector evidence; MEQ items
against a reference file; and pairs of two runs' explanations of the same image and rule.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.judge import (
    PairOutcome,
    PairwiseSummary,
    compare_pairs,
    disagreement_rate,
    generator_specs,
    self_preference_warnings,
)
from data.policy import load_policy
from data.policy_models import Policy
from data.provenance import git_revision, package_versions
from data.store import Store, queries, records, to_json, utcnow
from evaluators.calibration import (
    CalibrationReport,
    JudgingTally,
    tally_fields,
    zero_unparseable_means,
)
from evaluators.judge_schemas import RUBRICS
from evaluators.judgments import FreeItem, Judge, Judgment, MEQItem, PairItem, summarize_repeats
from prompts import load_prompt

EVIDENCE_CHARS = 600
"""Longest detector-evidence excerpt per tool shown to a reference-free judge."""


# --------------------------------------------------------------------------- run rows
def new_run_id(kind: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{kind}-{stamp}-{uuid.uuid4().hex[:6]}"


def start_run(
    store: Store,
    run_id: str,
    *,
    kind: str,
    judge_spec: str,
    config: dict[str, Any],
    name: str | None = None,
) -> None:
    """Insert the judge run's row: its config, judge binding, prompt hashes and versions."""
    templates = [f"{t}.{part}" for _, _, t in RUBRICS.values() for part in ("system", "user")]
    records.register_run(
        store,
        records.RunRecord(
            run_id=run_id,
            name=name or run_id,
            kind=kind,
            config=config,
            role_bindings={"judge": {"spec": judge_spec}},
            prompt_hashes={t: load_prompt(t).sha256 for t in templates},
            git_revision=git_revision(),
            package_versions=package_versions(),
        ),
    )


def finish_run(store: Store, run_id: str, status: str = "finished") -> None:
    records.finish_run(store, run_id, status)


def judgment_rows(run_id: str, judgments: Sequence[Judgment]) -> list[dict[str, Any]]:
    now = utcnow()
    rows = []
    for j in judgments:
        key = f"{run_id}|{j.rubric}|{j.item_id}|{j.rule_variant}|{j.repeat_index}|{j.swapped}"
        scores: dict[str, Any] | None = j.scores
        if j.rubric == "pairwise" and j.scored:
            scores = {"preferred": j.preferred}
        rows.append(
            {
                "judgment_id": hashlib.sha256(key.encode()).hexdigest()[:24],
                "run_id": run_id,
                "judge_spec": j.judge_spec,
                "rubric": j.rubric,
                "item_id": j.item_id,
                "sample_id": j.sample_id,
                "rule_variant": j.rule_variant,
                "repeat_index": j.repeat_index,
                "swapped": j.swapped,
                "status": j.status,
                "scores_json": to_json(scores) if scores is not None else None,
                "rationale": j.rationale if j.scored else j.error,
                "call_id": j.call_id,
                "created_at": now,
            }
        )
    return rows


def store_judgments(store: Store, run_id: str, judgments: Sequence[Judgment]) -> int:
    return records.record_judgments(store, judgment_rows(run_id, judgments))


def store_calibration(store: Store, run_id: str, report: CalibrationReport) -> str:
    calibration_id = f"{run_id}-{report.split}"
    records.record_calibration(
        store,
        {
            "calibration_id": calibration_id,
            "run_id": run_id,
            "judge_spec": report.judge_spec,
            "dataset_path": report.dataset_path,
            "dataset_sha256": report.dataset_sha256,
            "split": report.split,
            "n_items": report.n_items,
            "n_unscored": report.n_unscored,
            "report_json": report.model_dump_json(),
            "created_at": utcnow(),
        },
    )
    return calibration_id


# --------------------------------------------------------------------------- reading a run
class RunNotFoundError(LookupError):
    """The store has no run of that id, or it has no explanations."""


def generator_bindings(store: Store, run_id: str) -> dict[str, str]:
    row = queries.run_row(store, run_id)
    if row is None:
        raise RunNotFoundError(f"no run '{run_id}' in {store.path}")
    return generator_specs(row["role_bindings_json"])


def explanation_rows(store: Store, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The run's final explanations with their sample's description, context and category."""
    rows = queries.explanations_with_samples(store, run_id)
    if not rows:
        raise RunNotFoundError(f"run '{run_id}' has no explanations in {store.path}")
    return rows[:limit] if limit is not None else rows


def evidence_text(store: Store, image_sha256: str | None) -> str | None:
    """Cached detector evidence for the image, one line per tool (excerpted)."""
    if not image_sha256:
        return None
    rows = queries.perception_rows(store, image_sha256)
    lines = [f"{r['tool']}: {r['evidence_json'][:EVIDENCE_CHARS]}" for r in rows]
    return "\n".join(lines) or None


def _policies(rows: Sequence[dict[str, Any]]) -> dict[str, Policy]:
    return {name: load_policy(name) for name in sorted({r["policy_name"] for r in rows})}


def free_items(store: Store, rows: Sequence[dict[str, Any]]) -> list[FreeItem]:
    """Reference-free items: each explanation with its rule variant and its grounds."""
    policies = _policies(rows)
    items = []
    for row in rows:
        policy = policies[row["policy_name"]]
        rule = policy.rules[row["rule_variant"]]
        category = row["category"] if row["category"] in policy.categories else None
        ruling = policy.ruling(category, row["rule_variant"]) if category else None
        items.append(
            FreeItem(
                item_id=f"{row['sample_id']}/{row['rule_variant']}",
                sample_id=row["sample_id"],
                rule_variant=row["rule_variant"],
                explanation=row["explanation"] or "",
                verdict=row["verdict"],
                term=policy.term,
                rule_id=row["rule_variant"],
                rule_description=rule.description,
                audience_age=rule.audience.age_group,
                audience_culture=rule.audience.culture,
                category=category,
                expected_verdict=ruling.verdict if ruling else None,
                reason=ruling.reason if ruling else None,
                description=row["description"] or "",
                context=row["context"],
                evidence=evidence_text(store, row["image_sha256"]),
            )
        )
    return items


class ReferenceLine(BaseModel):
    """One line of a reference file for ``icm judge score --rubric meq``.

    ``sample_id`` or ``image`` (the image's file name) says which sample; ``rule_variant`` which
    of its explanations (default: the policy's base rule, else every variant).
    """

    model_config = ConfigDict(extra="ignore")

    reference: str
    sample_id: str | None = None
    image: str | None = None
    rule_variant: str | None = None

    @model_validator(mode="after")
    def _names_a_sample(self) -> ReferenceLine:
        if not self.sample_id and not self.image:
            raise ValueError("a reference line needs 'sample_id' or 'image'")
        return self


def load_references(path: str | Path) -> list[ReferenceLine]:
    lines = []
    for n, text in enumerate(Path(path).read_text().splitlines(), start=1):
        if text.strip():
            try:
                lines.append(ReferenceLine.model_validate_json(text))
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: {exc}") from exc
    return lines


def meq_items_for_run(
    rows: Sequence[dict[str, Any]], references: Sequence[ReferenceLine]
) -> tuple[list[MEQItem], int]:
    """MEQ items for the explanations a reference names; also how many references matched none."""
    policies = _policies(rows)
    items: list[MEQItem] = []
    unmatched = 0
    for ref in references:
        matched = False
        for row in rows:
            same = ref.sample_id == row["sample_id"] or (
                ref.image is not None and Path(row["image_path"] or "").name == Path(ref.image).name
            )
            wanted = ref.rule_variant or policies[row["policy_name"]].base_rule
            if same and (wanted is None or wanted == row["rule_variant"]):
                matched = True
                items.append(
                    MEQItem(
                        item_id=f"{row['sample_id']}/{row['rule_variant']}",
                        sample_id=row["sample_id"],
                        rule_variant=row["rule_variant"],
                        reference=ref.reference,
                        candidate=row["explanation"] or "",
                    )
                )
        unmatched += not matched
    return items, unmatched


def pair_items(store: Store, run_a: str, run_b: str, limit: int | None = None) -> list[PairItem]:
    """Explanations of the same image, policy and rule variant in two runs."""
    b_rows = {
        (r["image_sha256"] or r["image_path"], r["policy_name"], r["rule_variant"]): r
        for r in explanation_rows(store, run_b)
    }
    items = []
    for a in explanation_rows(store, run_a):
        b = b_rows.get((a["image_sha256"] or a["image_path"], a["policy_name"], a["rule_variant"]))
        if b is None:
            continue
        policy = load_policy(a["policy_name"])
        rule = policy.rules[a["rule_variant"]]
        items.append(
            PairItem(
                item_id=f"{a['sample_id']}|{b['sample_id']}/{a['rule_variant']}",
                sample_id=a["sample_id"],
                rule_variant=a["rule_variant"],
                first=a["explanation"] or "",
                second=b["explanation"] or "",
                rule_text=f"{a['rule_variant']}: {rule.description}",
            )
        )
    return items[:limit] if limit is not None else items


# --------------------------------------------------------------------------- reports
class CriterionSummary(BaseModel):
    n: int
    mean: float | None
    std: float | None


class ScoreReport(JudgingTally):
    """What ``icm judge score`` prints and stores in the run's config."""

    judged_run: str
    rubric: str
    criteria: dict[str, CriterionSummary]
    meq: float | None = None
    """Mean accuracy / 100 over the scored items (MEQ rubrics only): unparseable excluded."""
    meq_zero_unparseable: float | None = None
    """The same with every item that has no scored judgment counted as 0, as the paper's
    ``eval_meq/eval.py`` averages."""
    unmatched_references: int = 0
    warnings: list[str] = Field(default_factory=list)


def build_score_report(
    judged_run: str,
    judge: Judge,
    rubric: str,
    per_item: Sequence[Sequence[Judgment]],
    *,
    warnings: Sequence[str] = (),
    unmatched_references: int = 0,
) -> ScoreReport:
    criteria = RUBRICS[rubric][1]
    summaries = [summarize_repeats(js) for js in per_item]
    means = [s.mean for s in summaries if s.mean is not None]
    per_criterion = {}
    for name in criteria:
        values = [m[name] for m in means]
        per_criterion[name] = CriterionSummary(
            n=len(values),
            mean=statistics.fmean(values) if values else None,
            std=statistics.stdev(values) if len(values) >= 2 else None,
        )
    accuracy = per_criterion.get("accuracy")
    zeroed = zero_unparseable_means(summaries, criteria).get("accuracy")
    return ScoreReport(
        judged_run=judged_run,
        judge_spec=judge.spec,
        judge_kind=judge.kind,
        rubric=rubric,
        criteria=per_criterion,
        meq=accuracy.mean / 100 if accuracy and accuracy.mean is not None else None,
        meq_zero_unparseable=zeroed / 100 if zeroed is not None else None,
        **tally_fields(per_item, summaries, criteria),
        unmatched_references=unmatched_references,
        warnings=list(warnings),
    )


class PairwiseReport(BaseModel):
    run_a: str
    run_b: str
    judge_spec: str
    summary: PairwiseSummary
    warnings: list[str] = []


async def judge_pairs(
    judge: Judge, items: Sequence[PairItem], repeats: int = 1
) -> list[PairOutcome]:
    outcomes: list[PairOutcome] = []
    for r in range(repeats):
        outcomes += await compare_pairs(judge, items, repeat_index=r)
    return outcomes


def pairwise_report(
    run_a: str, run_b: str, judge: Judge, outcomes: Sequence[PairOutcome], warnings: Sequence[str]
) -> PairwiseReport:
    return PairwiseReport(
        run_a=run_a,
        run_b=run_b,
        judge_spec=judge.spec,
        summary=disagreement_rate(outcomes),
        warnings=list(warnings),
    )


def run_warnings(store: Store, judge_spec: str, *runs: str) -> list[str]:
    """Self-preference warnings of the judge against each judged run's generators."""
    warnings: list[str] = []
    for run in runs:
        for warning in self_preference_warnings(judge_spec, generator_bindings(store, run)):
            warnings.append(f"run {run}: {warning}")
    return warnings


def record_report(store: Store, run_id: str, report: BaseModel) -> None:
    """Keep the report with the judge run (``runs.config_json`` gains a ``report`` key)."""
    row = queries.run_row(store, run_id)
    config = json.loads((row or {}).get("config_json") or "{}")
    config["report"] = json.loads(report.model_dump_json())
    records.set_run_config(store, run_id, config)
