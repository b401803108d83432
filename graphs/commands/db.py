"""``icm db``: look inside a store file without writing to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from data.store import DEFAULT_DB_PATH, LATEST_VERSION, Store, StoreError
from graphs.console import make_console

app = typer.Typer(help="Inspect the DuckDB store.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Inspect the DuckDB store."""


@app.command("info")
def info(
    path: Annotated[
        Path,
        typer.Argument(help="Database file.", show_default=True),
    ] = DEFAULT_DB_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the schema version, file size, and the row count of every table."""
    try:
        store = Store.open(path, read_only=True)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    with store:
        version = store.schema_version()
        counts = store.table_counts()
    size = path.stat().st_size
    if as_json:
        typer.echo(
            json.dumps(
                {"path": str(path), "schema_version": version, "size_bytes": size, "tables": counts}
            )
        )
        return
    table = Table(title=f"{path}  (schema v{version}/{LATEST_VERSION}, {size / 1e6:.2f} MB)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in counts.items():
        table.add_row(name, str(count))
    make_console().print(table)
