"""Coverage and balance of an ICM-Instruct set against its policy's product table.

A policy crosses categories with rule variants, and each cell has one verdict
(:meth:`data.policy_models.Policy.product_table`). A researcher asks of a set built from it:
which cells hold accepted records and how many, which are empty, how the verdicts balance under
each rule, and why the samples that did not make it were turned away. Everything here is pure
counting over plain records, so generation runs (read by ``data.store.dataset_reads``) and an
imported ICM-Instruct file (its ``category`` and ``label`` under the policy's base rule) are
judged by the same code.

Definitions, stated once:

- a *record* is one accepted (sample, rule variant) explanation with its verdict;
- a cell's ``count`` is its records; ``off_verdict`` counts those whose verdict is not the
  cell's (an annotated image takes the table's verdict, so these come from free generation);
- an *empty cell* is a (category, rule) pair of the policy's table with no record, for the rules
  the set covers at all (a set made under R1 only does not report R2..R4 as empty);
- *verdict balance* of a rule: records per verdict label under it, with the flagged share;
- *rejection reasons by stage*: every sample that ended rejected or failed counts once under
  each (stage, reason) it ended with: a rejected sample's checks that failed in its last critic
  pass, else the stage and kind its first reason names (``describer: parse_failed: ...``). The
  share is of the samples that ended at that stage.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from data.policy_models import Policy

UNKNOWN_CATEGORY = "(no category)"


@dataclass(frozen=True)
class Record:
    """One accepted explanation: a sample under one rule variant, with its verdict."""

    sample_id: str
    policy: str
    category: str | None
    rule: str
    verdict: str | None


@dataclass(frozen=True)
class Ending:
    """A sample that did not end accepted: its status, reasons and final failed checks."""

    sample_id: str
    policy: str
    status: str
    reasons: tuple[str, ...] = ()
    failed_checks: tuple[tuple[str, str], ...] = ()
    """(stage, check name) of the checks that failed in its last critic pass."""


@dataclass(frozen=True)
class Cell:
    category: str
    rule: str
    verdict: str
    """The verdict the policy's table gives this cell."""
    count: int
    off_verdict: int


@dataclass
class PolicyCoverage:
    """The coverage report of one policy."""

    policy: str
    rules: list[str]
    categories: list[str]
    cells: list[Cell]
    balance: dict[str, dict[str, int]]
    """rule -> verdict label -> records."""
    flagged_share: dict[str, float | None]
    rejections: dict[str, dict[str, int]]
    """stage -> reason -> samples that ended at this stage with this reason."""
    stage_totals: dict[str, int]
    """stage -> samples that ended (rejected or failed) at this stage."""
    statuses: dict[str, int]
    unknown_categories: dict[str, int] = field(default_factory=dict)
    """Records whose category is not in the policy (or missing), by category."""

    @property
    def records(self) -> int:
        return sum(c.count for c in self.cells) + sum(self.unknown_categories.values())

    @property
    def empty_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.count == 0]

    def count(self, category: str, rule: str) -> int:
        for cell in self.cells:
            if cell.category == category and cell.rule == rule:
                return cell.count
        raise KeyError((category, rule))

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rules": self.rules,
            "categories": self.categories,
            "records": self.records,
            "cells": [c.__dict__ for c in self.cells],
            "empty_cells": [
                {"category": c.category, "rule": c.rule, "verdict": c.verdict}
                for c in self.empty_cells
            ],
            "balance": self.balance,
            "flagged_share": self.flagged_share,
            "rejections": self.rejections,
            "stage_totals": self.stage_totals,
            "statuses": self.statuses,
            "unknown_categories": self.unknown_categories,
        }


