"""``icm runs``, ``icm samples``, ``icm traces`` and ``icm export``: read a store, never write.

These are plain functions, mounted at the top level by ``graphs/cli.py``. Each opens the store
read-only; while a generation run writes it (DuckDB lets one process open a file), they read the
snapshot the run publishes beside it and print "data as of <time>" on stderr
(:func:`data.store.reading.open_for_reading`).

The data each command shows is gathered by a function that returns plain dicts
(:func:`run_overview`, :func:`sample_trace`), so scripts and tests read the same numbers the
tables print, and ``--json`` prints exactly those dicts.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from data.export import DEFAULT_SUFFIX, ExportError, export_run
from data.export_paper import export_paper_run
from data.provenance import compact_roles
from data.store import DEFAULT_DB_PATH, Store, StoreError, from_json, queries
from data.store.outcomes import failure_kind, outcome_label
from data.store.reading import as_of_note, open_for_reading
from graphs.console import make_console, styled
from graphs.presets import EXPORT, check_preset, option

DEFAULT_EXPORT_DIR = Path("runs") / "exports"

DbOption = Annotated[
    Path,
    typer.Option("--db", help="DuckDB store to read (opened read-only).", show_default=True),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")
]


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def open_read_only(db: Path) -> Store:
    """Open read-only, or the writer's snapshot while a run holds the file (saying so on
    stderr); a missing file or a lock with no snapshot yet is a one-line error, exit 1."""
    try:
        store, as_of = open_for_reading(db)
        if as_of is not None:
            typer.echo(as_of_note(as_of), err=True)
        return store
    except FileNotFoundError as exc:
        raise fail(
            f"no database at {db}: run `icm generate` first, or pass --db with the path of one"
        ) from exc
    except StoreError as exc:  # StoreLockedError names the process holding the file
        raise fail(str(exc)) from exc


def _iso(value: Any) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, datetime) else value


# --------------------------------------------------------------------------- icm runs
def run_overview(store: Store) -> list[dict[str, Any]]:
    """One dict per run: identity, binding, sample counts by status, calls, tokens and cost.

    ``cost_usd`` is None where no call reported a cost (offline models), not 0: unknown is not
    free.
    """
    out = []
    for row in queries.run_summaries(store):
        tokens_in, tokens_out = int(row["input_tokens"]), int(row["output_tokens"])
        out.append(
            {
                "name": row["name"],
                "run_id": row["run_id"],
                "kind": row["kind"],
                "status": row["status"],
                "created_at": _iso(row["created_at"]),
                "finished_at": _iso(row["finished_at"]),
                "policy": row["policy_name"],
                "rules": row["rule_variants"],
                "roles": from_json(row["role_bindings_json"]),
                "samples": int(row["samples"]),
                "accepted": int(row["accepted"]),
                "rejected": int(row["rejected"]),
                "failed": int(row["failed"]),
                "refused": int(row["refused"]),  # of the failed: the model declined
                "pending": int(row["pending"]),
                "calls": int(row["calls"]),
                "cache_hits": int(row["cache_hits"]),
                # of the calls: those of interrupted or superseded attempts (a killed run
                # resumed, --retry-failed), which the finished samples did not use
                "earlier_attempt_calls": int(row["earlier_calls"]),
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "tokens": tokens_in + tokens_out,
                # of input_tokens: read from / written to the provider's prompt cache
                "cached_input_tokens": int(row["cached_input_tokens"]),
                "cache_write_tokens": int(row["cache_write_tokens"]),
                "cost_usd": None if row["cost_usd"] is None else float(row["cost_usd"]),
            }
        )
    return out


def _cost(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def runs_command(db: DbOption = DEFAULT_DB_PATH, json_: JsonOption = False) -> None:
    """List the runs in the store: status, policy, rules, models, sample counts, calls, cost."""
    with open_read_only(db) as store:
        runs = run_overview(store)
    if json_:
        typer.echo(json.dumps(runs, ensure_ascii=False))
        return
    if not runs:
        typer.echo(f"{db} holds no runs yet: `icm generate` makes one.")
        return
    console = make_console()
    if console.width < _WIDE:
        typer.echo("\n\n".join(_run_block(run) for run in runs))
    else:
        console.print(_runs_table(runs, title=f"runs in {db}"))


_WIDE = 140
"""Below this many columns the table folds its cells into slivers: print a block per run."""


def calls_text(calls: int, cached: int, earlier: int) -> str:
    """``327 (212 cached; 48 from interrupted or superseded attempts)``: what the count holds."""
    notes = [f"{cached} cached"] if cached else []
    if earlier:
        notes.append(f"{earlier} from interrupted or superseded attempts")
    return f"{calls} ({'; '.join(notes)})" if notes else str(calls)


def _run_block(run: dict[str, Any]) -> str:
    calls = calls_text(run["calls"], run["cache_hits"], run["earlier_attempt_calls"])
    return "\n".join(
        [
            f"{run['name']}  (id {run['run_id']})  {run['kind']} {run['status']}  "
            f"created {run['created_at']}",
            f"  policy {run['policy'] or '-'}  rules {run['rules'] or '-'}",
            f"  models {compact_roles(run['roles']) or '-'}",
            f"  samples {run['accepted']} accepted, {run['rejected']} rejected, "
            f"{_failed(run)} failed, {run['pending']} pending",
            f"  calls {calls}  tokens {run['tokens']:,}{_prompt_cached(run, ', ')}  "
            f"cost {_cost(run['cost_usd'])}",
        ]
    )


def _prompt_cached(run: dict[str, Any], sep: str) -> str:
    """`` (1,024 input cached)``: input tokens the provider's prompt cache read; empty if none."""
    n = run["cached_input_tokens"]
    return f"{sep}{n:,} input cached" if n else ""


