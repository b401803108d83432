"""``icm dataset RUN... [--json] [--out DIR]``: what a data set holds, as a researcher asks
before training on it: per policy, the product table's accepted counts (category x rule
variant, with each cell's verdict) and its empty cells by name, the verdict balance per rule,
the share of each rejection reason by stage, near-duplicate texts across samples and the
rule-contrast pass rate; a heatmap PNG of each policy's table.

Each argument is a generation run (id, name or id prefix) of ``--db``, or an ICM-Instruct
JSONL file (the released records: ``category`` and ``label`` under ``--policy``'s base rule).
Several runs are read as one set (a dataset assembled from runs); a file is read on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from data.policy import load_policy
from data.policy_models import PolicyError
from data.store import DEFAULT_DB_PATH
from evaluators.coverage import render_text
from evaluators.near_duplicates import DEFAULT_THRESHOLD
from evaluators.near_duplicates import render_text as render_duplicates
from graphs.commands.runs import DbOption, JsonOption, RunLookupError, fail, open_read_only
from graphs.commands.runs import resolve_run as resolve_one
from graphs.dataset_view import DatasetInputError, DatasetView, from_instruct_file, from_runs

DEFAULT_DATASET_DIR = Path("runs") / "dataset"
HELP = (
    "What a data set holds: per policy, accepted counts per category x rule variant x verdict, "
    "empty cells, verdict balance, rejection reasons by stage, near-duplicates, rule contrast; "
    "a heatmap PNG. RUN: run ids/names, or an ICM-Instruct .jsonl file."
)


def _is_file(ref: str) -> bool:
    return ref.endswith((".jsonl", ".json")) or Path(ref).is_file()


def gather(
    refs: list[str],
    *,
    db: Path,
    policy: str,
    rule: str | None,
    duplicates: bool,
    threshold: float,
) -> DatasetView:
    """The view of the runs or the file named by ``refs`` (one-line errors as typer.Exit)."""
    files = [r for r in refs if _is_file(r)]
    if files and len(refs) > 1:
        raise fail("give either one ICM-Instruct file or run references, not both")
    try:
        if files:
            path = Path(files[0])
            if not path.is_file():
                raise fail(f"no file {path}")
            chosen = load_policy(policy)
            return from_instruct_file(
                path, chosen, rule=rule, duplicates=duplicates, threshold=threshold
            )
        with open_read_only(db) as store:
            ids = []
            for ref in refs:
                run = resolve_one(store, ref)
                if run["kind"] != "generate":
                    raise fail(f"run {ref!r} is a {run['kind']} run, not a generation run")
                ids.append(run["run_id"])
            return from_runs(store, list(dict.fromkeys(ids)), duplicates=duplicates,
                             threshold=threshold)  # fmt: skip
    except (RunLookupError, DatasetInputError, PolicyError, FileNotFoundError) as exc:
        raise fail(str(exc).splitlines()[0]) from exc


def write_outputs(view: DatasetView, out: Path) -> list[Path]:
    """``coverage-<policy>.png`` per policy, ``dataset.json`` and ``dataset.txt`` in ``out``."""
    from evaluators.coverage_plot import coverage_png  # matplotlib loads on use
    from evaluators.plots import PlotError

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for report in view.coverage:
        path = out / f"coverage-{report.policy}.png"
        try:
            png = coverage_png(report, view.policies[report.policy].flagged_labels)
        except PlotError as exc:
            raise fail(str(exc)) from exc
        _write_bytes(path, png)
        written.append(path)
    data = out / "dataset.json"
    _write_bytes(data, json.dumps(view.to_dict(examples=20), indent=2, default=str).encode())
    text = out / "dataset.txt"
    _write_bytes(text, (render(view) + "\n").encode())
    return [*written, data, text]


def _write_bytes(path: Path, data: bytes) -> None:
    """Through a temporary file and a rename: an interrupted write leaves the old file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def render(view: DatasetView) -> str:
    """The whole report as text."""
    parts = [render_text(report) for report in view.coverage]
    if view.contrast is not None:
        c = view.contrast
        rate = "-" if c.rate is None else f"{c.rate:.0%}"
        block = [
            f"rule contrast: {c.passed} of {c.checked} samples whose verdict flips between "
            f"rule variants pass ({rate})"
        ]
        block += [f"  {f.sample_id}: {'; '.join(f.problems)}" for f in c.failures[:3]]
        parts.append("\n".join(block))
    if view.duplicates is not None:
        parts.append(render_duplicates(view.duplicates))
    return "\n\n".join(parts)


def dataset_command(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Generation runs (ids, names, id prefixes) or one ICM-Instruct .jsonl."
        ),
    ],
    db: DbOption = DEFAULT_DB_PATH,
    json_: JsonOption = False,
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for the heatmap PNGs, dataset.json and dataset.txt."),
    ] = DEFAULT_DATASET_DIR,
    policy: Annotated[
        str, typer.Option("--policy", help="Policy of an ICM-Instruct file (name or path).")
    ] = "icm_sexy",
    rule: Annotated[
        str | None,
        typer.Option("--rule", help="Rule variant of a file's labels (default: the base rule)."),
    ] = None,
    duplicates: Annotated[
        bool,
        typer.Option("--duplicates/--no-duplicates", help="Search near-duplicate texts."),
    ] = True,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold", min=0.05, max=1.0, help="Near-duplicate Jaccard threshold (shingles)."
        ),
    ] = DEFAULT_THRESHOLD,
) -> None:
    """Coverage, balance, rejection reasons, near-duplicates and rule contrast of a data set."""
    view = gather(runs, db=db, policy=policy, rule=rule, duplicates=duplicates,
                  threshold=threshold)  # fmt: skip
    written = write_outputs(view, out)
    if json_:
        payload = view.to_dict() | {"files": [str(p) for p in written]}
        typer.echo(json.dumps(payload, ensure_ascii=False, default=str))
        return
    typer.echo(render(view))
    typer.echo("")
    for path in written:
        typer.echo(f"wrote {path}")
