"""The dataset card an export writes beside its data: ``README.md`` in the Hugging Face
dataset-card format (YAML metadata between ``---`` lines, then Markdown).

It says what a reader of the set needs before training on it, from what the store recorded:
what the set is, the policy and its rule variants (audience age and culture), the role -> model
binding, the prompt hashes, the checks that ran and how often each failed, counts by status and
rejection reason, the coverage table, the images' sources and licences as the manifest gives
them, and how to reproduce it (the exact command and the revision).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data.store import Store, from_json
from data.store import dataset_reads as reads
from data.store.outcomes import failure_kind
from evaluators.coverage import render_text as coverage_text
from graphs.dataset_view import DatasetView, from_runs

CARD_NAME = "README.md"


@dataclass(frozen=True)
class CardInputs:
    """What the card is made of, gathered from the store."""

    runs: list[dict[str, Any]]
    view: DatasetView
    statuses: dict[str, int]
    checks: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    manifest_rows: dict[str, dict[str, Any]]
    fmt: str
    records: int


def card_path(out: Path, fmt: str) -> Path:
    """Where the card of an export at ``out`` goes: ``README.md`` inside an hf folder, else
    ``<export>.README.md`` beside the file (several exports may share a folder)."""
    return out / CARD_NAME if fmt == "hf" else out.with_name(out.name + "." + CARD_NAME)


def gather(store: Store, runs: Sequence[dict[str, Any]], fmt: str, records: int) -> CardInputs:
    ids = [r["run_id"] for r in runs]
    view = from_runs(store, ids, duplicates=False)
    statuses: dict[str, int] = {}
    for row in reads.sample_endings(store, ids):
        label = row["status"]
        if failure_kind(label, row["reasons_json"]) == "refused":
            label = "failed (refused)"
        statuses[label] = statuses.get(label, 0) + 1
    manifest_rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        manifest_rows.update(_manifest_rows(run))
    return CardInputs(
        runs=list(runs),
        view=view,
        statuses=statuses,
        checks=reads.checks_run(store, ids),
        sources=reads.run_sources(store, ids),
        manifest_rows=manifest_rows,
        fmt=fmt,
        records=records,
    )


def _manifest_rows(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """image file name -> its manifest row (source, licence), when the run's manifest is a
    JSONL file still at the path the run recorded; empty otherwise (the card says so)."""
    config = from_json(run.get("config_json")) or {}
    identity = config.get("identity") or {}
    path = identity.get("manifest") or config.get("manifest")
    if not path or not str(path).endswith(".jsonl") or not Path(path).is_file():
        return {}
    rows = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("image"), str):
            rows[Path(value["image"]).name] = value
    return rows


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def _cell(value: Any) -> str:
    return str(value if value is not None else "-").replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _binding(run: dict[str, Any]) -> list[tuple[str, Any]]:
    bindings = from_json(run.get("role_bindings_json")) or {}
    rows = []
    for role, spec in sorted(bindings.items()):
        rows.append((role, spec.get("spec") if isinstance(spec, dict) else spec))
    return rows


def render(inputs: CardInputs) -> str:
    """The card's text: YAML metadata, then the Markdown sections."""
    runs, view = inputs.runs, inputs.view
    names = ", ".join(r["name"] for r in runs)
    meta = {
        "pretty_name": f"ICM-Instruct set: {names}",
        "language": ["en"],
        "license": "other",
        "task_categories": ["visual-question-answering", "image-classification"],
        "tags": ["content-moderation", "icm-instruct", "rule-conditioned", "synthetic"],
        "size_categories": [_size_category(inputs.records)],
    }
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]
    lines += [f"# {meta['pretty_name']}", ""]
    lines += [
        "## What this set is",
        "",
        f"Rule-based, explainable image content moderation data (ICM-Instruct records) written "
        f"by the agent pipeline of icm-assistant: {inputs.records} records in `{inputs.fmt}` "
        f"format, one per accepted sample and rule variant, from the generation run(s) "
        f"{names}. Each record holds the policy's question under one rule variant, the verdict "
        "from the policy's rule table, an explanation of that verdict and question-answer "
        "pairs about the image.",
        "",
    ]
    lines += ["## Policy and rule variants", ""]
    for name, policy in view.policies.items():
        lines += [f"**{name}** ({policy.title}, sha256 `{policy.sha256[:12]}`): {policy.question}",
                  ""]  # fmt: skip
        lines += _table(
            ["rule", "audience age", "culture", "description"],
            [(rule, v.audience.age_group, v.audience.culture, v.description)
             for rule, v in policy.rules.items()],
        )  # fmt: skip
        lines.append("")
    lines += ["## How it was made", "", "Role → model binding:", ""]
    for run in runs:
        if len(runs) > 1:
            lines += [f"Run {run['name']} ({run['run_id']}):", ""]
        lines += _table(["role", "model"], _binding(run))
        lines.append("")
    lines += ["Prompt template hashes (sha256):", ""]
    hashes: dict[str, str] = {}
    for run in runs:
        hashes.update(from_json(run.get("prompt_hashes_json")) or {})
    lines += [*_table(["template", "sha256"], sorted(hashes.items())), ""]
    lines += ["Checks that ran (critic passes; a failure sends the stage back with feedback):", ""]
    checks = [
        (c["stage"], c["check_name"], c["source"], c["passed"], c["failed"]) for c in inputs.checks
    ]
    lines += (
        _table(["stage", "check", "source", "passed", "failed"], checks)
        if checks
        else ["No critic checks ran (checks off, or no sample reached them)."]
    )
    lines.append("")
    lines += ["## Counts", "", "Samples by status:", ""]
    lines += [*_table(["status", "samples"], sorted(inputs.statuses.items())), ""]
    reasons = [
        (report.policy, stage, why, n)
        for report in view.coverage
        for stage, by_reason in report.rejections.items()
        for why, n in by_reason.items()
    ]
    lines += ["Rejection reasons by stage (a rejected sample's checks failing in its last pass, a "
              "failed sample's first reason):", ""]  # fmt: skip
    lines += (_table(["policy", "stage", "reason", "samples"], reasons) if reasons
              else ["None: no sample was rejected or failed."])  # fmt: skip
    lines += ["", "## Coverage of the product table", ""]
    lines += ["Accepted records per category × rule variant, with the cell's verdict; "
              "`0 (verdict)` is an empty cell.", ""]  # fmt: skip
    for report in view.coverage:
        lines += ["```text", coverage_text(report), "```", ""]
    lines += ["## Image sources and licences", ""]
    if inputs.manifest_rows:
        rows = []
        for row in inputs.sources:
            file = Path(str(row["image_path"] or "")).name
            entry = inputs.manifest_rows.get(file, {})
            rows.append((file, entry.get("source") or row["source"], entry.get("licence")))
        lines += _table(["image", "source", "licence"], rows)
    else:
        lines += ["The run's manifest is not at its recorded path (or is not JSONL): sources as "
                  "stored, licences unknown.", ""]  # fmt: skip
        lines += _table(["image", "source"],
                        [(Path(str(r["image_path"] or "")).name, r["source"])
                         for r in inputs.sources])  # fmt: skip
    lines += ["", "## How to reproduce", ""]
    for run in runs:
        config = from_json(run.get("config_json")) or {}
        manifest = (config.get("identity") or {}).get("manifest") or config.get("manifest")
        lines += [
            f"Run {run['name']} ({run['run_id']}), {run['status']}, started {run['created_at']}:",
            "",
            "```bash",
            str(run.get("command") or "(command not recorded)"),
            "```",
            "",
            f"- revision: `{run.get('git_revision') or 'unknown'}`",
            f"- manifest: `{manifest}`",
            f"- packages: `{run.get('package_versions_json') or '-'}`",
            "",
        ]
    lines += [
        "The generation cache (DuckDB `llm_cache`) replays every model answer of these runs, so "
        "re-running the command on the same store and revision reproduces the records exactly.",
        "",
    ]
    return "\n".join(lines)


def write_card(store: Store, runs: Sequence[dict[str, Any]], out: Path, fmt: str,
               records: int) -> Path:  # fmt: skip
    """Write the card of the export at ``out`` (atomically: a temporary file, then a rename)."""
    path = card_path(out, fmt)
    text = render(gather(store, runs, fmt, records))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
