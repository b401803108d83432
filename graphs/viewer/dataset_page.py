"""The viewer's dataset page: the coverage view of ``icm dataset`` for the runs picked, and its
heatmaps (near-duplicates are left to the command: a page should answer in milliseconds)."""

from __future__ import annotations

from data.store import Store
from evaluators.compare import resolve_runs
from graphs.dataset_view import DatasetView, from_runs


def view(store: Store, refs: list[str]) -> DatasetView:
    """The view of these generation runs (ids, names or id prefixes), read as one set."""
    runs = resolve_runs(store, refs)
    other = [r["name"] for r in runs if r["kind"] != "generate"]
    if other:
        raise ValueError(f"not generation runs: {', '.join(other)}")
    return from_runs(store, [r["run_id"] for r in runs], duplicates=False)


def plot(dataset: DatasetView, policy: str) -> bytes:
    """The heatmap PNG of one policy of the view (LookupError for a policy not in it)."""
    from evaluators.coverage_plot import coverage_png  # matplotlib loads on use

    for report in dataset.coverage:
        if report.policy == policy:
            return coverage_png(report, dataset.policies[policy].flagged_labels)
    raise LookupError(f"no policy {policy!r} in these runs")
