"""``icm view DB --export report.html``: the viewer's pages as one self-contained HTML file.

Everything is inside the file: the stylesheet (pinned by a CSP hash), images as small JPEG data
URIs, loss curves as inline SVG. It carries no script and its Content-Security-Policy allows
none, so a model output that contains markup stays text here too. Links between runs and samples
are anchors within the file.

A run can hold 100k samples; the report keeps ``max_samples`` per run (rejected, failed and
pending first, as those are what a reader investigates) and says how many it left out.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from data.atomic_write import write_text_atomically
from data.redaction import redact
from data.store import Store, browse
from data.store.snapshot import DataSource, SourceInfo
from graphs.viewer import queries, reports
from graphs.viewer.render import Links, environment, stylesheet
from graphs.viewer.thumbs import THUMB_SIDE, data_uri, encode, resolve

EXPORT_IMAGE_SIDE = 384
DEFAULT_MAX_SAMPLES = 200  # also in graphs.commands.view


class ReportLinks(Links):
    """Anchors inside the report; images as data URIs prepared beforehand."""

    def __init__(self, thumbs: dict[str, str], images: dict[str, str]) -> None:
        self.thumbs, self.images = thumbs, images

    @staticmethod
    def run_anchor(run_id: str) -> str:
        return f"run-{quote(run_id, safe='')}"

    @staticmethod
    def sample_anchor(sample_id: str) -> str:
        return f"sample-{quote(sample_id, safe='')}"

    def run(self, run_id: str) -> str:
        return "#" + self.run_anchor(run_id)

    def sample(self, sample_id: str) -> str:
        return "#" + self.sample_anchor(sample_id)

    def thumb(self, sample_id: str) -> str | None:
        return self.thumbs.get(sample_id)

    def image(self, sample_id: str) -> str | None:
        return self.images.get(sample_id)


@dataclass
class ExportSummary:
    path: Path
    runs: int
    samples: int
    left_out: int
    size_bytes: int
    source: SourceInfo


def export_report(
    db: str | Path, out: str | Path, *, max_samples: int = DEFAULT_MAX_SAMPLES, blur: bool = True
) -> ExportSummary:
    """Write the report for the store at ``db`` (or its snapshot while a run writes it)."""
    source = DataSource(db)
    try:
        with source.reading() as (store, info):
            context = _gather(store, max_samples)
    finally:
        source.close()
    thumbs, images = _images(context["runs"], Path(db))
    css = stylesheet()
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'sha256-{digest}'"
    html = (
        environment(blur=blur)
        .get_template("report.html")
        .render(
            **context,
            links=ReportLinks(thumbs, images),
            export=True,
            export_csp=csp,
            css=css,
            db=str(db),
            source=info,
            exported_at=datetime.now().isoformat(sep=" ", timespec="seconds"),
            refresh=None,
        )
    )
    target = Path(out)
    # redacted (an output boundary); an earlier report stays whole until this one is written
    write_text_atomically(target, redact(html))
    shown = sum(len(r["rows"]) for r in context["runs"])
    left = sum(r["samples"] - len(r["rows"]) for r in context["runs"])
    return ExportSummary(target, len(context["runs"]), shown, left, target.stat().st_size, info)


def _gather(store: Store, max_samples: int) -> dict[str, Any]:
    runs = queries.runs(store, sort="created", desc=False)
    for run in runs:
        rows = browse.priority_samples(store, run["run_id"], max_samples)
        run["rows"] = queries.enrich(store, rows)
        run["details"] = [queries.sample(store, r["sample_id"]) for r in rows]
    comparison_rows, comparison = [], None
    generated = [r["run_id"] for r in runs if r["kind"] == "generate"]
    if len(generated) >= 2:
        try:
            comparison = reports.comparison(store, generated)
            comparison_rows = reports.comparison_rows(comparison)
        except (ImportError, LookupError):
            comparison = None
    return {
        "runs": runs,
        "judge": reports.judge_summary(store),
        "calibrations": reports.calibrations(store),
        "finetunes": reports.finetune_runs(store),
        "comp": comparison,
        "comp_rows": comparison_rows,
    }


def _images(runs: list[dict[str, Any]], db: Path) -> tuple[dict[str, str], dict[str, str]]:
    thumbs: dict[str, str] = {}
    images: dict[str, str] = {}
    by_path: dict[tuple[str, int], str | None] = {}
    for run in runs:
        for row in run["rows"]:
            path = resolve(row["image_path"], db)
            if path is None:
                continue
            for side, into in ((THUMB_SIDE, thumbs), (EXPORT_IMAGE_SIDE, images)):
                key = (str(path), side)
                if key not in by_path:  # equal images across runs are encoded once
                    jpeg = encode(path, side, quality=75)
                    by_path[key] = data_uri(jpeg) if jpeg else None
                if by_path[key]:
                    into[row["sample_id"]] = by_path[key]  # type: ignore[assignment]
    return thumbs, images
