"""Data of the Compare, Judge and Fine-tune pages.

The comparison is ``evaluators.compare.compare_runs`` (the numbers ``icm compare`` prints) and its
plots are ``evaluators.plots``; both are imported when a page asks, so the viewer still serves
runs and samples where the judge extra (matplotlib) is not installed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from data.store import Store, browse, from_json
from evaluators.compare import compare_runs
from evaluators.plots import write_plots

PLOTS = ("scores", "cost_vs_quality")


# --------------------------------------------------------------------------- compare
def comparison(store: Store, run_ids: list[str]) -> Any:
    """``evaluators.compare.Comparison`` of the runs; raises LookupError for an unknown run."""
    return compare_runs(store, run_ids)


def comparison_rows(comp: Any) -> list[tuple[str, list[str]]]:
    """The rows of ``icm compare``'s table as (label, one cell per run)."""

    def num(value: float | None, spec: str, suffix: str = "") -> str:
        return "-" if value is None else f"{value:{spec}}{suffix}"

    def score(summary: dict[str, Any] | None) -> str:
        if not summary:
            return "-"
        text = f"{summary['mean']:.1f}"
        if summary.get("ci_low") is not None:
            text += f" [{summary['ci_low']:.1f}, {summary['ci_high']:.1f}]"
        return f"{text} (n={summary['n']})"

    def interval(figure: dict[str, Any] | None, spec: str, suffix: str) -> str:
        if not figure:
            return "-"
        text = f"{figure['value']:{spec}}{suffix}"
        if figure.get("ci_low") is not None:
            text += f" [{figure['ci_low']:{spec}}, {figure['ci_high']:{spec}}]"
        return text

    def failures(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in list(counts.items())[:3]) or "-"

    runs = comp.runs
    rows = [
        ("roles", [r["roles_compact"] or "-" for r in runs]),
        ("policy / rules", [f"{r['policy'] or '-'} / {r['rules'] or '-'}" for r in runs]),
        ("samples", [str(r["samples"]) for r in runs]),
        (
            "accepted/rejected/failed/pending",
            [f"{r['accepted']}/{r['rejected']}/{r['failed']}/{r['pending']}" for r in runs],
        ),
        ("acceptance rate", [num(r["acceptance_rate"], ".1%") for r in runs]),
        ("retries per sample", [num(r["retries_per_sample"], ".2f") for r in runs]),
        ("critic failures", [failures(r["critic_failures"]) for r in runs]),
    ]
    rows += [(f"judge {c}", [score(r["scores"].get(c)) for r in runs]) for c in comp.criteria]
    if comp.criteria:
        rows.append(("judge unscored", [str(r["judge_unscored"]) for r in runs]))
    rows += [
        ("tokens (in+out)", [f"{r['tokens']:,}" for r in runs]),
        ("input read from prompt cache", [f"{r['cached_input_tokens']:,}" for r in runs]),
        ("calls (cached)", [f"{r['calls']} ({r['cache_hits']})" for r in runs]),
        ("earlier-attempt calls", [str(r["earlier_attempt_calls"]) for r in runs]),
        ("cost", [num(r["cost_usd"], ".4f", " USD") for r in runs]),
        ("cost per accepted", [interval(r["per_accepted"]["usd"], ".5f", " USD") for r in runs]),
        ("tokens per accepted", [interval(r["per_accepted"]["tokens"], ",.0f", "") for r in runs]),
        ("mean latency per call", [num(r["mean_latency_ms"], ".0f", " ms") for r in runs]),
    ]
    return rows


def comparison_plot(store: Store, run_ids: list[str], name: str) -> bytes | None:
    """PNG bytes of one comparison plot (``scores`` or ``cost_vs_quality``), None when that
    plot has nothing to show. Raises ``evaluators.plots.PlotError`` without matplotlib."""
    comp = comparison(store, run_ids)
    with tempfile.TemporaryDirectory(prefix="icm-view-") as tmp:
        written = write_plots(comp, Path(tmp)).get(name)
        return written.read_bytes() if written else None


# --------------------------------------------------------------------------- judge
def judge_summary(store: Store) -> list[dict[str, Any]]:
    """Judgments grouped by judge run, judge and rubric, with mean numeric scores."""
    groups = browse.judge_groups(store)
    means = browse.judge_means(store)
    by_group: dict[tuple, dict[str, float]] = {}
    for m in means:
        if m["n"]:
            by_group.setdefault((m["run_id"], m["judge_spec"], m["rubric"]), {})[m["criterion"]] = (
                m["mean"]
            )
    for g in groups:
        g["means"] = by_group.get((g["run_id"], g["judge_spec"], g["rubric"]), {})
    return groups


def calibrations(store: Store) -> list[dict[str, Any]]:
    """Calibration reports, newest first, with their scalar figures pulled out for a table."""
    out = []
    for row in browse.calibrations(store):
        report = from_json(row.pop("report_json"))
        row["report"] = report
        row["figures"] = _scalars(report) if isinstance(report, dict) else {}
        out.append(row)
    return out


def _scalars(report: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Numbers and short strings of a nested report, keyed by dotted path (two levels deep)."""
    out: dict[str, Any] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or (isinstance(value, str) and len(value) < 80):
            out[name] = str(value)
        elif isinstance(value, int | float):
            out[name] = f"{value:.4g}"
        elif isinstance(value, dict) and depth < 2:
            out.update(_scalars(value, f"{name}.", depth + 1))
    return out


# --------------------------------------------------------------------------- fine-tune
def finetune_runs(store: Store) -> list[dict[str, Any]]:
    rows = browse.finetune_runs(store)
    for row in rows:
        row["metrics"] = from_json(row.pop("metrics_json"))
        row["config"] = from_json(row.pop("config_json"))
        row["curve"] = loss_curve(store, row["finetune_id"])
    return rows


SVG_W, SVG_H, PAD = 560, 220, 36
SPLIT_COLOURS = {"train": "#1f6feb", "eval": "#d9480f", "validation": "#d9480f"}


def loss_curve(store: Store, finetune_id: str) -> dict[str, Any] | None:
    """Loss against step, one polyline per split, as SVG coordinates (drawn server side: the
    pages carry no script)."""
    points = browse.loss_points(store, finetune_id)
    if not points:
        return None
    steps = [p["step"] for p in points]
    losses = [p["loss"] for p in points]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)
    span_x, span_y = (x1 - x0) or 1, (y1 - y0) or 1

    def xy(step: float, loss: float) -> str:
        x = PAD + (step - x0) / span_x * (SVG_W - 2 * PAD)
        y = SVG_H - PAD - (loss - y0) / span_y * (SVG_H - 2 * PAD)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for split in dict.fromkeys(p["split"] for p in points):
        mine = [p for p in points if p["split"] == split]
        lines.append(
            {
                "split": split,
                "colour": SPLIT_COLOURS.get(split, "#555"),
                "points": " ".join(xy(p["step"], p["loss"]) for p in mine),
                "last": mine[-1]["loss"],
                "n": len(mine),
            }
        )
    return {
        "width": SVG_W,
        "height": SVG_H,
        "pad": PAD,
        "lines": lines,
        "x": (x0, x1),
        "y": (y0, y1),
    }
