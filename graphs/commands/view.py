"""``icm view [DB]``: serve the viewer on loopback, or ``--export`` it as one HTML file.

Mounted by ``graphs/cli.py`` as ``app.command("view")(view_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from data.store import DEFAULT_DB_PATH, StoreError
from data.store.snapshot import snapshot_path

DEFAULT_PORT = 8765
DEFAULT_MAX_SAMPLES = 200  # graphs.viewer.export's default; the web stack is imported on use


def view_command(
    db: Annotated[
        Path,
        typer.Argument(
            help="DuckDB store to view (read-only; its live snapshot while a run writes it)."
        ),
    ] = DEFAULT_DB_PATH,
    port: Annotated[int, typer.Option("--port", "-p", help="Port to serve on.")] = DEFAULT_PORT,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to bind; keep the loopback default unless you mean to share."
        ),
    ] = "127.0.0.1",
    export: Annotated[
        Path | None,
        typer.Option(
            "--export", help="Write one self-contained HTML report to this file and exit."
        ),
    ] = None,
    export_samples: Annotated[
        int,
        typer.Option(
            "--export-samples", min=1, help="Samples per run in the report (problem samples first)."
        ),
    ] = DEFAULT_MAX_SAMPLES,
    blur: Annotated[
        bool,
        typer.Option(
            "--blur/--no-blur",
            help="Blur images (thumbnails and full) until one is clicked; --no-blur shows them.",
        ),
    ] = True,
) -> None:
    """Browse runs, samples, traces, comparisons, judge results and fine-tunes in a browser."""
    if not db.exists() and not snapshot_path(db).exists():
        typer.echo(
            f"error: no database at {db}: run `icm generate` first, or pass its path", err=True
        )
        raise typer.Exit(1)
    if export is not None:
        from graphs.viewer.export import export_report  # the web stack loads on use

        try:
            done = export_report(db, export, max_samples=export_samples, blur=blur)
        except StoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        note = f", {done.left_out} samples left out (--export-samples)" if done.left_out else ""
        typer.echo(
            f"wrote {done.path} ({done.size_bytes / 1e6:.1f} MB): {done.runs} runs, "
            f"{done.samples} samples{note}; read from the {done.source.kind} {done.source.path}"
        )
        return
    # The web stack loads on use: `icm --help` stays fast.
    import uvicorn

    from graphs.viewer.app import LOOPBACK_HOSTS, create_app

    hosts = LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else [*LOOPBACK_HOSTS, host]
    if host in {"0.0.0.0", "::"}:
        typer.echo(
            "warning: serving on every interface; anyone who can reach it can read the store",
            err=True,
        )
        hosts = ["*"]
    app = create_app(db, allowed_hosts=hosts, blur=blur)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"icm view: http://{shown}:{port}/  ({db}, read-only; Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
