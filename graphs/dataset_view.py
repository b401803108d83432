"""What a dataset holds, gathered once for ``icm dataset``, the viewer's coverage page and the
dataset card: per-policy coverage (:mod:`evaluators.coverage`), near-duplicates
(:mod:`evaluators.near_duplicates`) and the rule-contrast pass rate
(:mod:`evaluators.rule_contrast`), from generation runs in a store or from an imported
ICM-Instruct file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.policy import load_policy, parse_policy
from data.policy_models import Policy, PolicyError
from data.store import Store
from data.store import dataset_reads as reads
from evaluators.audit import BadLine, read_records
from evaluators.coverage import Ending, PolicyCoverage, Record, coverage, reasons_list
from evaluators.near_duplicates import DuplicateReport, Text, find_pairs
from evaluators.rule_contrast import ContrastSummary, summarise


class DatasetInputError(ValueError):
    """An input that cannot be read: an unknown run, a bad line in a file, an unknown policy."""


@dataclass
class DatasetView:
    """Everything ``icm dataset`` reports about one set."""

    sources: list[str]
    policies: dict[str, Policy]
    coverage: list[PolicyCoverage]
    duplicates: DuplicateReport | None = None
    contrast: ContrastSummary | None = None
    texts: list[Text] = field(default_factory=list)

    def to_dict(self, examples: int = 5) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "coverage": [c.to_dict() for c in self.coverage],
            "near_duplicates": None if self.duplicates is None
            else self.duplicates.to_dict(examples),
            "rule_contrast": None if self.contrast is None else self.contrast.to_dict(),
        }  # fmt: skip


def stored_policies(store: Store, names: list[str]) -> dict[str, Policy]:
    """The policies the runs used, from the text stored with them (a policy file edited since
    does not change the report); the installed file where the store has none."""
    texts = reads.policy_texts(store, names)
    found: dict[str, Policy] = {}
    for name in names:
        try:
            found[name] = (
                parse_policy(texts[name], name=name) if name in texts else load_policy(name)
            )
        except (PolicyError, FileNotFoundError, ValueError) as exc:
            raise DatasetInputError(f"policy {name!r} of these runs cannot be read: {exc}") from exc
    return found


def from_runs(
    store: Store, run_ids: list[str], *, duplicates: bool = True, threshold: float = 0.7
) -> DatasetView:
    """The view of the accepted samples of these generation runs, taken together."""
    explanations = reads.accepted_explanations(store, run_ids)
    endings_rows = reads.sample_endings(store, run_ids)
    names = sorted({r["policy_name"] for r in endings_rows})
    policies = stored_policies(store, names)
    checks: dict[str, list[tuple[str, str]]] = {}
    for row in reads.final_failed_checks(store, run_ids):
        checks.setdefault(row["sample_id"], []).append((row["stage"], row["check_name"]))
    records = [
        Record(r["sample_id"], r["policy_name"], r["category"], r["rule_variant"], r["verdict"])
        for r in explanations
    ]
    endings = [
        Ending(r["sample_id"], r["policy_name"], r["status"], reasons_list(r["reasons_json"]),
               tuple(checks.get(r["sample_id"], ())))
        for r in endings_rows
    ]  # fmt: skip
    reports = []
    for name, policy in policies.items():
        statuses = Counter(r["status"] for r in endings_rows if r["policy_name"] == name)
        rules = _run_rules(endings_rows, name, policy)
        reports.append(coverage(policy, records, endings, rules=rules, statuses=dict(statuses)))
    texts = [Text(r["sample_id"], r["kind"], r["key"], r["text"])
             for r in reads.accepted_texts(store, run_ids)]  # fmt: skip
    view = DatasetView(list(run_ids), policies, reports, texts=texts)
    view.contrast = summarise(policies, explanations)
    if duplicates:
        view.duplicates = find_pairs(texts, threshold=threshold)
    return view


def _run_rules(rows: list[dict[str, Any]], name: str, policy: Policy) -> list[str] | None:
    """The rule variants these runs asked for under this policy (from the samples'
    ``rule_variants``), in the policy's order; None when not recorded."""
    asked: set[str] = set()
    for row in rows:
        if row["policy_name"] == name and row.get("rule_variants"):
            asked.update(str(row["rule_variants"]).split(","))
    return [r for r in policy.rules if r in asked] or None


def from_instruct_file(
    path: Path,
    policy: Policy,
    *,
    rule: str | None = None,
    duplicates: bool = True,
    threshold: float = 0.7,
) -> DatasetView:
    """The view of an ICM-Instruct file (the released records: ``category`` and ``label``,
    the label under the policy's base rule unless ``rule`` is given). Every record is an
    accepted one: the file holds no rejections."""
    chosen = rule or policy.base_rule
    if chosen is None or chosen not in policy.rules:
        raise DatasetInputError(
            f"{path}: policy {policy.name} has no base rule; pass --rule (one of "
            f"{', '.join(policy.rules)})"
        )
    records, texts, bad = [], [], []
    for number, item in read_records(path):
        if isinstance(item, BadLine):
            bad.append(f"{path}:{item.line}: {item.message}")
            continue
        sid = f"{item.image}#{number}"
        records.append(Record(sid, policy.name, item.category, chosen, item.label))
        texts.append(Text(sid, "explanation", chosen, item.explanation))
        for n, qa in enumerate(item.qa):
            texts.append(Text(sid, "qa", str(n), f"{qa.question} {qa.answer}"))
        for n, mc in enumerate(item.mc, start=len(item.qa)):
            texts.append(Text(sid, "qa", str(n), " ".join([mc.question, *mc.choices, mc.answer])))
    if bad:
        more = f" (and {len(bad) - 1} more bad lines)" if len(bad) > 1 else ""
        raise DatasetInputError(bad[0] + more)
    report = coverage(policy, records, rules=[chosen], statuses={"accepted": len(records)})
    view = DatasetView([str(path)], {policy.name: policy}, [report], texts=texts)
    if duplicates:
        view.duplicates = find_pairs(texts, threshold=threshold)
    return view