def _failed(run: dict[str, Any]) -> str:
    """``3`` or ``3 (2 refused)``: refused samples are failed ones whose model declined."""
    return f"{run['failed']} ({run['refused']} refused)" if run["refused"] else str(run["failed"])


def _runs_table(runs: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, caption="samples: accepted/rejected/failed (refused)/pending")
    for column in ("run", "status", "created", "policy"):
        table.add_column(column, no_wrap=True)
    table.add_column("models", overflow="fold")
    for column in ("samples", "calls", "tokens", "cost"):
        table.add_column(column, justify="right", no_wrap=True)
    for run in runs:
        calls = str(run["calls"])
        if run["cache_hits"]:
            calls += f"\n{run['cache_hits']} cached"
        if run["earlier_attempt_calls"]:
            calls += f"\n{run['earlier_attempt_calls']} earlier attempts"
        table.add_row(
            styled("{}\n[dim]{}[/dim]", run["name"], run["run_id"]),
            styled("{}\n[dim]{}[/dim]", run["status"], run["kind"]),
            run["created_at"] or "",
            f"{run['policy'] or '-'}\n{run['rules'] or ''}",
            compact_roles(run["roles"]).replace(" ", "\n"),
            f"{run['accepted']}/{run['rejected']}/{_failed(run)}/{run['pending']}",
            calls,
            f"{run['tokens']:,}{_prompt_cached(run, chr(10))}",
            _cost(run["cost_usd"]),
        )
    return table


# --------------------------------------------------------------------------- icm samples
class RunLookupError(LookupError):
    """No run, or several, match the id, name or id prefix given."""


def resolve_run(store: Store, ref: str) -> dict[str, Any]:
    """The run whose id, else name, else id prefix is ``ref`` (exactly one)."""
    exact = queries.run_row(store, ref)
    rows = [exact] if exact else queries.runs_named(store, ref)
    rows = rows or queries.runs_with_id_prefix(store, ref)
    if len(rows) == 1:
        return rows[0]
    if rows:
        ids = ", ".join(r["run_id"] for r in rows)
        raise RunLookupError(f"{ref!r} names several runs ({ids}): pass a run id")
    known = ", ".join(f"{r['name']} ({r['run_id']})" for r in queries.run_listing(store))
    raise RunLookupError(f"no run {ref!r} in {store.path} (runs: {known or 'none'})")


def one_line(reasons: list[Any]) -> str:
    """A sample's reasons on one line: the first, plus how many more there are."""
    if not reasons:
        return ""
    first = " ".join(str(reasons[0]).split())
    return first + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "")


