"""``icm paper``: the paper's own figures, recomputed from the authors' release.

``icm paper reproduce --release DIR`` (DIR: a checkout of zhaoyuzhi/ICM-Assistant) prints one
table: each published figure, the authors' formula on the released file, ours, and the
published figures whose outputs were never released. It reads files only; nothing is stored
(``icm metrics --predictions`` imports the same outputs into the store).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from data.policy import PolicyError, load_policy
from evaluators.paper_import import ImportFormatError
from evaluators.paper_reproduce import (
    RELEASED_MODEL,
    RELEASED_MODEL_NAME,
    FigureRow,
    ReleaseLayoutError,
    reproduce,
    rows_json,
)
from graphs.commands.runs import JsonOption, fail

app = typer.Typer(no_args_is_help=True)


@app.command("reproduce")
def reproduce_command(
    release: Annotated[
        Path,
        typer.Option(
            "--release",
            exists=True,
            file_okay=False,
            help="A checkout of the authors' repository (zhaoyuzhi/ICM-Assistant).",
        ),
    ],
    policy: Annotated[
        str, typer.Option("--policy", help="Policy the released labels follow.")
    ] = "icm_sexy",
    json_: JsonOption = False,
) -> None:
    """The paper's figures from its released outputs: published, the authors' formula on the
    released file, ours; and the published figures that cannot be reproduced, named."""
    try:
        rows = reproduce(release, load_policy(policy))
    except (ReleaseLayoutError, ImportFormatError, PolicyError) as exc:
        raise fail(str(exc)) from exc
    if json_:
        typer.echo(json.dumps(rows_json(rows), ensure_ascii=False))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(reproduction_table(rows, release))
    for row in rows:
        model = _model(row.model)
        where = f" ({escape(row.source)})" if row.source else ""
        console.print(f"- {escape(row.figure)}, {escape(model)}{where}: {escape(row.note)}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def reproduction_table(rows: list[FigureRow], release: Path) -> Table:
    table = Table(title=escape(f"The paper's figures from {release}"), box=box.SIMPLE_HEAVY)
    table.add_column("figure")
    table.add_column("model")
    for column in ("published", "authors' formula", "ours"):
        table.add_column(column, justify="right")
    for row in rows:
        computed = (_num(row.authors), _num(row.ours)) if row.source else ("not released", "-")
        table.add_row(escape(row.figure), escape(_model(row.model)), _num(row.published),
                      *computed)  # fmt: skip
    return table


def _model(model: str | None) -> str:
    return RELEASED_MODEL_NAME if model == RELEASED_MODEL else model or "-"