def coverage(
    policy: Policy,
    records: Iterable[Record],
    endings: Iterable[Ending] = (),
    *,
    rules: Sequence[str] | None = None,
    statuses: dict[str, int] | None = None,
) -> PolicyCoverage:
    """The coverage report of ``policy`` over these records and endings (others' are ignored).

    ``rules``: the rule variants the set was made under; by default those its records use (in
    the policy's order), so a set made under one rule is not charged with the others' cells.
    """
    mine = [r for r in records if r.policy == policy.name]
    used = {r.rule for r in mine}
    chosen = list(rules) if rules is not None else [k for k in policy.rules if k in used]
    counts: Counter[tuple[str, str]] = Counter()
    off: Counter[tuple[str, str]] = Counter()
    unknown: Counter[str] = Counter()
    balance: dict[str, Counter[str]] = {rule: Counter() for rule in chosen}
    for record in mine:
        if record.rule not in policy.rules:
            unknown[f"rule {record.rule}"] += 1
            continue
        if record.category not in policy.categories:
            unknown[record.category or UNKNOWN_CATEGORY] += 1
            continue
        key = (record.category, record.rule)
        counts[key] += 1
        if record.verdict is not None and record.verdict != policy.verdict(*key):
            off[key] += 1
        balance.setdefault(record.rule, Counter())[record.verdict or "(none)"] += 1
    cells = [
        Cell(row.category, row.rule, row.verdict, counts[(row.category, row.rule)],
             off[(row.category, row.rule)])
        for row in policy.product_table(chosen)
    ]  # fmt: skip
    flagged = policy.flagged_labels
    shares: dict[str, float | None] = {}
    for rule, by_verdict in balance.items():
        total = sum(by_verdict.values())
        hits = sum(n for label, n in by_verdict.items() if label in flagged)
        shares[rule] = hits / total if total else None
    rejections, totals = rejection_reasons(e for e in endings if e.policy == policy.name)
    return PolicyCoverage(
        policy=policy.name,
        rules=chosen,
        categories=list(policy.categories),
        cells=cells,
        balance={rule: dict(sorted(c.items())) for rule, c in balance.items()},
        flagged_share=shares,
        rejections=rejections,
        stage_totals=totals,
        statuses=dict(statuses or {}),
        unknown_categories=dict(unknown.most_common()),
    )


# --------------------------------------------------------------------------- rejection reasons
_STAGE = re.compile(r"^\s*([A-Za-z_][\w.-]*)(?:\[[^\]]*\])?(?::[\w.-]+)?\s*:\s*(.*)$", re.S)
_KIND = re.compile(r"^([a-z_]+)(?=:)")


def reason_of(reason: str) -> tuple[str, str]:
    """(stage, kind) of one stored reason string: ``describer: parse_failed: ...`` ->
    (describer, parse_failed); ``explainer[R2]: verdict No ...`` -> (explainer, the message up
    to its first colon, digits dropped, so reasons that differ by a count read as one)."""
    match = _STAGE.match(reason)
    if not match:  # "image not found: <path>": the words before the detail
        return "other", _normalise(reason.split(":", 1)[0])
    stage, rest = match.group(1), match.group(2)
    kind = _KIND.match(rest)
    return stage, kind.group(1) if kind else _normalise(rest.split(":", 1)[0])


def _normalise(text: str) -> str:
    text = re.sub(r"\d+", "N", text.strip())
    return text if len(text) <= 60 else text[:59] + "…"