def sample_listing(store: Store, ref: str, *, status: str | None = None) -> dict[str, Any]:
    """The run's samples (only those with ``status`` when given): id, status, attempts,
    category, image, every reason and the one-line reason."""
    run = resolve_run(store, ref)
    samples = []
    stored_status = "failed" if status == "refused" else status  # refused: a kind of failed
    for row in queries.run_samples(store, run["run_id"], status=stored_status):
        reasons = from_json(row["reasons_json"]) or []
        reasons = reasons if isinstance(reasons, list) else [reasons]
        failure = failure_kind(row["status"], reasons)
        if status == "refused" and failure != "refused":
            continue
        samples.append(
            {
                "sample_id": row["sample_id"],
                "status": row["status"],
                "failure": failure,
                "shown_status": outcome_label(row["status"], reasons),
                "reason": one_line(reasons),
                "reasons": reasons,
                "attempts": row["attempts"],
                "category": row["category"],
                "image_path": row["image_path"],
            }
        )
    return {"run_id": run["run_id"], "run_name": run["name"], "status": status, "samples": samples}


def image_name(image_path: str | None) -> str:
    """The image's file name (what a person recognises), ``-`` for a text-only sample."""
    return Path(image_path).name if image_path else "-"


def samples_command(
    run: Annotated[str, typer.Argument(help="Run id, run name or id prefix (see `icm runs`).")],
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            help="Only samples with this status: accepted, rejected, failed, pending, or "
            "refused (the failed samples whose model declined).",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB_PATH,
    json_: JsonOption = False,
) -> None:
    """List a run's samples: id (for `icm traces`), status, image and the one-line reason."""
    if status is not None and status not in (*queries.SAMPLE_STATUSES, "refused"):
        raise fail(
            f"--status {status!r} is not a sample status "
            f"(one of {', '.join(queries.SAMPLE_STATUSES)}, or refused)"
        )
    with open_read_only(db) as store:
        try:
            listing = sample_listing(store, run, status=status)
        except RunLookupError as exc:
            raise fail(str(exc)) from exc
    if json_:
        typer.echo(json.dumps(listing, ensure_ascii=False, default=str))
        return
    rows = listing["samples"]
    which = f"{status} samples" if status else "samples"
    if not rows:
        typer.echo(f"run {listing['run_name']} ({listing['run_id']}) has no {which}.")
        return
    typer.echo(f"{len(rows)} {which} of run {listing['run_name']} ({listing['run_id']}):")
    width = max(8, *(len(row["shown_status"]) for row in rows))  # "failed (refused)" is wider
    images = [image_name(row["image_path"]) for row in rows]
    image_width = max(len(name) for name in images)
    for row, image in zip(rows, images, strict=True):
        reason = f"  {row['reason']}" if row["reason"] else ""
        line = f"{row['sample_id']}  {row['shown_status']:<{width}}  {image:<{image_width}}"
        typer.echo((line + reason).rstrip())
    typer.echo(f"one sample's timeline: icm traces SAMPLE_ID --db {db}")


# --------------------------------------------------------------------------- icm traces
class SampleLookupError(LookupError):
    """No sample, or several, match the id or prefix given."""


def resolve_sample(store: Store, sample_id: str) -> dict[str, Any]:
    """The sample with this id, or the one whose id starts with it."""
    exact = queries.sample_row(store, sample_id)
    if exact:
        return exact
    rows = queries.samples_with_id_prefix(store, sample_id, limit=11)
    if len(rows) == 1:
        return rows[0]
    if rows:
        shown = ", ".join(r["sample_id"] for r in rows[:10])
        more = " ..." if len(rows) > 10 else ""
        raise SampleLookupError(f"{sample_id!r} matches several samples: {shown}{more}")
    total = queries.sample_count(store)
    raise SampleLookupError(
        f"no sample {sample_id!r} (nor one starting with it) among the {total} samples in "
        f"{store.path}"
    )


