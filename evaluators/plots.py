"""PNG plots of a run comparison: judge score distributions, and cost against quality.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so plotting keeps no global
state and needs no display. matplotlib comes with the ``judge`` extra; without it the
comparison table still works and the plots say what to install.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.compare import Comparison

QUALITY_CRITERION = "accuracy"
"""The criterion the cost-vs-quality plot uses when the judge gives it: the paper's MEQ is the
mean accuracy score / 100."""


class PlotError(RuntimeError):
    """Plots cannot be drawn (matplotlib missing)."""


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PlotError(
            "matplotlib is not installed: pip install 'icm-assistant[judge]' to draw plots"
        ) from exc
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _label(run: dict[str, Any]) -> str:
    return str(run["name"])


def _legend_label(run: dict[str, Any]) -> str:
    """``name:`` then one line per group of roles sharing a model (a binding with an endpoint
    URL is long; wrapped at commas, never inside a model spec)."""
    groups = (run["roles_compact"] or "-").split(" ")
    lines = [f"{run['name']}:"]
    for group in groups:
        roles, _, spec = group.partition("=")
        wrapped = textwrap.wrap(roles.replace(",", ", "), width=70) or [roles]
        lines += ["  " + line for line in wrapped[:-1]]
        lines.append(f"  {wrapped[-1]} = {spec}" if spec else f"  {wrapped[-1]}")
    return "\n".join(lines)


def plot_score_distributions(comparison: Comparison, path: Path) -> Path | None:
    """One panel per criterion, a box (with the items as dots) per run. None: no scores."""
    criteria = comparison.criteria
    if not criteria:
        return None
    runs = comparison.runs
    colours = _colours(len(runs))
    cols = min(len(criteria), 2)
    rows = -(-len(criteria) // cols)
    fig = _figure(max(6.0, (2.0 + 1.2 * len(runs)) * cols), 3.6 * rows + 0.6 + 0.2 * len(runs))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    for ax, criterion in zip(axes, criteria, strict=False):
        data = [comparison.item_scores.get(r["run_id"], {}).get(criterion, []) for r in runs]
        positions = [i + 1 for i, values in enumerate(data) if values]
        boxes = ax.boxplot(
            [values for values in data if values],
            positions=positions,
            widths=0.55,
            patch_artist=True,
            showmeans=True,
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
            medianprops={"color": "black"},
        )
        for patch, pos in zip(boxes["boxes"], positions, strict=True):
            patch.set_facecolor((*colours[pos - 1][:3], 0.45))
        for i, values in enumerate(data):
            if values:
                jitter = rng.uniform(-0.15, 0.15, len(values))
                ax.scatter(
                    np.full(len(values), i + 1) + jitter, values, s=12, color=colours[i],
                    alpha=0.8, zorder=3,
                )  # fmt: skip
        ax.set_title(f"{criterion} (n items per run: {', '.join(str(len(d)) for d in data)})")
        ax.set_xticks(range(1, len(runs) + 1), [_label(r) for r in runs], rotation=15)
        ax.set_ylabel("judge score (0-100)")
        ax.set_ylim(-3, 103)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(criteria) :]:
        ax.set_visible(False)
    _legend(fig, runs, colours, extra="box: quartiles; line: median; diamond: mean; dots: items")
    fig.suptitle(f"Judge scores per run (judge: {comparison.judge_spec})", fontsize=13)
    return _save(fig, path)


def plot_cost_vs_quality(comparison: Comparison, path: Path) -> Path:
    """One point per run: cost (or tokens, where a run's cost is unknown) per accepted sample
    against judged quality with its 95 % interval (or acceptance rate, with no judge scores)."""
    runs = comparison.runs
    colours = _colours(len(runs))
    costs = [r["cost_per_accepted_usd"] for r in runs]
    recorded = any(c for c in costs)  # 0 everywhere (offline models, no prices) is no record
    use_cost = recorded and all(c is not None for c in costs)
    x_key, x_label = (
        ("cost_per_accepted_usd", "cost per accepted sample (USD)")
        if use_cost
        else (
            "tokens_per_accepted",
            "tokens per accepted sample "
            + ("(cost unknown for some runs)" if recorded else "(no costs recorded)"),
        )
    )
    criterion = _quality_criterion(comparison)
    fig = _figure(7.5, 5.0 + 0.45 * sum(_legend_label(r).count("\n") + 1 for r in runs) / 2)
    ax = fig.subplots()
    plotted = 0
    for run, colour in zip(runs, colours, strict=True):
        x = run[x_key]
        if x is None:
            continue
        if criterion is not None:
            score = run["scores"].get(criterion)
            if score is None:
                continue
            y, low, high = score["mean"], score["ci_low"], score["ci_high"]
            ax.errorbar(
                [x], [y], yerr=[[y - low], [high - y]], fmt="o", ms=9, capsize=5, color=colour,
                label=_legend_label(run),
            )  # fmt: skip
        else:
            y = None if run["acceptance_rate"] is None else 100 * run["acceptance_rate"]
            if y is None:
                continue
            ax.plot([x], [y], "o", ms=9, color=colour, label=_legend_label(run))
        ax.annotate(_label(run), (x, y), textcoords="offset points", xytext=(8, 6))
        plotted += 1
    if not plotted:  # an empty frame (and matplotlib's "no artists" warning) tells nobody anything
        why = "no costs recorded" if not recorded else "no run has a cost per accepted sample"
        detail = "and no accepted samples to count tokens for" if not recorded else ""
        ax.text(0.5, 0.55, why, ha="center", va="center", fontsize=14, transform=ax.transAxes)
        ax.text(0.5, 0.45, detail, ha="center", va="center", fontsize=9, transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title("Cost vs quality")
        return _save(fig, path)
    if criterion is not None:
        ax.set_ylabel(f"judge {criterion} score, mean with bootstrap 95 % CI")
        title = f"Cost vs quality (judge: {comparison.judge_spec})"
    else:
        ax.set_ylabel("acceptance rate (%), no judge scores yet")
        title = "Cost vs acceptance (run `icm judge` for quality scores)"
    ax.set_xlabel(x_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.2)
    fig.legend(loc="outside lower center", fontsize=8, title="run: role bindings", title_fontsize=8)
    return _save(fig, path)


def _quality_criterion(comparison: Comparison) -> str | None:
    if not comparison.criteria:
        return None
    if QUALITY_CRITERION in comparison.criteria:
        return QUALITY_CRITERION
    return comparison.criteria[0]


def _legend(fig: Any, runs: list[dict[str, Any]], colours: list[Any], extra: str) -> None:
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=c, alpha=0.6, label=_legend_label(r))
        for r, c in zip(runs, colours, strict=True)
    ]
    fig.legend(
        handles=handles, loc="outside lower center", fontsize=8, ncols=1,
        title=f"run: role bindings   ({extra})", title_fontsize=8,
    )  # fmt: skip


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_plots(comparison: Comparison, out: Path) -> dict[str, Path | None]:
    """Both plots into ``out``; a plot with nothing to show is None."""
    return {
        "scores": plot_score_distributions(comparison, out / "scores_by_run.png"),
        "cost_vs_quality": plot_cost_vs_quality(comparison, out / "cost_vs_quality.png"),
    }
