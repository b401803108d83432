"""``icm perceive IMAGE...``: run the perception toolkit and show what it saw.

A table per image for people, ``--json`` for machines (one JSON array, an entry per image in
argument order; a bad image is an entry with ``error`` and ``reason``). Bad images are reported
and the rest still processed; the exit code is 1 when any image failed. ``--policy`` adds the
attribute values the evidence supports and the no-LLM baseline's verdicts.

Runs standalone too: ``python -m graphs.commands.perceive IMAGE...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agents.perception.baseline import predict
from agents.perception.evidence import Evidence
from agents.perception.toolkit import Toolkit
from data.images import ImageLoadError
from data.policy import PolicyError, load_policy
from data.store import Store, StoreError
from graphs.console import make_console, styled


def perceive_command(
    images: Annotated[
        list[Path], typer.Argument(help="Image files to examine.", show_default=False)
    ],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db", help="Store to cache evidence in (perception_cache); none by default."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Intra-op threads per model (default: all cores)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Detectors run at once (1: one after another).")
    ] = 1,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy", help="Also map evidence to this policy's attributes and run the baseline."
        ),
    ] = None,
) -> None:
    """Run the shipped detectors (exposure, NSFW, objects, OCR, faces) on images."""
    console = make_console()
    errors = make_console(stderr=True, soft_wrap=True)
    loaded_policy = _policy(policy, errors) if policy else None
    store = _store(db, errors) if db else None
    try:
        with Toolkit(threads=threads, workers=workers) as toolkit:
            results = toolkit.perceive_many(images, store=store)
    finally:
        if store is not None:
            store.close()
    failed = 0
    documents: list[dict[str, Any]] = []
    for path, result in zip(images, results, strict=True):
        if isinstance(result, ImageLoadError):
            failed += 1
            documents.append(
                {"image": str(path), "error": type(result).__name__, "reason": result.reason}
            )
            if not json_:
                errors.print(styled("[red]error[/red] {}: {}", type(result).__name__, result))
            continue
        extra = _policy_view(result, loaded_policy) if loaded_policy else {}
        documents.append({"image": str(path), **result.model_dump(mode="json"), **extra})
        if not json_:
            console.print(_table(path, result, extra))
    if json_:
        console.print_json(json.dumps(documents))
    if failed:
        if not json_:
            errors.print(f"{failed} of {len(images)} image(s) could not be read")
        raise typer.Exit(1)


def _policy(name: str, errors: Console) -> Any:
    try:
        return load_policy(name)
    except PolicyError as exc:
        errors.print(styled("[red]error[/red] {}", exc))
        raise typer.Exit(2) from exc


def _store(path: Path, errors: Console) -> Any:
    try:
        return Store.open(path)
    except StoreError as exc:
        errors.print(styled("[red]error[/red] {}", exc))
        raise typer.Exit(2) from exc


def _policy_view(evidence: Evidence, policy: Any) -> dict[str, Any]:
    prediction = predict(evidence, policy)
    return {
        "policy": policy.name,
        "attributes": [a.model_dump(mode="json") for a in prediction.attributes],
        "baseline": prediction.model_dump(mode="json", exclude={"attributes"}),
    }


def _table(path: Path, evidence: Evidence, extra: dict[str, Any]) -> Table:
    cached = f", cached: {', '.join(evidence.cached)}" if evidence.cached else ""
    size = f"{evidence.width}x{evidence.height}"
    table = Table(
        title=f"{path}  ({size}, sha256 {evidence.image_sha256[:12]}{cached})",
        title_justify="left",
        show_lines=False,
    )
    table.add_column("tool", style="bold")
    table.add_column("finding")
    table.add_column("ms", justify="right")
    ms = evidence.timings_ms

    def timing(tool: str) -> str:
        return f"{ms[tool]:.0f}" if tool in ms else ("cache" if tool in evidence.cached else "")

    people = evidence.people
    table.add_row(
        "people",
        "unknown" if people.present is None else ("; ".join(people.sources) or "none detected"),
        "",
    )
    if evidence.faces is not None:
        sizes = ", ".join(f"{f.area_fraction:.1%}" for f in evidence.faces.faces) or "-"
        table.add_row("faces", f"{evidence.faces.count} frontal (area: {sizes})", timing("faces"))
    if evidence.exposure is not None:
        found = (
            ", ".join(f"{d.label} {d.score:.2f}" for d in evidence.exposure)
            or "no body parts detected"
        )
        table.add_row("exposure", found, timing("exposure"))
    if evidence.nsfw_score is not None:
        table.add_row("nsfw", f"{evidence.nsfw_score:.3f}", timing("nsfw"))
    if evidence.objects is not None:
        top = ", ".join(f"{label.name} {label.score:.2f}" for label in evidence.objects.top)
        table.add_row("objects", top, timing("objects"))
        if evidence.objects.flagged:
            flagged = ", ".join(
                f"{c.name} {c.score:.2f} [{c.group}]" for c in evidence.objects.flagged
            )
            table.add_row("flagged", flagged, "")
    if evidence.ocr is not None:
        text = " | ".join(f"{line.text} ({line.score:.2f})" for line in evidence.ocr) or "none read"
        table.add_row("ocr", text, timing("ocr"))
    if evidence.prompt_injection:
        table.add_row("injection", ", ".join(evidence.prompt_injection), "", style="red")
    for tool, message in sorted(evidence.errors.items()):
        table.add_row(tool, message, "", style="yellow")
    if extra:
        for item in extra["attributes"]:
            table.add_row(
                "attribute", f"{item['attribute']}={item['value']} {item['confidence']:.2f}", ""
            )
        baseline = extra["baseline"]
        if baseline["category"] is None:
            table.add_row("baseline", f"abstains: {baseline['abstain_reason']}", "")
        else:
            verdicts = ", ".join(
                f"{rule}: {v['verdict']} ({v['confidence']:.2f})"
                for rule, v in baseline["verdicts"].items()
            )
            table.add_row("baseline", f"{baseline['category']} -> {verdicts}", "")
    return table


if __name__ == "__main__":
    typer.run(perceive_command)