def _call_event(row: dict[str, Any], rule_of_call: dict[str, str | None], full: bool) -> dict:
    event = {
        "kind": "call",
        "time": row["started_at"],
        "call_id": row["call_id"],
        "stage": row["stage"],
        "rule_variant": rule_of_call.get(row["call_id"]),
        "role": row["role"],
        "provider": row["provider"],
        "model": row["model"],
        "prompt_id": row["prompt_id"],
        "prompt_hash": row["prompt_hash"],
        "status": row["status"],
        "attempt": row["attempt"],
        "cache_hit": bool(row["cache_hit"]),
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cached_input_tokens": row.get("cached_input_tokens"),  # of input: prompt cache reads
        "cache_write_tokens": row.get("cache_write_tokens"),
        "latency_ms": row["latency_ms"],
        "cost_usd": row["cost_usd"],
        "error": row["error"],
    }
    if full:
        event["raw_output"] = row["raw_output"]
        event["parsed"] = from_json(row["parsed_json"])
    return event


def _stage_event(row: dict[str, Any], full: bool) -> dict:
    event = {
        "kind": "stage",
        "time": row["created_at"],
        "stage": row["stage"],
        "rule_variant": row["rule_variant"],
        "attempt": row["attempt"],
        "status": row["status"],
        "feedback": row["feedback"],
        "call_id": row["call_id"],
    }
    if full:
        event["output"] = from_json(row["output_json"])
        event["raw_text"] = row["raw_text"]
    return event


def sample_trace(store: Store, sample_id: str, *, full: bool = False) -> dict[str, Any]:
    """One sample's history: its stage attempts and model calls in time order, the critic's
    checks, and how it ended. A call sorts before the stage output written from it."""
    sample = resolve_sample(store, sample_id)
    sid = sample["sample_id"]
    run = queries.run_row(store, sample["run_id"])
    history = queries.sample_history(store, sid)
    stages, calls, critiques = history["stages"], history["calls"], history["critiques"]
    rule_of_call = {s["call_id"]: s["rule_variant"] for s in stages if s["call_id"]}
    events = [(c["started_at"], 0, _call_event(c, rule_of_call, full)) for c in calls]
    events += [(s["created_at"], 1, _stage_event(s, full)) for s in stages]
    events.sort(key=lambda e: (e[0], e[1], e[2]["stage"] or "", e[2]["attempt"] or 0))
    start = events[0][0] if events else None
    timeline = []
    for time, _, event in events:
        event["offset_s"] = (time - start).total_seconds() if start is not None else None
        event["time"] = time.isoformat(sep=" ", timespec="milliseconds")
        timeline.append(event)
    reasons = from_json(sample["reasons_json"]) or []
    return {
        "sample_id": sid,
        "run_id": sample["run_id"],
        "run_name": run["name"] if run else None,
        "policy": sample["policy_name"],
        "category": sample["category"],
        "category_source": sample["category_source"],
        "rule_variants": sample["rule_variants"],
        "image_path": sample["image_path"],
        "timeline": timeline,
        "critiques": [
            {
                "time": _iso(c["created_at"]),
                "stage": c["stage"],
                "attempt": c["attempt"],
                "check_name": c["check_name"],
                "source": c["source"],
                "passed": bool(c["passed"]),
                "message": c["message"],
            }
            for c in critiques
        ],
        "status": sample["status"],
        "failure": failure_kind(
            sample["status"], reasons if isinstance(reasons, list) else [reasons]
        ),
        "attempts": sample["attempts"],
        "reasons": reasons if isinstance(reasons, list) else [reasons],
    }


def _indent(text: str, prefix: str = "        ") -> str:
    return "\n".join(prefix + line for line in str(text).splitlines() or [""])


def _call_line(e: dict[str, Any]) -> str:
    tokens = f"{e['input_tokens'] or 0}+{e['output_tokens'] or 0} tok"
    latency = "-" if e["latency_ms"] is None else f"{e['latency_ms']:.0f} ms"
    prompt = e["prompt_id"] or "-"
    if e["prompt_hash"]:
        prompt += f"@{e['prompt_hash'][:8]}"
    return (
        f"role {e['role'] or '-'}  {e['provider']}:{e['model']}  prompt {prompt}  "
        f"{'cache hit' if e['cache_hit'] else 'cache miss'}  {tokens}  {latency}  "
        f"{_cost(e['cost_usd'])}"
    )


