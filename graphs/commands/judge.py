"""``icm judge``: score a run's explanations, compare two runs, calibrate a judge, refit the metric.

Every command that judges is a run in the store (``runs.kind`` = ``judge``, ``pairwise`` or
``calibrate``) with its judgments and, for ``calibrate``, a ``calibrations`` row. The numbers
printed come from the same report objects that ``--json`` prints and the store keeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.judge import make_judge
from agents.models.credentials import MissingCredentialsError
from agents.models.settings import DEFAULT_SPEC
from data.store import DEFAULT_DB_PATH, Store, StoreError
from evaluators.calibration import (
    CalibrationReport,
    calibrate,
    load_meq_set,
    report_json,
    select,
)
from evaluators.judge_schemas import MEQ_RUBRICS, rubric_settings
from evaluators.judgments import Judge, Judgment, judge_repeated
from graphs.console import make_console, styled
from graphs.judging import (
    PairwiseReport,
    RunNotFoundError,
    ScoreReport,
    build_score_report,
    explanation_rows,
    finish_run,
    free_items,
    judge_pairs,
    load_references,
    meq_items_for_run,
    new_run_id,
    pair_items,
    pairwise_report,
    record_report,
    run_warnings,
    start_run,
    store_calibration,
    store_judgments,
)
from graphs.presets import JUDGE, check_preset, option

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)

app = typer.Typer(
    help="Judge explanations (MEQ, reference-free, pairwise) and calibrate judges.",
    no_args_is_help=True,
)


class SplitChoice(StrEnum):
    held_out = "held_out"
    fit = "fit"
    all = "all"


class RubricChoice(StrEnum):
    free = "free"
    meq = "meq"
    meq_paper = "meq-paper"


class MEQRubricChoice(StrEnum):
    meq = "meq"
    meq_paper = "meq-paper"


DbOption = Annotated[Path, typer.Option("--db", help="DuckDB store to write the run into.")]
JudgeOption = Annotated[
    str,
    typer.Option(
        "--judge",
        help="Judge spec: any model spec (openai:gpt-4o, local:smollm2, ...) or metric:minilm.",
    ),
]
SettingOption = Annotated[
    list[str],
    typer.Option(
        "--judge-setting",
        help="KEY=VALUE role setting of the judge model, repeatable (temperature=0.7).",
    ),
]
RepeatsOption = Annotated[
    int, typer.Option("--repeats", min=1, help="Judge each item N times; report mean and std.")
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Judge at most N items.")]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Do not read the LLM cache.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="paper: the paper's MEQ rubric (--rubric meq-paper, temperature 0.2); an explicit "
        "--rubric wins.",
    ),
]


def _preset_rubric(preset: str | None, given: str | None, default: str) -> str:
    try:
        check_preset(preset)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    return option(JUDGE, preset, "rubric", given, default)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _num(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _open(db: Path) -> Store:
    try:
        return Store.open(db)
    except StoreError as exc:
        raise _fail(str(exc)) from exc


def _warn(warnings: list[str]) -> None:
    err = make_console(stderr=True)
    for warning in warnings:
        err.print(styled("[yellow]warning:[/] {}", warning))


async def _with_judge(
    store: Store,
    run_id: str,
    spec: str,
    settings: list[str],
    use_cache: bool,
    work: Callable[[Judge], Awaitable[T]],
) -> T:
    """Build the judge (bound to the run), run ``work``, always close it (flushes traces)."""
    try:
        judge = make_judge(
            spec, store=store, run_id=run_id, use_cache=use_cache, settings=tuple(settings)
        )
        judge.check()
    except (ValueError, MissingCredentialsError, RuntimeError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    try:
        return await work(judge)
    finally:
        await judge.aclose()


def _progress(total: int, label: str) -> Progress:
    progress = Progress(
        TextColumn(label.replace("{", "{{").replace("}", "}}"), style="bold", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=make_console(stderr=True),
        transient=True,
    )
    progress.add_task(label, total=total)
    return progress


def _flatten(per_item: list[list[Judgment]]) -> list[Judgment]:
    return [j for js in per_item for j in js]


# --------------------------------------------------------------------------- calibrate
@app.command("calibrate")
def calibrate_command(
    set_path: Annotated[
        Path,
        typer.Option(
            "--set",
            exists=True,
            help="MEQ JSONL (reference, candidate, scores), or a folder of the paper's released "
            "judgment files (eval_scripts/eval_meq/<model>/).",
        ),
    ],
    judge: JudgeOption = "metric:minilm",
    db: DbOption = DEFAULT_DB_PATH,
    split: Annotated[
        SplitChoice, typer.Option("--split", help="Which fixed part of the set to judge.")
    ] = SplitChoice.held_out,
    limit: LimitOption = None,
    repeats: RepeatsOption = 1,
    judge_setting: SettingOption = [],  # noqa: B006 - typer reads the default, never mutates it
    no_cache: NoCacheOption = False,
    json_: JsonOption = False,
    rubric_given: Annotated[
        MEQRubricChoice | None,
        typer.Option(
            "--rubric",
            help="meq: our MEQ prompt (rationale, then scores); meq-paper: the paper's wording, "
            "scores as a table, temperature 0.2 unless --judge-setting temperature=... is given "
            "[meq].",
        ),
    ] = None,
    preset: PresetOption = None,
) -> None:
    """Run the judge on each (reference, candidate) pair and correlate with GPT-4o's scores.

    MEQ is printed both ways: unparseable answers excluded (ours) and scored 0 (the paper's)."""
    given = rubric_given.value if rubric_given else None
    rubric = MEQRubricChoice(_preset_rubric(preset, given, MEQRubricChoice.meq.value))
    try:
        n_items = len(select(load_meq_set(set_path), split.value, limit))
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    store = _open(db)
    run_id = new_run_id("calibrate")
    settings = list(rubric_settings(rubric.value, judge_setting))

    async def work(j: Judge) -> CalibrationReport:
        config = {"set": str(set_path), "split": split.value, "limit": limit, "repeats": repeats,
                  "judge_settings": settings, "rubric": rubric.value}  # fmt: skip

        async def body() -> tuple[list[Judgment], CalibrationReport]:
            with _progress(n_items * repeats, f"calibrate {j.spec}") as progress:
                task = progress.task_ids[0]
                report, per_item = await calibrate(
                    j, set_path, split=split.value, limit=limit, repeats=repeats,
                    progress=lambda n: progress.advance(task, n), rubric=rubric.value,
                )  # fmt: skip
            store_calibration(store, run_id, report)
            return _flatten(per_item), report

        return await _recorded(store, run_id, "calibrate", j, config, body)

    report = _run_with_judge(store, run_id, judge, settings, no_cache, work)
    _warn(report.warnings)
    if json_:
        typer.echo(report_json(report))
        return
    _print_calibration(report, run_id)


def _run_with_judge(
    store: Store,
    run_id: str,
    spec: str,
    settings: list[str],
    no_cache: bool,
    work: Callable[[Judge], Awaitable[T]],
) -> T:
    """Run a judge command's ``work`` in its own event loop, closing the store afterwards."""
    with store:
        return asyncio.run(_with_judge(store, run_id, spec, settings, not no_cache, work))


async def _recorded(
    store: Store,
    run_id: str,
    kind: str,
    judge: Judge,
    config: dict[str, Any],
    body: Callable[[], Awaitable[tuple[list[Judgment], R]]],
) -> R:
    """Record the run (kind, judge, config), run ``body``, store the judgments and the report
    it returns; an error marks the run failed."""
    start_run(store, run_id, kind=kind, judge_spec=judge.spec, config=config)

    async def recorded() -> R:
        judgments, report = await body()
        store_judgments(store, run_id, judgments)
        record_report(store, run_id, report)
        return report

    return await _async_guarded(store, run_id, recorded)


async def _async_guarded(store: Store, run_id: str, body: Callable[[], Awaitable[T]]) -> T:
    try:
        result = await body()
    except BaseException:
        finish_run(store, run_id, "failed")
        raise
    finish_run(store, run_id)
    return result


def _print_calibration(report: CalibrationReport, run_id: str) -> None:
    console = make_console()
    title = (
        f"{report.judge_spec} ({report.judge_kind}, {report.rubric} rubric) vs "
        f"{report.reference_judge}: {report.split}, {report.n_items} pairs"
    )
    table = Table(title=title)
    for column in ("criterion", "n", "Spearman", "Kendall", "MAD", "judge mean", "GPT-4o mean"):
        table.add_column(column, justify="left" if column == "criterion" else "right")
    for name, s in report.criteria.items():
        table.add_row(
            name, str(s.n), _num(s.spearman), _num(s.kendall), _num(s.mad, ".1f"),
            _num(s.judge_mean, ".1f"), _num(s.reference_mean, ".1f"),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"unscored: {report.n_unscored}/{report.n_items} ({report.unscored_rate:.1%}) "
        f"statuses: {report.status_counts}"
    )
    console.print(
        f"MEQ: judge {_num(report.meq['judge'])} (unparseable excluded, ours) | "
        f"{_num(report.meq.get('judge_zero_unparseable'))} (unparseable = 0, the paper's); "
        f"{report.reference_judge} {_num(report.meq['reference_same_items'])} on the scored pairs"
    )
    if report.repeat_std:
        spread = ", ".join(f"{k} {v:.1f}" for k, v in report.repeat_std.items())
        console.print(f"mean std across {report.repeats} repeats: {spread}")
    console.print(f"stored as run {run_id}")


# --------------------------------------------------------------------------- score
@app.command("score")
def score_command(
    run: Annotated[
        str, typer.Option("--run", help="The generation run whose explanations to judge.")
    ],
    judge: JudgeOption = DEFAULT_SPEC,
    rubric_given: Annotated[
        RubricChoice | None,
        typer.Option(
            "--rubric",
            help="free: reference-free rubric; meq: ours against --reference; meq-paper: the "
            "paper's MEQ wording against --reference (scores as a table, temperature 0.2 unless "
            "--judge-setting temperature=... is given) [free].",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            exists=True,
            dir_okay=False,
            help="JSONL of {sample_id or image, rule_variant?, reference} (for --rubric meq).",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB_PATH,
    limit: LimitOption = None,
    repeats: RepeatsOption = 1,
    judge_setting: SettingOption = [],  # noqa: B006
    no_cache: NoCacheOption = False,
    json_: JsonOption = False,
    preset: PresetOption = None,
) -> None:
    """Judge a generation run's explanations; unscored items are counted, never scored 0 (with
    an MEQ rubric the paper's MEQ, unscored items as 0, is printed beside ours)."""
    given = rubric_given.value if rubric_given else None
    rubric = RubricChoice(_preset_rubric(preset, given, RubricChoice.free.value))
    meq = rubric.value in MEQ_RUBRICS
    if meq and reference is None:
        raise _fail(f"--rubric {rubric.value} needs --reference FILE")
    settings = list(rubric_settings(rubric.value, judge_setting))
    store = _open(db)
    run_id = new_run_id("judge")

    async def work(j: Judge) -> ScoreReport:
        if not j.supports(rubric.value):
            raise _fail(f"{j.spec} cannot apply the {rubric.value} rubric")
        try:
            warnings = run_warnings(store, j.spec, run)
            unmatched = 0
            items: list[Any]
            if meq:
                assert reference is not None
                rows = explanation_rows(store, run)
                items, unmatched = meq_items_for_run(rows, load_references(reference))
                items = items[:limit] if limit is not None else items
            else:
                items = free_items(store, explanation_rows(store, run, limit))
        except (RunNotFoundError, ValueError) as exc:
            raise _fail(str(exc)) from exc
        _warn(warnings)
        config = {"judged_run": run, "rubric": rubric.value, "reference": str(reference or ""),
                  "limit": limit, "repeats": repeats, "judge_settings": settings,
                  "warnings": warnings}  # fmt: skip

        async def body() -> tuple[list[Judgment], ScoreReport]:
            with _progress(len(items) * repeats, f"judge {j.spec}") as progress:
                task = progress.task_ids[0]
                per_item = await judge_repeated(
                    j, rubric.value, items, repeats,
                    progress=lambda n: progress.advance(task, n),
                )  # fmt: skip
            report = build_score_report(
                run, j, rubric.value, per_item, warnings=warnings, unmatched_references=unmatched
            )
            return _flatten(per_item), report

        return await _recorded(store, run_id, "judge", j, config, body)

    report = _run_with_judge(store, run_id, judge, settings, no_cache, work)
    if json_:
        typer.echo(_json(report))
        return
    console = make_console()
    table = Table(title=f"{report.judge_spec} on run {run} ({report.rubric} rubric)")
    for column in ("criterion", "n", "mean", "std"):
        table.add_column(column, justify="left" if column == "criterion" else "right")
    for name, s in report.criteria.items():
        table.add_row(name, str(s.n), _num(s.mean, ".1f"), _num(s.std, ".1f"))
    console.print(table)
    console.print(
        f"unscored: {report.n_unscored}/{report.n_items} ({report.unscored_rate:.1%}) "
        f"statuses: {report.status_counts}"
    )
    if meq:
        console.print(
            f"MEQ: {_num(report.meq)} (unparseable excluded, ours) | "
            f"{_num(report.meq_zero_unparseable)} (unparseable = 0, the paper's)"
        )
    if report.unmatched_references:
        console.print(f"references matching no explanation: {report.unmatched_references}")
    console.print(f"stored as run {run_id}")


# --------------------------------------------------------------------------- pairwise
@app.command("pairwise")
def pairwise_command(
    run_a: Annotated[str, typer.Option("--run-a", help="First generation run.")],
    run_b: Annotated[str, typer.Option("--run-b", help="Second generation run.")],
    judge: JudgeOption = DEFAULT_SPEC,
    db: DbOption = DEFAULT_DB_PATH,
    limit: LimitOption = None,
    repeats: RepeatsOption = 1,
    judge_setting: SettingOption = [],  # noqa: B006
    no_cache: NoCacheOption = False,
    json_: JsonOption = False,
) -> None:
    """Compare two runs' explanations of the same images, asking in both orders."""
    store = _open(db)
    run_id = new_run_id("pairwise")

    async def work(j: Judge) -> PairwiseReport:
        if not j.supports("pairwise"):
            raise _fail(f"{j.spec} cannot compare explanations pairwise; use an LLM judge")
        try:
            items = pair_items(store, run_a, run_b, limit)
            warnings = run_warnings(store, j.spec, run_a, run_b)
        except RunNotFoundError as exc:
            raise _fail(str(exc)) from exc
        if not items:
            raise _fail(f"runs {run_a} and {run_b} share no (image, policy, rule variant)")
        _warn(warnings)
        config = {"run_a": run_a, "run_b": run_b, "limit": limit, "repeats": repeats,
                  "judge_settings": judge_setting, "warnings": warnings}  # fmt: skip

        async def body() -> tuple[list[Judgment], PairwiseReport]:
            outcomes = await judge_pairs(j, items, repeats)
            judged = [x for o in outcomes for x in (o.forward, o.backward)]
            return judged, pairwise_report(run_a, run_b, j, outcomes, warnings)

        return await _recorded(store, run_id, "pairwise", j, config, body)

    report = _run_with_judge(store, run_id, judge, judge_setting, no_cache, work)
    if json_:
        typer.echo(_json(report))
        return
    s = report.summary
    make_console().print(
        f"{report.judge_spec}: {s.n_pairs} pairs, both orders scored for {s.n_both_scored}; "
        f"position-swap disagreement {_num(s.disagreement_rate, '.1%')}; "
        f"preferred {s.preferred} (first = {run_a}, second = {run_b}); stored as run {run_id}"
    )


# --------------------------------------------------------------------------- fit-metric
@app.command("fit-metric")
def fit_metric_command(
    set_path: Annotated[
        Path, typer.Option("--set", exists=True, dir_okay=False, help="MEQ JSONL to fit on.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the fit (default: shipped file).")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Refit metric:minilm on the set's fixed ``fit`` part; report held-out Spearman."""
    # Imported on use: the metric loads scipy and sentence-transformers.
    from evaluators.embedding_judge import FIT_FILE, fit_metric

    fitted = fit_metric(set_path)
    target = out or FIT_FILE
    target.write_text(fitted.model_dump_json(indent=1) + "\n")
    if json_:
        typer.echo(json.dumps(fitted.held_out, indent=2))
        return
    console = make_console()
    table = Table(title=f"metric:minilm fitted on {fitted.n_fit} pairs -> {target}")
    columns = ("criterion", "held-out n", "metric Spearman", "metric Kendall",
               "cosine Spearman", "cosine Kendall")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "criterion" else "right")
    for name, h in fitted.held_out.items():
        table.add_row(
            name, _num(h["n"], ".0f"), _num(h["metric_spearman"]), _num(h["metric_kendall"]),
            _num(h["cosine_spearman"]), _num(h["cosine_kendall"]),
        )  # fmt: skip
    console.print(table)


def _json(report: BaseModel) -> str:
    data: Any = report.model_dump(mode="json")
    return json.dumps(data, indent=2)
