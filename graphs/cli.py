"""The ``icm`` command: one Typer app whose sub-commands live beside the code they drive."""

from __future__ import annotations

import typer

from data.redaction import install_redacting_streams
from graphs.commands.dataset import HELP as DATASET_HELP
from graphs.commands.dataset import dataset_command
from graphs.commands.db import app as db_app
from graphs.commands.evaluate import audit_command, compare_command, metrics_command
from graphs.commands.finetune import finetune_command, moderate_command
from graphs.commands.judge import app as judge_app
from graphs.commands.merge import HELP as MERGE_HELP
from graphs.commands.merge import merge_command
from graphs.commands.paper import app as paper_app
from graphs.commands.perceive import perceive_command
from graphs.commands.rules import app as rules_app
from graphs.commands.runs import export_command, runs_command, samples_command, traces_command
from graphs.commands.view import view_command
from graphs.generate import HELP as GENERATE_HELP
from graphs.generate import generate_command

app = typer.Typer(
    help=(
        "Rule-based, explainable image content moderation: policies as data, agent pipelines "
        "that write ICM-Instruct data, judges and LoRA fine-tuning."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _redact_output() -> None:
    """Every command prints through the one redaction (no key reaches a terminal or a log)."""
    install_redacting_streams()


app.add_typer(rules_app, name="rules", help="List, show and check moderation policies.")
app.add_typer(db_app, name="db", help="Inspect the DuckDB store.")
app.add_typer(
    judge_app, name="judge", help="Score explanations with a judge; calibrate a judge vs GPT-4o."
)
app.command("generate", help=GENERATE_HELP)(generate_command)
app.command("runs", help="List generation runs with their sample counts by status.")(runs_command)
app.command(
    "merge", help=MERGE_HELP, short_help="Merge shard stores (--shard i/n, one --db each) into one."
)(merge_command)
app.command("samples", help="List a run's sample ids with their status and one-line reason.")(
    samples_command
)
app.command("traces", help="Print one sample's timeline of stages and model calls.")(traces_command)
app.command("export", help="Export a run as LLaVA, ShareGPT, Parquet or a HF dataset.")(
    export_command
)
app.command("dataset", help=DATASET_HELP)(dataset_command)
app.command("perceive", help="Run the shipped detectors on images and print the evidence.")(
    perceive_command
)
app.command("compare", help="Compare generation runs: acceptance, retries, judge scores, cost.")(
    compare_command
)
app.command("audit", help="Check an ICM-Instruct file for contradictions, by kind.")(audit_command)
app.command("metrics", help="Verdict accuracy, precision, recall, F1 of a predictions run.")(
    metrics_command
)
app.add_typer(
    paper_app, name="paper", help="The paper's figures recomputed from the authors' release."
)
app.command(
    "view",
    help="Browse runs, samples and traces in a local read-only web viewer; --export writes "
    "one self-contained HTML file.",
)(view_command)
app.command("finetune", help="LoRA instruction-tuning on ICM data (YAML config + overrides).")(
    finetune_command
)
app.command("moderate", help="Moderate images with a tuned model: verdict, explanation, score.")(
    moderate_command
)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