def render_trace(trace: dict[str, Any], *, full: bool = False) -> str:
    """The trace as plain lines (greppable, no table that would wrap long feedback)."""
    lines = [
        f"sample {trace['sample_id']}  run {trace['run_name']} ({trace['run_id']})",
        f"  policy {trace['policy']}  rules {trace['rule_variants'] or '-'}  "
        f"category {trace['category'] or '-'} ({trace['category_source'] or '-'})",
        f"  image {trace['image_path'] or '-'}",
        "",
        f"timeline ({len(trace['timeline'])} events)",
    ]
    for e in trace["timeline"]:
        where = e["stage"] or "-"
        if e["rule_variant"]:
            where += f"[{e['rule_variant']}]"
        # A stage's attempt counts critic-driven re-runs; a call's counts transport retries.
        count = "attempt" if e["kind"] == "stage" else "try"
        offset = f"+{e['offset_s']:.2f}s"
        head = f"  {e['time']}  {offset:>9}  {e['kind']:<5}  {where:<24}"
        head += f"  {count} {e['attempt']}  {e['status']}"
        if e["kind"] == "call":
            lines.append(f"{head}  {_call_line(e)}")
        else:
            lines.append(head)
        if e.get("feedback"):
            lines.append(_indent(f"critic feedback given to this attempt: {e['feedback']}"))
        if e.get("error"):
            lines.append(_indent(f"error: {e['error']}"))
        if full:
            for key in ("raw_output", "raw_text"):
                if e.get(key):
                    lines += [_indent(f"{key}:"), _indent(e[key], "          ")]
            for key in ("parsed", "output"):
                if e.get(key) is not None:
                    text = json.dumps(e[key], indent=2, ensure_ascii=False)
                    lines += [_indent(f"{key}:"), _indent(text, "          ")]
    lines += ["", f"critiques ({len(trace['critiques'])})"]
    for c in trace["critiques"]:
        verdict = "pass" if c["passed"] else "FAIL"
        message = f": {c['message']}" if c["message"] else ""
        lines.append(
            f"  {c['stage']} attempt {c['attempt']}  {verdict}  {c['check_name']} "
            f"({c['source']}){message}"
        )
    shown = outcome_label(trace["status"], trace["reasons"])
    lines += ["", f"final status: {shown}  (attempts recorded: {trace['attempts'] or 0})"]
    lines += [f"  - {reason}" for reason in trace["reasons"]]
    return "\n".join(lines)


def traces_command(
    sample_id: Annotated[
        str, typer.Argument(help="Sample id, or a prefix of it that matches one sample.")
    ],
    db: DbOption = DEFAULT_DB_PATH,
    json_: JsonOption = False,
    full: Annotated[
        bool, typer.Option("--full", help="Also print each call's raw and parsed output.")
    ] = False,
) -> None:
    """Show one sample's timeline: stage attempts, model calls, critic checks, final status."""
    with open_read_only(db) as store:
        try:
            trace = sample_trace(store, sample_id, full=full)
        except SampleLookupError as exc:
            raise fail(str(exc)) from exc
    if json_:
        typer.echo(json.dumps(trace, ensure_ascii=False, default=str))
    else:
        typer.echo(render_trace(trace, full=full))


# --------------------------------------------------------------------------- icm export
class ExportFormat(StrEnum):
    """The formats ``icm export`` writes."""

    llava = "llava"
    sharegpt = "sharegpt"
    parquet = "parquet"
    hf = "hf"


ALL_STATUSES_INFIX = ".all"
"""``--all`` exports go to ``<run>.all<suffix>``: never over the accepted-only file."""


