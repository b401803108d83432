"""``icm merge``: bring shard stores (``icm generate --shard i/n --db shard-i.duckdb``) into one."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from data.store import DEFAULT_DB_PATH, Store, StoreError
from data.store.merge import merge_store
from graphs.commands.runs import JsonOption, fail, run_overview

HELP = (
    "Merge shard stores into one; per sample, a finished result wins over a pending one.\n\n"
    "For runs split with `icm generate --shard i/n --db shard-i.duckdb`. Each source is opened "
    "read-only and merged in its own transaction: if one fails (a shard still running, "
    "another schema version), those merged before it are kept and the error says which. "
    "Merging a source twice changes nothing.\n\n"
    "Then `icm runs --db DB` shows the combined counts and `icm export RUN --db DB` exports "
    "the whole run."
)


def merge_command(
    sources: Annotated[
        list[Path], typer.Argument(help="Shard stores to merge (each opened read-only).")
    ],
    db: Annotated[
        Path,
        typer.Option("--db", help="Store to merge into (created if missing).", show_default=True),
    ] = DEFAULT_DB_PATH,
    json_: JsonOption = False,
) -> None:
    """Merge ``sources`` into ``db`` and say what each gave (the help text is :data:`HELP`)."""
    reports = []
    try:
        with Store.open(db) as target:
            for source in sources:
                try:
                    reports.append(merge_store(target, source))
                except StoreError as exc:
                    done = ", ".join(r.path for r in reports) or "none"
                    raise fail(f"{exc} (merged before it: {done})") from exc
            runs = run_overview(target)
    except StoreError as exc:  # the target itself is locked or newer than this code
        raise fail(str(exc)) from exc
    if json_:
        typer.echo(json.dumps({"reports": [asdict(r) for r in reports], "runs": runs}))
        return
    for r in reports:
        rows = ", ".join(f"{t} {n}" for t, n in r.rows_added.items() if n)
        typer.echo(
            f"{r.path}: {r.samples_taken} finished samples taken, {r.samples_kept} already "
            f"finished here kept; rows added: {rows or 'none'}"
        )
    for run in runs:
        counts = ", ".join(f"{run[s]} {s}" for s in ("accepted", "rejected", "failed", "pending"))
        typer.echo(f"run {run['name']} ({run['status']}): {run['samples']} samples: {counts}")
    typer.echo(f"merged into {db}; inspect with `icm runs --db {db}`")
