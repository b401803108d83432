"""Generate an ICM-Instruct set: ``python graphs/generate.py`` (the same as ``icm generate``).

With no arguments it runs the offline demo: the bundled samples (``data/samples``), every role
on ``local:qwen2.5-1.5b`` when the ``qwen`` extra is installed, else on ``local:smollm2``
(``graphs/demo.py`` chooses), with the perception toolkit standing in for sight, written to
``runs/icm.duckdb``. Re-running the same command resumes the same run.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer
from rich.console import Console

from agents.stages import CRITIC, default_registry, paper_registry
from data.redaction import install_redacting_streams
from graphs.console import make_console, plain, styled

#: the help text names the registered stages (agents/stages.py), so a new stage shows up here
STAGES = default_registry()
PAPER_STAGES = paper_registry()

HELP = (
    "Generate ICM-Instruct data into a DuckDB store (resumable; traces every call).\n\n"
    f"Stages: {STAGES.help_chain()}, with critic-driven retries.\n\n"
    f"--preset paper: the paper's released pipeline, {PAPER_STAGES.help_chain()} (no checks, "
    "no retries; see docs/paper-vs-default.md).\n\n"
    "Without arguments: the offline demo on the bundled samples, every role on "
    "local:qwen2.5-1.5b (llama.cpp) when the qwen extra is installed, else on local:smollm2 "
    "(SmolLM2-135M-Instruct: it shows the pipeline working but cannot write good moderation "
    "explanations). The first line printed says which. Bind real models with --role."
)


def generate_command(
    manifest: Annotated[
        Path | None,
        typer.Argument(
            help="Manifest (CSV or JSONL: image, policy, category, source, split[, description]). "
            "Default: the bundled samples."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config; command-line options win.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="paper: reproduce the paper's released pipeline (one three-question "
            "image-seeing call per image seeded with the category sentence, the seed-leak "
            "filter, 6 yes/no + 2 what + 2 how then 5 multiple-choice Q-A from the "
            "explanation, base rule only, no checks or retries). A --config file and the "
            "options given here override single settings of it.",
        ),
    ] = None,
    release: Annotated[
        Path | None,
        typer.Option(
            "--release",
            exists=True,
            file_okay=False,
            help="A checkout of the authors' repository (zhaoyuzhi/ICM-Assistant): with "
            "--preset paper (paper.seeds: release) each image is seeded with the sentence of "
            "its generation script, read from there.",
        ),
    ] = None,
    images_dir: Annotated[
        Path | None,
        typer.Option(
            "--images", help="Folder image paths are relative to (default: the manifest's)."
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy", help="Only rows of this policy (name or file); rows may name their own."
        ),
    ] = None,
    rules: Annotated[
        str | None,
        typer.Option(
            "--rules", help="Rule variants, comma-separated (default: all of the policy)."
        ),
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            help=f"ROLE=SPEC, repeatable. Roles: {', '.join((*STAGES.names, CRITIC))}; with "
            f"--preset paper: {', '.join(PAPER_STAGES.names)}; or all. "
            "SPEC: openai:MODEL, anthropic:MODEL, "
            "openai-compatible:URL#MODEL, hf:PATH, local:smollm2, local:qwen2.5-1.5b (the "
            "stronger offline model: the qwen extra).",
        ),
    ] = None,
    role_setting: Annotated[
        list[str] | None,
        typer.Option(
            "--role-setting",
            help="ROLE.KEY=VALUE, repeatable, e.g. all.temperature=0.7, critic.max_tokens=400, "
            "all.client=raw (the lightest client for a fast OpenAI-compatible server), "
            "all.delivery=batch (OpenAI / Anthropic batch APIs at half the price: one batch per "
            "stage round, resumable; all.batch_poll_s=60 sets the poll interval).",
        ),
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="Store file [default: runs/icm.duckdb].")
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run", help="Run name (default: derived from the configuration, so a rerun resumes)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Process at most N samples.")] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Samples in flight at once [default: 4].")
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="i/n: process only shard i of n (by sample id), each shard with its own --db; "
            "`icm merge` brings the shard stores together.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Local processes to spread the run over (each a --shard with its own store "
            "under DB.workers/, merged into --db at the end, also after an error or Ctrl-C; a "
            "rerun resumes them). One process spends a few ms of CPU per model call, so at high "
            "--concurrency against a fast endpoint more processes (up to the CPU cores) finish "
            "sooner. Each loads its own copy of a local model. With --executor ray: the number "
            "of Ray actors.",
        ),
    ] = 1,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="local: this machine's processes (--workers, merged stores; no extra "
            "dependency). ray: Ray actors run the samples (--workers of them, the ray extra) "
            "while this process keeps the store; a local loopback cluster unless "
            "--ray-address.",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="An existing Ray cluster (e.g. 10.0.0.5:6379, or auto) for --executor ray; "
            "its nodes need this project installed and the model keys in their environment.",
        ),
    ] = None,
    retry_failed: Annotated[
        bool | None,
        typer.Option("--retry-failed", help="Also re-run samples that ended failed or rejected."),
    ] = None,
    skip_bad_rows: Annotated[
        bool | None,
        typer.Option(
            "--skip-bad-rows",
            help="Record manifest rows whose image is missing or unreadable as failed (with "
            "the reason) and run the rest. Default: stop before any model loads, naming each "
            "bad line.",
        ),
    ] = None,
    no_cache: Annotated[
        bool | None, typer.Option("--no-cache", help="Bypass the LLM cache (still record calls).")
    ] = None,
    max_stage_retries: Annotated[
        int | None,
        typer.Option(
            "--max-stage-retries", help="Retries per stage after critic rejection [default: 2]."
        ),
    ] = None,
    llm_critic: Annotated[
        bool | None,
        typer.Option(
            "--llm-critic/--no-llm-critic",
            help="After the deterministic checks pass, ask the critic model too (--no-llm-critic:"
            " the deterministic checks only) [default: on; the offline qwen demo: off].",
        ),
    ] = None,
    stage_checks: Annotated[
        bool | None,
        typer.Option(
            "--stage-checks/--no-stage-checks",
            help="Check each stage as soon as it has written and redo it at once (off: only "
            "the critic at the end of the chain checks) [default: on].",
        ),
    ] = None,
    no_perception: Annotated[
        bool | None, typer.Option("--no-perception", help="Do not run the perception detectors.")
    ] = None,
) -> None:
    # Imported on use: `icm --help` must not load the model layer.
    from graphs.config import load_config, user_errors
    from graphs.demo import choose_demo
    from graphs.runner import GenerationRun

    install_redacting_streams()  # also run as `python graphs/generate.py`, without graphs.cli
    console = make_console(stderr=True)
    # In a log file (nohup ... > log) no line is wrapped or cut at a terminal width that is
    # not there; the progress then comes as plain lines (graphs/progress_log.py).
    console.soft_wrap = not console.is_terminal
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "manifest": manifest,
            "images_dir": images_dir,
            "policy": policy,
            "rules": [r.strip() for r in rules.split(",") if r.strip()] if rules else None,
            "db": db,
            "run": run,
            "limit": limit,
            "concurrency": concurrency,
            "shard": shard,
            "retry_failed": retry_failed,
            "skip_bad_rows": skip_bad_rows,
            "use_cache": False if no_cache else None,
            "max_stage_retries": max_stage_retries,
            "llm_critic": llm_critic,
            "stage_checks": stage_checks,
            "perception": False if no_perception else None,
        }.items()
        if value is not None
    }
    try:
        roles = _assignments(role or [], "--role")
        if roles:
            overrides["roles"] = roles
        settings = _settings(role_setting or [])
        if settings:
            overrides["role_settings"] = settings
        if release is not None:
            overrides["paper"] = {"release": str(release.resolve())}
        implicit_demo = config is None and manifest is None and not roles
        if implicit_demo:
            demo = choose_demo()
            config = demo.config
            # Perception runs beside the model; one torch thread each holds up on a busy
            # 2-core machine where two threads per model collapse (measured).
            os.environ.setdefault("ICM_TORCH_THREADS", "1")
            console.print(demo.line, markup=False, highlight=False)
        # an explicit --preset wins over the implicit demo profile, not over a --config file
        cfg = load_config(config, overrides, preset=preset, preset_over_file=implicit_demo)
        if cfg.pipeline == "paper" and cfg.paper.release_seeds_wanted_without_checkout:
            console.print(
                "paper.seeds is release, but no --release DIR (a checkout of "
                "zhaoyuzhi/ICM-Assistant) was given: seeding with the policy's category "
                "sentences",
                markup=False,
                highlight=False,
            )
        if executor not in ("local", "ray"):
            raise ValueError(f"--executor: local or ray, not {executor!r}")
        if ray_address and executor != "ray":
            raise ValueError("--ray-address needs --executor ray")
        if executor == "ray":
            from graphs.ray_run import run_on_ray  # only with --executor ray

            summary = run_on_ray(cfg, workers, ray_address, console)
        elif workers > 1:
            from graphs.workers import run_with_workers  # only with --workers

            summary = run_with_workers(cfg, workers, console)
        else:
            summary = asyncio.run(GenerationRun(cfg, console).run())
    except user_errors() as exc:
        console.print(styled("[red]error:[/] {}", exc))
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        console.print("interrupted: finished samples are saved; rerun the same command to resume")
        raise typer.Exit(130) from None
    _report(console, summary)


def _assignments(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _settings(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for target, value in _assignments(items, "--role-setting").items():
        role, dot, key = target.partition(".")
        if not dot or not key:
            raise ValueError(f"--role-setting expects ROLE.KEY=VALUE, got {target}={value}")
        out.setdefault(role, {})[key] = value
    return out


def _report(console: Console, summary: Any) -> None:
    c = summary.counts
    db = summary.db
    console.print(
        styled("\nrun [bold]{}[/]: ", summary.run_id)
        + plain(
            f"{summary.processed} processed, {summary.skipped} already done; accepted "
            f"{c.get('accepted', 0)}, rejected {c.get('rejected', 0)}, failed "
            f"{c.get('failed', 0)}, pending {c.get('pending', 0)}; {summary.tokens} tokens, "
            f"${summary.cost_usd:.4f}, {summary.seconds:.0f} s"
        )
    )
    from graphs.report import print_final_report  # late: `icm --help` stays fast

    paper = print_final_report(console, summary)
    console.print(f"results: {db}")
    console.print("inspect:")
    console.print(f"  icm runs --db {db}")
    for status in ("rejected", "failed"):
        if c.get(status):
            console.print(f"  icm samples {summary.run_id} --status {status} --db {db}")
    console.print(
        f"  icm samples {summary.run_id} --db {db}        (sample ids, status, image, reason)"
    )
    console.print(f"  icm traces SAMPLE_ID --db {db}")
    style = "--preset paper" if paper else "--format llava"
    console.print(f"  icm export {summary.run_id} {style} --db {db}")
    console.print(f"  icm db info {db}")


app = typer.Typer(add_completion=False)
app.command(help=HELP)(generate_command)

if __name__ == "__main__":
    app()
