"""``icm compare``, ``icm audit`` and ``icm metrics``: plain Typer command functions that
``graphs/cli.py`` mounts at the top level.

Each gathers its numbers through a function that returns plain data (:func:`compare_runs`,
:func:`audit_file`, :func:`classification_table`) and only formats them here, so ``--json``
prints exactly what the tables show and tests read the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from data.policy import PolicyError, load_policy
from data.store import DEFAULT_DB_PATH
from evaluators.audit import AuditReport, audit_file
from evaluators.compare import Comparison, RunLookupError, compare_runs, resolve_runs
from evaluators.metrics import (
    GROUPINGS,
    classification_table,
    policy_flags,
    predictions_frame,
)
from graphs.commands.runs import DbOption, JsonOption, fail, open_read_only

DEFAULT_COMPARE_DIR = Path("runs") / "compare"


def _console() -> Console:
    """Lines are not hard-wrapped (a record name or a path stays greppable); tables fit."""
    return Console(highlight=False, soft_wrap=True)


def _num(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


# --------------------------------------------------------------------------- icm compare
def compare_command(
    runs: Annotated[
        list[str], typer.Argument(help="Runs to compare: run ids, run names or id prefixes.")
    ],
    db: DbOption = DEFAULT_DB_PATH,
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for the PNG plots (created if missing)."),
    ] = DEFAULT_COMPARE_DIR,
    json_: JsonOption = False,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="Judge spec whose scores to compare (default: the one that judged most items).",
        ),
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap intervals.")] = 0,
) -> None:
    """Compare generation runs: acceptance, retries, critic failures, judge scores with 95 %
    intervals, tokens, cost and latency; writes score and cost-vs-quality plots."""
    with open_read_only(db) as store:
        try:
            comparison = compare_runs(store, runs, judge=judge, seed=seed)
        except RunLookupError as exc:
            raise fail(str(exc)) from exc
    written: dict[str, Path | None] = {}
    if plots:
        from evaluators.plots import PlotError, write_plots  # only with --plots

        try:
            written = write_plots(comparison, out)
        except PlotError as exc:
            raise fail(str(exc)) from exc
    if json_:
        payload = comparison.to_dict() | {
            "plots": {k: None if v is None else str(v) for k, v in written.items()}
        }
        typer.echo(json.dumps(payload, ensure_ascii=False, default=str))
        return
    console = _console()
    console.print(comparison_table(comparison))
    if comparison.judge_spec is None:
        console.print("No judge scores for these runs yet: `icm judge` scores a run.")
    elif len(comparison.judge_specs) > 1:
        others = ", ".join(s for s in comparison.judge_specs if s != comparison.judge_spec)
        console.print(f"Scores by {comparison.judge_spec}; also judged by {others} (--judge).")
    for name, path in written.items():
        console.print(f"{name} plot: {path}" if path else f"{name} plot: nothing to plot")


def comparison_table(comparison: Comparison) -> Table:
    """Metrics as rows, runs as columns: two to five runs read side by side."""
    table = Table(title="run comparison", show_lines=False)
    table.add_column("", style="bold", no_wrap=True)
    for run in comparison.runs:
        head = escape(run["name"])
        if run["run_id"] != run["name"]:
            head += f"\n[dim]{escape(run['run_id'])}[/dim]"
        table.add_column(head, overflow="fold")

    def row(label: str, cells: list[str]) -> None:
        table.add_row(label, *cells)

    runs = comparison.runs
    row("roles", [_roles(r["roles_compact"]) for r in runs])
    row("samples", [f"{r['samples']}" for r in runs])
    row(
        "acc/rej/fail/pending",
        [f"{r['accepted']}/{r['rejected']}/{r['failed']}/{r['pending']}" for r in runs],
    )
    row("of failed: refused", [str(r["refused"]) for r in runs])
    row("acceptance rate", [_num(r["acceptance_rate"], ".1%") for r in runs])
    row("retries per sample", [_num(r["retries_per_sample"], ".2f") for r in runs])
    row("critic failures", [_failures(r["critic_failures"]) for r in runs])
    for criterion in comparison.criteria:
        row(f"judge {criterion}", [_score(r["scores"].get(criterion)) for r in runs])
    if comparison.criteria:
        row("judge unscored", [str(r["judge_unscored"]) for r in runs])
    row("tokens (in+out)", [f"{r['tokens']:,}" for r in runs])
    row("calls (cached)", [f"{r['calls']} ({r['cache_hits']})" for r in runs])
    row("cost", [_num(r["cost_usd"], ".4f", " USD") for r in runs])
    row("cost per accepted", [_num(r["cost_per_accepted_usd"], ".5f", " USD") for r in runs])
    row("mean latency per call", [_num(r["mean_latency_ms"], ".0f", " ms") for r in runs])
    return table


def _roles(compact: str) -> str:
    """One line per group of roles sharing a model, with room to wrap between role names."""
    if not compact:
        return "-"
    return "\n".join(escape(group.replace(",", ", ")) for group in compact.split(" "))


def _failures(counts: dict[str, int], top: int = 3) -> str:
    if not counts:
        return "none"
    shown = [f"{escape(name)} x{n}" for name, n in list(counts.items())[:top]]
    if len(counts) > top:
        shown.append(f"(+{len(counts) - top} more)")
    return "\n".join(shown)


def _score(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    return (
        f"{summary['mean']:.1f} [{summary['ci_low']:.1f}, {summary['ci_high']:.1f}] "
        f"n={summary['n']}"
    )


# --------------------------------------------------------------------------- icm audit
def audit_command(
    file: Annotated[
        Path,
        typer.Argument(help="ICM-Instruct JSONL file (image, label, explanation, qa, mc a line)."),
    ],
    policy: Annotated[
        str,
        typer.Option("--policy", help="Policy whose term and labels the records use."),
    ] = "icm_sexy",
    json_: Annotated[
        bool, typer.Option("--json", help="Print counts (and examples) as JSON.")
    ] = False,
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="Examples to show per kind of finding.")
    ] = 3,
) -> None:
    """Run the critic's deterministic checks over an existing ICM-Instruct dataset and report
    contradictions by kind, with examples."""
    if not file.is_file():
        raise fail(f"no file at {file}")
    try:
        loaded = load_policy(policy)
    except PolicyError as exc:
        raise fail(str(exc)) from exc
    report = audit_file(file, loaded)
    for bad in report.bad_lines:
        typer.echo(f"error: {file}:{bad.line}: {bad.message}", err=True)
    if json_:
        typer.echo(json.dumps(report.to_dict(examples), ensure_ascii=False))
        return
    render_audit(report, examples, _console())


def render_audit(report: AuditReport, examples: int, console: Console) -> None:
    """Counts by kind, then examples of each kind that has findings."""
    with_findings = len({(f.line, f.record) for f in report.findings})
    console.print(
        f"{escape(report.file)}: {report.records} records, {with_findings} with findings, "
        f"{len(report.bad_lines)} bad lines (policy {report.policy})"
    )
    table = Table(title="findings by kind")
    table.add_column("kind")
    table.add_column("findings", justify="right")
    table.add_column("records", justify="right")
    affected = report.records_affected()
    for kind, count in report.counts().items():
        style = "" if count else "dim"
        table.add_row(kind, str(count), str(affected[kind]), style=style)
    console.print(table)
    for kind, found in report.examples(examples).items():
        console.print(f"\n[bold]{kind}[/bold] ({report.counts()[kind]})")
        for f in found:
            console.print(f"  {escape(f.record)} (line {f.line})")
            if f.question:
                console.print(f"    Q: {escape(f.question)}")
            console.print(f"    A: {escape(_clip(f.answer))}")
            console.print(f"    why: {escape(f.why)}")


def _clip(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- icm metrics
def metrics_command(
    run: Annotated[str, typer.Argument(help="Predictions run: run id, name or id prefix.")],
    db: DbOption = DEFAULT_DB_PATH,
    json_: JsonOption = False,
) -> None:
    """Classification metrics of a moderation run's predictions (accuracy, precision, recall,
    F1 for the flagged label) per policy and rule variant, and per category."""
    with open_read_only(db) as store:
        try:
            found = resolve_runs(store, [run])[0]
        except RunLookupError as exc:
            raise fail(str(exc)) from exc
        frame = predictions_frame(store, found["run_id"])
    if frame.empty:
        raise fail(f"run {found['name']} ({found['run_id']}) has no predictions")
    try:
        flags = policy_flags(frame["policy_name"].unique())
    except PolicyError as exc:
        raise fail(f"cannot read which verdict is flagged: {exc}") from exc
    result = {
        "run_id": found["run_id"],
        "name": found["name"],
        **{name: classification_table(frame, flags, by) for name, by in GROUPINGS.items()},
    }
    if json_:
        typer.echo(json.dumps(result, ensure_ascii=False, default=str))
        return
    console = _console()
    policies = sorted(frame["policy_name"].unique())
    for name, by in GROUPINGS.items():
        title = f"{found['name']}: {name}"
        if len(policies) == 1:  # one policy: name it in the title, keep the width for numbers
            by = tuple(k for k in by if k != "policy_name")
            title += f" ({policies[0]})"
        console.print(_metrics_table(result[name], by, title))


def _metrics_table(rows: list[dict[str, Any]], keys: tuple[str, ...], title: str) -> Table:
    table = Table(
        title=escape(title),
        caption="positive class: the policy's flagged verdict; unscored: not ok or no label",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for key in keys:
        table.add_column(_KEY_HEADERS.get(key, key), no_wrap=True)
    for column in ("n", "unscored", "tp", "fp", "tn", "fn", "acc", "prec", "rec", "F1"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            *(escape(str(r[k])) for k in keys),
            str(r["scored"]),
            str(r["unscored"]),
            *(str(r[c]) for c in ("tp", "fp", "tn", "fn")),
            *(_num(r[m], ".3f") for m in ("accuracy", "precision", "recall", "f1")),
        )
    return table


_KEY_HEADERS = {"policy_name": "policy", "rule_variant": "rule"}