def rejection_reasons(
    endings: Iterable[Ending],
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """stage -> reason -> samples, and stage -> samples ending there (a sample counts once per
    stage it names)."""
    by_stage: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for ending in endings:
        if ending.status not in ("rejected", "failed"):
            continue
        pairs: set[tuple[str, str]] = set()
        if ending.status == "rejected" and ending.failed_checks:
            pairs = {(stage.split(":")[0], check) for stage, check in ending.failed_checks}
        elif ending.reasons:
            pairs = {reason_of(ending.reasons[0])}
        else:
            pairs = {("other", "no reason recorded")}
        for stage, reason in pairs:
            by_stage[stage][reason] += 1
        for stage in {stage for stage, _ in pairs}:
            totals[stage] += 1
    return (
        {stage: dict(c.most_common()) for stage, c in sorted(by_stage.items())},
        dict(sorted(totals.items())),
    )


def reasons_list(raw: str | None) -> tuple[str, ...]:
    """A stored ``reasons_json`` as a tuple of strings (text that is not JSON kept whole)."""
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        return (raw,)
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


# --------------------------------------------------------------------------- text
def render_text(report: PolicyCoverage) -> str:
    """The report as plain text: the table (categories x rules, each cell ``count verdict``),
    the empty cells by name, the verdict balance and the rejection reasons."""
    lines = [f"policy {report.policy}: {report.records} accepted records"]
    if report.statuses:
        lines[0] += " (samples: " + ", ".join(
            f"{n} {s}" for s, n in report.statuses.items() if n
        ) + ")"  # fmt: skip
    if not report.rules:
        lines.append("  no accepted records: no rule variant is covered")
    else:
        by_key = {(c.category, c.rule): c for c in report.cells}
        width = max(len(c) for c in report.categories)
        cols = []
        for rule in report.rules:
            texts = [_cell_text(by_key[(cat, rule)]) for cat in report.categories]
            cols.append(max(len(rule), *(len(t) for t in texts)))
        header = "  " + "category".ljust(width) + "  " + "  ".join(
            rule.ljust(w) for rule, w in zip(report.rules, cols, strict=True)
        )  # fmt: skip
        lines += [header, "  " + "-" * (len(header) - 2)]
        for cat in report.categories:
            cells = [
                _cell_text(by_key[(cat, rule)]).ljust(w)
                for rule, w in zip(report.rules, cols, strict=True)
            ]
            lines.append("  " + cat.ljust(width) + "  " + "  ".join(cells).rstrip())
        empty = report.empty_cells
        lines.append(f"  empty cells ({len(empty)} of {len(report.cells)}):")
        lines += _empty_lines(report) or ["    none"]
        lines.append("  verdict balance:")
        for rule in report.rules:
            parts = ", ".join(f"{n} {label}" for label, n in report.balance.get(rule, {}).items())
            share = report.flagged_share.get(rule)
            flagged = "-" if share is None else f"{share:.0%} flagged"
            lines.append(f"    {rule}: {parts or 'none'} ({flagged})")
    if report.unknown_categories:
        lines.append("  records outside the table: " + ", ".join(
            f"{n} {k}" for k, n in report.unknown_categories.items()
        ))  # fmt: skip
    if report.rejections:
        lines.append("  rejection reasons by stage (share of the samples ending there):")
        for stage, reasons in report.rejections.items():
            total = report.stage_totals.get(stage, 0)
            lines.append(f"    {stage} ({total} samples):")
            lines += [f"      {n / total:6.1%}  {n:>4}  {why}" for why, n in reasons.items()]
    return "\n".join(lines)


def _empty_lines(report: PolicyCoverage) -> list[str]:
    """One line per category with an empty cell: ``upper_bust: every rule`` or
    ``middle_leg: R2 (not sexy), R4 (not sexy)``."""
    lines = []
    for category in report.categories:
        empty = [c for c in report.empty_cells if c.category == category]
        if not empty:
            continue
        if len(empty) == len(report.rules):
            verdicts = sorted({c.verdict for c in empty})
            lines.append(f"    {category}: every rule ({', '.join(verdicts)})")
        else:
            lines.append(f"    {category}: " + ", ".join(f"{c.rule} ({c.verdict})" for c in empty))
    return lines


def _cell_text(cell: Cell) -> str:
    """``3 sexy``; ``0 (sexy)`` for an empty cell; ``3 sexy !1`` when one record's verdict is
    not the table's."""
    if cell.count == 0:
        return f"0 ({cell.verdict})"
    text = f"{cell.count} {cell.verdict}"
    return text + f" !{cell.off_verdict}" if cell.off_verdict else text
