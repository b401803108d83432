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
from data.store import DEFAULT_DB_PATH, Store
from data.store.predictions import mqa_answers
from evaluators.audit import AuditReport, audit_file
from evaluators.compare import Comparison, RunLookupError, compare_runs, resolve_runs
from evaluators.metrics import (
    GROUPINGS,
    classification_table,
    policy_flags,
    predictions_frame,
)
from evaluators.paper_import import ImportFormatError, MQAFile, import_predictions, paper_figures
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
    row("rule contrast pass", [_contrast(r.get("rule_contrast")) for r in runs])
    for criterion in comparison.criteria:
        row(f"judge {criterion}", [_score(r["scores"].get(criterion)) for r in runs])
    if comparison.criteria:
        row("judge unscored", [str(r["judge_unscored"]) for r in runs])
    row("tokens (in+out)", [f"{r['tokens']:,}" for r in runs])
    if any(r["cached_input_tokens"] or r["cache_write_tokens"] for r in runs):
        row("input read from prompt cache", [f"{r['cached_input_tokens']:,}" for r in runs])
    row("calls (cached)", [f"{r['calls']} ({r['cache_hits']})" for r in runs])
    row("earlier-attempt calls", [str(r["earlier_attempt_calls"]) for r in runs])
    row("cost", [_num(r["cost_usd"], ".4f", " USD") for r in runs])
    per = [r["per_accepted"] for r in runs]
    row("cost per accepted", [_interval(p["usd"], ".5f", " USD") for p in per])
    row("tokens per accepted", [_interval(p["tokens"], ",.0f", "") for p in per])
    row("mean latency per call", [_num(r["mean_latency_ms"], ".0f", " ms") for r in runs])
    return table


def _contrast(summary: dict[str, Any] | None) -> str:
    """``3/4 (75%)``: samples whose verdict flips across rules that pass the contrast check."""
    if not summary or not summary["checked"]:
        return "- (no verdict flips)"
    return f"{summary['passed']}/{summary['checked']} ({summary['rate']:.0%})"


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