def default_export_path(run: str, fmt: str, *, include_all: bool = False) -> Path:
    """``runs/exports/<run><suffix>`` (``<run>.all<suffix>`` with ``--all``), the run argument
    made safe as a file name. Two names, so that exporting every status never replaces the
    accepted-only file someone may be training on."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run).strip("._") or "run"
    infix = ALL_STATUSES_INFIX if include_all else ""
    return DEFAULT_EXPORT_DIR / f"{safe}{infix}{DEFAULT_SUFFIX[fmt]}"


def export_command(
    run: Annotated[str, typer.Argument(help="Run id or run name (see `icm runs`).")],
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="llava: LLaVA JSON; sharegpt: LLaMA-Factory ShareGPT JSON; parquet: flat "
            "table; hf: Hugging Face datasets folder (load_from_disk). Required, except with "
            "--preset paper (llava).",
            case_sensitive=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output file (folder for hf). Default: runs/exports/<RUN>.<format suffix>.",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB_PATH,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Export rejected, failed and pending samples too, not only accepted; each "
            "record carries its status. Default output: runs/exports/<RUN>.all.<format suffix>.",
        ),
    ] = False,
    image_root: Annotated[
        Path | None,
        typer.Option(
            "--image-root",
            help="Write image paths relative to this folder (a trainer's image folder).",
        ),
    ] = None,
    style: Annotated[
        str | None,
        typer.Option(
            "--style",
            help="ours: one multi-turn record per sample and rule; paper (llava only): the "
            "paper's single-turn records, explanation x5 under drawn question paraphrases, "
            "base rule only [ours].",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the paper style's question draws.")
    ] = 0,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="paper: --format llava --style paper (the paper's training records); "
            "--format and --style still win.",
        ),
    ] = None,
    card: Annotated[
        bool | None,
        typer.Option(
            "--card/--no-card",
            help="Write a Hugging Face dataset card (README.md) with the export; default: "
            "with --format hf only.",
        ),
    ] = None,
) -> None:
    """Export a run's samples as training data, one record per sample and rule variant."""
    try:
        check_preset(preset)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    chosen = option(EXPORT, preset, "format", fmt.value if fmt else None, None)
    if chosen is None:
        # a usage error (exit 2), as a missing required option is
        raise typer.BadParameter(
            "is required (llava, sharegpt, parquet or hf), or --preset paper", param_hint="--format"
        )
    fmt = ExportFormat(chosen)
    style = option(EXPORT, preset, "style", style, "ours")
    if style not in ("ours", "paper"):
        raise fail(f"--style must be ours or paper, got {style!r}")
    if style == "paper" and fmt.value != "llava":
        raise fail("--style paper writes the paper's LLaVA records: use it with --format llava")
    target = out if out is not None else default_export_path(run, fmt.value, include_all=all_)
    accepted_default = default_export_path(run, fmt.value)
    if all_ and target.resolve() == accepted_default.resolve():
        raise fail(
            f"--all would replace the accepted-only export {accepted_default}: leave out --out "
            f"(it writes {default_export_path(run, fmt.value, include_all=True)}) or pick another"
        )
    with open_read_only(db) as store:
        try:
            if style == "paper":
                summary = export_paper_run(
                    store, run, target, include_all=all_, image_root=image_root, seed=seed
                )
            else:
                summary = export_run(
                    store, run, fmt.value, target, include_all=all_, image_root=image_root
                )
        except ExportError as exc:
            raise fail(str(exc)) from exc
        except OSError as exc:  # a full disk: the earlier export is intact (data/atomic_write)
            raise fail(f"cannot write {target}: {exc.strerror or exc}") from exc
        card_file = None
        if card if card is not None else fmt.value == "hf":
            from graphs.dataset_card import write_card  # yaml + the dataset view, on use
            from graphs.dataset_view import DatasetInputError  # the dataset view, on use

            run_row = queries.run_row(store, summary.run_id) or {}
            try:
                card_file = write_card(store, [run_row], target, fmt.value, summary.records)
            except DatasetInputError as exc:  # the records are written: say why no card is
                typer.echo(f"warning: no dataset card written: {exc}", err=True)
    if summary.empty_message:
        typer.echo(f"warning: {summary.empty_message}", err=True)
    typer.echo(
        f"wrote {summary.records} records ({summary.samples} samples) of run "
        f"{summary.run_name} ({summary.run_id}) as {summary.fmt} to {summary.path}"
    )
    for path in summary.extra_files:
        typer.echo(f"  also wrote {path}")
    if card_file is not None:
        typer.echo(f"  also wrote {card_file} (dataset card)")
    for reason, count in sorted(summary.skipped.items()):
        typer.echo(f"  skipped {count}: {reason}")
    if summary.dataset_info:
        typer.echo("LLaMA-Factory dataset_info.json entry (merged into the file above):")
        typer.echo(json.dumps(summary.dataset_info, indent=2))
