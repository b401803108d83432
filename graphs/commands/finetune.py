"""``icm finetune`` and ``icm moderate``: plain Typer functions, mounted by ``graphs/cli.py``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from graphs.console import make_console
from graphs.presets import MODERATE, check_preset, option

FINETUNE_HELP = (
    "Fine-tune a multimodal model (LoRA) on ICM conversations from store runs or exported files. "
    "Settings: --config YAML, then the options below, then --set section.key=value. Multi-GPU: "
    "accelerate launch --config_file finetune/configs/accelerate_ddp.yaml (or "
    "accelerate_fsdp.yaml, or DeepSpeed) -m finetune.train --config cfg.yaml, or torchrun "
    "--nproc_per_node N -m finetune.train ...; see finetune/configs/SCALE_OUT.md."
)
MODERATE_HELP = (
    "Moderate images with a (fine-tuned) model: verdict, score (softmax over the yes/no token "
    "logits, thresholded) and explanation per rule, written to the store as predictions."
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def finetune_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML with sections model, lora, data, train."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one setting: section.key=value (repeatable)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Base model folder or icm-tiny (model.name_or_path)."),
    ] = None,
    runs: Annotated[
        list[str] | None,
        typer.Option("--run", help="Store run to train on (repeatable) (data.runs)."),
    ] = None,
    files: Annotated[
        list[str] | None,
        typer.Option("--file", help="LLaVA/ShareGPT file to train on (repeatable) (data.files)."),
    ] = None,
    db: Annotated[Path | None, typer.Option("--db", help="Store file (data.db).")] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Where checkpoints go (train.output_dir)."),
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="sft, mixed or continuous (train.mode).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Optimizer steps (train.max_steps).")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="checkpoint-N folder, or 'latest' (train.resume_from)."),
    ] = None,
    merge: Annotated[
        bool | None,
        typer.Option("--merge/--no-merge", help="Also save the merged model (train.merge)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the resolved config and the data split, train nothing."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    # Imported on use: fine-tuning loads torch and transformers, `icm --help` must not.
    from finetune.config import ConfigError, FinetuneConfig
    from finetune.data import DataFileError, build_datasets
    from finetune.families import FamilyError
    from finetune.train import TrainError, train

    console = make_console(stderr=True)
    try:
        cfg = FinetuneConfig.load(
            config,
            overrides or [],
            model={"name_or_path": model},
            data={"runs": runs or None, "files": files or None, "db": str(db) if db else None},
            train={"output_dir": str(output_dir) if output_dir else None, "mode": mode,
                   "max_steps": max_steps, "resume_from": resume, "merge": merge},
        )  # fmt: skip
        if dry_run:
            bundle = build_datasets(cfg.data, mode=cfg.train.mode, seed=cfg.train.seed)
            typer.echo(
                json.dumps({"config": cfg.to_dict(), "data": bundle.summary}, indent=2, default=str)
            )
            return
        logging.basicConfig(level=logging.WARNING)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        result = train(cfg, progress=lambda message: console.print(message, highlight=False))
    except (ConfigError, DataFileError, FamilyError, TrainError) as exc:
        raise _fail(str(exc)) from exc
    metrics = {
        "finetune_id": result.finetune_id,
        "output_dir": str(result.output_dir),
        "adapter": str(result.adapter_dir),
        "merged": str(result.merged_dir) if result.merged_dir else None,
        **result.metrics(),
    }
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    table = Table(title=f"fine-tune {result.finetune_id}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, "" if value is None else str(value))
    make_console().print(table)


def moderate_command(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Fine-tune output, adapter or model folder, icm-tiny, or a generation model "
            "spec (openai:gpt-4o, openai-compatible:URL#model, ...) as a zero-shot moderator.",
        ),
    ],
    policy: Annotated[str, typer.Option("--policy", "-p", help="Policy name or YAML path.")],
    rules: Annotated[
        list[str] | None,
        typer.Option("--rule", "-r", help="Rule variant (repeatable); default: the base rule."),
    ] = None,
    db: Annotated[
        Path, typer.Option("--db", help="Store the predictions go to.", show_default=True)
    ] = Path("runs/icm.duckdb"),
    run: Annotated[str | None, typer.Option("--run", help="Name of the moderate run.")] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Manifest with image categories (expected verdicts)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 4,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", min=0.0, max=1.0, help="Flagged when the score is above it [0.5]."
        ),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 96,
    question: Annotated[
        str | None,
        typer.Option(
            "--question",
            help="Score question: 'plain' (the paper's bare 'Is the image <term>?') or 'rule' "
            "(ours: the rule-conditioned question our training data answers) [plain].",
        ),
    ] = None,
    score_tokens: Annotated[
        str | None,
        typer.Option(
            "--score-tokens",
            help="'single' (the paper's): softmax over one Yes and one No token, as the chat "
            "template emits them; 'spellings' (ours): log-sum-exp over whole-token spellings "
            "[single].",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="paper: the paper's question, score tokens and threshold (plain, single, 0.5; "
            "today's defaults too); --question, --score-tokens and --threshold still win.",
        ),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="Generate the explanation.")
    ] = True,
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Print only; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    # Imported on use: moderation loads torch and transformers, `icm --help` must not.
    from data.policy import PolicyError
    from data.store import StoreError
    from finetune.families import FamilyError
    from finetune.moderate import ModerationError, moderate_images, summary_json
    from finetune.moderate_api import SpecModerator, is_model_spec

    try:
        check_preset(preset)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    question = option(MODERATE, preset, "question", question, "plain")
    score_tokens = option(MODERATE, preset, "score_tokens", score_tokens, "single")
    threshold = option(MODERATE, preset, "threshold", threshold, 0.5)
    if question not in ("rule", "plain"):
        raise _fail(f"--question must be rule or plain, got {question!r}")
    asked: Literal["rule", "plain"] = "rule" if question == "rule" else "plain"
    if score_tokens not in ("single", "spellings"):
        raise _fail(f"--score-tokens must be single or spellings, got {score_tokens!r}")
    try:
        summary = moderate_images(
            [str(i) for i in images], model=model, policy=policy, rules=rules or None,
            db=None if no_store else db, run_name=run, manifest=manifest, batch_size=batch_size,
            threshold=threshold, max_new_tokens=max_new_tokens, question=asked,
            score_tokens=score_tokens,  # type: ignore[arg-type]
            explain=explain,
            # a model spec (openai:..., openai-compatible:...) moderates zero-shot
            moderator=SpecModerator(model, question=asked) if is_model_spec(model) else None,
        )  # fmt: skip
    except (ModerationError, FamilyError, StoreError, PolicyError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(summary_json(summary))
        return
    table = Table(title=f"moderate {summary.run_name or '(not stored)'} - {summary.policy}")
    for column in ("image", "rule", "verdict", "score", "expected", "explanation"):
        table.add_column(column, overflow="fold")
    for p in summary.predictions:
        table.add_row(
            Path(p.image_path).name, p.rule, p.verdict or p.status,
            "" if p.score is None else f"{p.score:.3f}", p.expected_verdict or "",
            (p.explanation or "")[:160],
        )  # fmt: skip
    console = make_console()
    console.print(table)
    info = summary.as_dict()
    accuracy = "n/a" if info["accuracy"] is None else f"{info['accuracy']:.3f}"
    console.print(
        f"{info['predictions']} predictions ({info['errors']} errors), accuracy {accuracy} on "
        f"{info['with_expected']} with a known verdict, {info['seconds']} s"
    )
    for note, count in info["score_notes"].items():  # an absent score says why
        console.print(f"no score for {count}: {note}")