def _interval(figure: dict[str, Any] | None, spec: str, unit: str) -> str:
    """``0.00123 USD [0.00101, 0.00150]``: the value and its bootstrap 95 % interval."""
    if figure is None:
        return "-"
    text = f"{figure['value']:{spec}}{unit}"
    if figure["ci_low"] is not None:
        text += f"\n[{figure['ci_low']:{spec}}, {figure['ci_high']:{spec}}]"
    return text


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
    run: Annotated[
        str | None,
        typer.Argument(help="Predictions run: run id, name or id prefix (or use --predictions)."),
    ] = None,
    db: DbOption = DEFAULT_DB_PATH,
    json_: JsonOption = False,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            exists=True,
            dir_okay=False,
            help="Import a model's outputs as a new run first: the paper's eval_icm_val / "
            "eval_icm_test JSON (--format icm-assistant) or JSONL of image, rule, verdict or "
            "score, expected (--format jsonl).",
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Format of --predictions: icm-assistant or jsonl.")
    ] = "icm-assistant",
    mqa_mc_answers: Annotated[
        Path | None,
        typer.Option(
            "--mqa-mc-answers",
            exists=True,
            dir_okay=False,
            help="Paper-format MQA answers (image/answer lines), multiple choice.",
        ),
    ] = None,
    mqa_mc_reference: Annotated[
        Path | None,
        typer.Option(
            "--mqa-mc-reference",
            exists=True,
            dir_okay=False,
            help="Their reference answers (the paper's mc_gt.txt).",
        ),
    ] = None,
    mqa_qa_answers: Annotated[
        Path | None,
        typer.Option(
            "--mqa-qa-answers",
            exists=True,
            dir_okay=False,
            help="Paper-format MQA answers, yes/no and open questions.",
        ),
    ] = None,
    mqa_qa_reference: Annotated[
        Path | None,
        typer.Option(
            "--mqa-qa-reference",
            exists=True,
            dir_okay=False,
            help="Their reference answers (the paper's openqa_gt.txt).",
        ),
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", help="Policy of imported predictions (name or YAML path).")
    ] = "icm_sexy",
    name: Annotated[str | None, typer.Option("--name", help="Name of the imported run.")] = None,
) -> None:
    """Classification metrics of a moderation run's predictions (accuracy, precision, recall,
    F1 for the flagged label) per policy and rule variant, and per category; for runs with MQA
    answers or imported paper outputs, also the paper scripts' own figures."""
    mqa = []
    for kind, answers, reference in (("mqa_mc", mqa_mc_answers, mqa_mc_reference),
                                     ("mqa_qa", mqa_qa_answers, mqa_qa_reference)):  # fmt: skip
        if (answers is None) != (reference is None):
            raise fail(f"--{kind.replace('_', '-')}-answers and -reference go together")
        if answers is not None and reference is not None:
            mqa.append(MQAFile(answers, reference, kind))
    importing = predictions is not None or bool(mqa)
    if importing == (run is not None):
        raise fail("give a RUN to report, or --predictions / --mqa-* files to import (not both)")
    if importing:
        try:
            with Store.open(db) as store:
                run = import_predictions(
                    store, policy=load_policy(policy), predictions=predictions, fmt=fmt,
                    mqa=mqa, name=name,
                )[0]  # fmt: skip
        except (ImportFormatError, PolicyError) as exc:
            raise fail(str(exc)) from exc
    assert run is not None
    with open_read_only(db) as store:
        try:
            found = resolve_runs(store, [run])[0]
        except RunLookupError as exc:
            raise fail(str(exc)) from exc
        frame = predictions_frame(store, found["run_id"])
        answers_frame = mqa_answers(store, found["run_id"])
    if frame.empty and answers_frame.empty:
        raise fail(f"run {found['name']} ({found['run_id']}) has no predictions")
    policies = sorted(frame["policy_name"].unique()) if len(frame) else []
    paper = None
    if len(policies) <= 1:
        try:
            paper_policy = load_policy(policies[0] if policies else policy)
        except PolicyError as exc:
            raise fail(f"cannot read which verdict is flagged: {exc}") from exc
        paper = paper_figures(frame, answers_frame, paper_policy)
    if frame.empty:
        _report_mqa_only(found, paper, json_)
        return
    try:
        flags = policy_flags(frame["policy_name"].unique())
    except PolicyError as exc:
        raise fail(f"cannot read which verdict is flagged: {exc}") from exc
    result = {
        "run_id": found["run_id"],
        "name": found["name"],
        **{group: classification_table(frame, flags, by) for group, by in GROUPINGS.items()},
        "paper": paper,
    }
    if json_:
        typer.echo(json.dumps(result, ensure_ascii=False, default=str))
        return
    console = _console()
    for group, by in GROUPINGS.items():
        title = f"{found['name']}: {group}"
        if len(policies) == 1:  # one policy: name it in the title, keep the width for numbers
            by = tuple(k for k in by if k != "policy_name")
            title += f" ({policies[0]})"
        console.print(_metrics_table(result[group], by, title))
    _print_paper(console, paper)


def _report_mqa_only(found: dict[str, Any], paper: dict[str, Any] | None, json_: bool) -> None:
    if json_:
        typer.echo(json.dumps({"run_id": found["run_id"], "name": found["name"], "paper": paper}))
        return
    _print_paper(_console(), paper)


def _print_paper(console: Console, paper: dict[str, Any] | None) -> None:
    """The paper scripts' figures, where the run has what they need."""
    if not paper:
        return
    if paper["icm_val_accuracy"] is not None:
        console.print(
            f"ICM-Val accuracy, the paper's formula (eval_icm_val: score > 0.5, an image counted "
            f"under every category keyword its name contains): {paper['icm_val_accuracy']:.4f}"
        )
    if paper["icm_test_accuracy"] is not None:
        console.print(
            "ICM-Test accuracy, the paper's formula (eval_icm_test: score < 0.5 is not sexy): "
            f"{paper['icm_test_accuracy']:.4f}"
        )
    if paper["mqa_n"]:
        parts = [
            f"{label} {_num(paper[f'{key}_accuracy'], '.4f')} (n={paper[f'{key}_n']})"
            for key, label in (
                ("mqa", "total"),
                ("mqa_mc", "multiple choice"),
                ("mqa_qa", "yes/no + open"),
            )
            if paper[f"{key}_n"]
        ]
        console.print(
            "MQA accuracy, the paper's formula (eval_mqa: first character, one of A-D/Y/N, "
            "equals the reference's): " + ", ".join(parts)
        )


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
