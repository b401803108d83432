"""The coverage heatmap: a policy's product table (categories x rule variants) coloured by the
accepted records in each cell, the count and the cell's verdict written in it, empty cells
filled pink and marked `empty` so they read as gaps at a glance.

Built on ``matplotlib.figure.Figure`` as the comparison plots are (:mod:`evaluators.plots`).
"""

from __future__ import annotations

import io

import numpy as np

from evaluators.coverage import PolicyCoverage
from evaluators.plots import _figure


def coverage_png(report: PolicyCoverage, flagged: frozenset[str] = frozenset()) -> bytes:
    """The heatmap of one policy's coverage as PNG bytes; flagged verdicts are printed in
    capitals (``SEXY``) so the verdict side of each cell reads without a legend."""
    cats, rules = report.categories, report.rules or ["(none)"]
    grid = np.zeros((len(cats), len(rules)))
    by_key = {(c.category, c.rule): c for c in report.cells}
    height = max(2.5, 0.28 * len(cats) + 1.2)
    fig = _figure(max(6.0, 3.4 + 1.5 * len(rules)), height)
    from matplotlib.patches import Rectangle  # matplotlib is there: _figure made one

    ax = fig.add_subplot()
    for i, cat in enumerate(cats):
        for j, rule in enumerate(rules):
            cell = by_key.get((cat, rule))
            grid[i, j] = cell.count if cell else 0
    image = ax.imshow(grid, cmap="Blues", aspect="auto", vmin=0, vmax=max(1.0, grid.max()))
    for i, cat in enumerate(cats):
        for j, rule in enumerate(rules):
            cell = by_key.get((cat, rule))
            if cell is None:
                continue
            verdict = cell.verdict.upper() if cell.verdict in flagged else cell.verdict
            dark = grid[i, j] > 0.6 * max(1.0, grid.max())
            if cell.count == 0:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#f9d6db",
                                       edgecolor="white", linewidth=1))  # fmt: skip
                ax.text(j, i, f"empty  ({verdict})", ha="center", va="center", fontsize=7,
                        color="#b00020")  # fmt: skip
            else:
                ax.text(j, i, f"{cell.count}  {verdict}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(rules)), rules)
    ax.set_yticks(range(len(cats)), cats, fontsize=7)
    ax.xaxis.tick_top()
    empty = len(report.empty_cells)
    ax.set_title(
        f"{report.policy}: {report.records} accepted records\n{empty} of {len(report.cells)} "
        "cells empty (pink)",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, shrink=0.6, label="accepted records")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
