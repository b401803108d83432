"""The ``icm`` command: one Typer app whose sub-commands live beside the code they drive."""

from __future__ import annotations

import typer

from data.db_cli import app as db_app
from data.rules_cli import app as rules_app

app = typer.Typer(
    help=(
        "Rule-based, explainable image content moderation: policies as data, agent pipelines "
        "that write ICM-Instruct data, judges and LoRA fine-tuning."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(rules_app, name="rules", help="List, show and check moderation policies.")
app.add_typer(db_app, name="db", help="Inspect the DuckDB store.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
