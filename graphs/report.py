"""What ``generate`` shows a person while it runs and when it ends.

While it runs: each preparation step as it happens (manifest checked, models loaded, with their
times), then one progress line that moves with every model call, not only when a sample ends
(samples done, accepted/rejected/failed, calls and how many came from the cache, tokens so far,
the last call's stage and tokens, elapsed time and ETA). A slow local model spends a minute or
more on one sample; a bar that only moves per sample looks stuck. (Every call is counted as it
finishes; the line takes the new figures at most ten times a second, as often as it is redrawn.)
When the output is not a terminal (``nohup ... > log``), plain lines take its place: one per
finished sample and one every ``ICM_PROGRESS_INTERVAL_S`` seconds (``graphs/progress_log.py``).

When it ends: every sample's status with the one-line reason, one accepted record printed in
full in the LLaVA form ``icm export`` writes (for a ``--preset paper`` run, the paper's
single-turn records and the paper-style export command), where the exports go, and whether the
calls were served from the cache ("14 calls from cache, 0 tokens spent").
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from agents.models.result import CallResult
from data.export import ExportRecord, collect_records, llava_record
from data.export_paper import paper_llava_records
from data.policy import PolicyError, load_policy
from data.store import Store
from data.store.outcomes import SampleOutcome, sample_outcomes
from data.store.queries import run_row
from evaluators.consistency import Check
from graphs.commands.runs import default_export_path
from graphs.console import plain, styled
from graphs.progress_log import (
    Heartbeat,
    ProgressFigures,
    progress_interval,
    progress_line,
    write_log_line,
)
from graphs.state import SampleState

#: a reason longer than this is cut in the per-sample list (``icm traces`` shows it whole)
REASON_WIDTH = 110
_MARKS = {"accepted": "[green]✓ accepted[/]", "rejected": "[yellow]✗ rejected[/]",
          "failed": "[red]✗ failed  [/]", "pending": "[dim]… pending [/]"}  # fmt: skip


@dataclass
class CallTally:
    """Model calls of this invocation, counted as they finish (from any thread)."""

    calls: int = 0
    cached: int = 0
    tokens: int = 0
    _last: tuple[str, bool, int, int, float] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, calls: int, cached: int, tokens: int) -> None:
        """Totals counted elsewhere (the ``--workers`` parent adds up its workers' reports)."""
        with self._lock:
            self.calls, self.cached, self.tokens = calls, cached, tokens

    def add(self, stage: str, result: Any) -> None:
        tokens_in = int(getattr(result, "input_tokens", 0) or 0)
        tokens_out = int(getattr(result, "output_tokens", 0) or 0)
        cached = bool(getattr(result, "cache_hit", False))
        seconds = float(getattr(result, "latency_ms", 0.0) or 0.0) / 1000
        with self._lock:
            self.calls += 1
            self.cached += cached
            self.tokens += tokens_in + tokens_out
            self._last = (stage, cached, tokens_in, tokens_out, seconds)

    @property
    def last(self) -> str:
        """The last call in words (written when shown, not for every call)."""
        if self._last is None:
            return ""
        stage, cached, tokens_in, tokens_out, seconds = self._last
        if cached:
            return f"{stage}: from cache"
        speed = f", {tokens_out / seconds:.1f} tok/s" if seconds > 0 and tokens_out else ""
        return f"{stage}: {tokens_in}+{tokens_out} tok in {seconds:.1f} s{speed}"


class ReportingRecorder:
    """A stage recorder that also tells the progress display about every model call.

    It forwards each record to the store's recorder unchanged (nothing is recorded twice).
    """

    def __init__(self, inner: Any, reporter: RunReporter) -> None:
        self._inner = inner
        self._reporter = reporter

    def stage(
        self,
        state: SampleState,
        stage: str,
        rule: str | None,
        attempt: int,
        result: CallResult[Any],
        feedback: str | None,
    ) -> None:
        self._inner.stage(state, stage, rule, attempt, result, feedback)
        self._reporter.on_call(stage, result)

    def checks(
        self, state: SampleState, attempt: int, checks: Sequence[Check], source: str
    ) -> None:
        self._inner.checks(state, attempt, checks, source)


def progress_columns() -> tuple[ProgressColumn, ...]:
    """done/total, outcomes, calls (cached), tokens, the last call, elapsed, ETA."""
    return (
        TextColumn("{task.description}", style="bold", markup=False),  # the run's name
        BarColumn(bar_width=20),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn(
            "[green]{task.fields[accepted]} ok[/] [yellow]{task.fields[rejected]} rej[/] "
            "[red]{task.fields[failed]} fail[/]  {task.fields[calls]} calls "
            "({task.fields[cached]} cached)  {task.fields[tokens]} tok  "
            "${task.fields[cost]:.4f}"
        ),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}", style="dim", markup=False),
    )


@dataclass
class _LogState:
    """What the plain log lines count that the live display keeps in its task."""

    run_id: str
    total: int | None
    started: float
    done: int = 0


#: the progress line takes new figures at most this often (rich redraws it 10 times a second):
#: at 32 samples in flight a run finishes hundreds of calls a second, and each update takes the
#: display's lock on the event loop. Every call is still counted (``CallTally``) at once.
UPDATE_INTERVAL_S = 0.1


class RunReporter:
    """Steps before the samples, then the live progress line; counts calls for the summary."""

    def __init__(
        self,
        console: Console,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.console = console
        self._now = now  # the wall-clock time a log line starts with
        self._log: _LogState | None = None  # set while plain log lines are written
        self._log_interval_s = progress_interval()  # a bad setting stops the run at its start
        self.tally = CallTally()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._outcomes = {"accepted": 0, "rejected": 0, "failed": 0}
        self._clock = clock
        self._updated_at = -math.inf
        self._advance = 0  # samples finished since the last update of the display
        self._cost: float | None = None

    @contextmanager
    def step(self, what: str) -> Iterator[list[str]]:
        """Show ``what`` with a spinner while it runs, then one line with its time and any
        details the caller appended to the yielded list."""
        started = time.perf_counter()
        details: list[str] = []
        with self.console.status(plain(f"{what} …"), spinner="dots"):
            yield details
        said = f": {'; '.join(details)}" if details else ""
        took = f"{time.perf_counter() - started:.1f}"
        self.console.print(styled("[green]✓[/] {}{} ({} s)", what, said, took))

    def note(self, text: str | Text) -> None:
        """One line: a string prints as written, a :func:`graphs.console.styled` line styled."""
        self.console.print(plain(text) if isinstance(text, str) else text)

    @contextmanager
    def samples(self, run_id: str, total: int | None) -> Iterator[None]:
        """The live progress line for ``total`` samples (None: not known yet, see
        :meth:`set_total`). One line for every executor: one process, ``--workers`` (the
        parent's), Ray (the driver's). When the output is not a terminal (a log file, a pipe),
        plain progress lines instead (:mod:`graphs.progress_log`)."""
        if not self.console.is_terminal:
            with self._log_lines(run_id, total):
                yield
            return
        with Progress(*progress_columns(), console=self.console, transient=False) as progress:
            self._progress = progress
            self._task = progress.add_task(
                run_id, total=total, accepted=0, rejected=0, failed=0, calls=0, cached=0,
                tokens=0, cost=0.0, last="waiting for the first model call",
            )  # fmt: skip
            try:
                yield
            finally:
                self._refresh(force=True)  # the last line shows the final figures
                self._progress, self._task = None, None

    @contextmanager
    def _log_lines(self, run_id: str, total: int | None) -> Iterator[None]:
        """A line when the samples start, one per finished sample, one every
        ``ICM_PROGRESS_INTERVAL_S`` seconds in between, and one at the end."""
        self._log = _LogState(run_id, total, started=self._clock())
        heartbeat = Heartbeat(self._log_interval_s, lambda: self._log_line("still running"))
        self._log_line("started")
        heartbeat.start()
        try:
            yield
        finally:
            heartbeat.stop()
            self._log_line("samples finished")
            self._log = None

    def _log_line(self, event: str) -> None:
        log = self._log
        if log is None:
            return
        t = self.tally
        figures = ProgressFigures(
            done=log.done, total=log.total, calls=t.calls, cached=t.cached, tokens=t.tokens,
            cost_usd=self._cost, elapsed_s=self._clock() - log.started, last_call=t.last,
            **self._outcomes,
        )  # fmt: skip
        write_log_line(self.console, progress_line(log.run_id, figures, event, self._now()))

    def set_total(self, total: int) -> None:
        """The number of samples to do, once known (``--workers``: when every worker said)."""
        if self._log is not None:
            self._log.total = total
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def on_call(self, stage: str, result: Any) -> None:
        self.tally.add(stage, result)
        self._refresh()

    def on_sample(self, status: str, cost_usd: float) -> None:
        if status in self._outcomes:
            self._outcomes[status] += 1
        self._advance += 1
        self._cost = cost_usd
        if self._log is not None:
            self._log.done += 1
            self._log_line(f"sample finished: {status}")
        self._refresh()

    def _refresh(self, *, force: bool = False) -> None:
        """Hand the display the current figures, at most every :data:`UPDATE_INTERVAL_S`
        unless ``force``."""
        if self._progress is None or self._task is None:
            return
        now = self._clock()
        if not force and now - self._updated_at < UPDATE_INTERVAL_S:
            return
        self._updated_at = now
        t = self.tally
        fields: dict[str, Any] = {**self._outcomes, "calls": t.calls, "cached": t.cached,
                                  "tokens": t.tokens, "last": t.last}  # fmt: skip
        if self._cost is not None:
            fields["cost"] = self._cost
        self._progress.update(self._task, advance=self._advance, **fields)
        self._advance = 0


# ---------------------------------------------------------------------------- the end
def cache_line(calls: int, cached: int, tokens: int) -> str:
    """How this invocation's calls were served, e.g. ``14 calls from cache, 0 tokens spent``."""
    if calls and cached == calls:
        return f"{cached} calls from cache, {tokens} tokens spent"
    return f"{calls} model calls ({cached} from cache), {tokens} tokens spent"


def one_line_reason(outcome: SampleOutcome, checked: bool = True) -> str:
    """The first recorded reason, cut to one line (``+N more`` when there are others).
    ``checked``: whether the run checked its samples at all (the paper preset does not)."""
    if not outcome.reasons:
        if outcome.status == "pending":
            return "not run yet (--limit, or interrupted): the same command continues it"
        if outcome.status == "accepted":
            return "passed every check" if checked else "accepted unchecked (checks are off)"
        return "no reason recorded"
    first = " ".join(outcome.reasons[0].split())
    if len(first) > REASON_WIDTH:
        first = first[: REASON_WIDTH - 1] + "…"
    more = len(outcome.reasons) - 1
    return f"{first} (+{more} more)" if more else first


def is_paper_run(store: Store, run_id: str) -> bool:
    """Whether the run was made with ``--preset paper`` (its records are the paper's kind)."""
    row = run_row(store, run_id)
    config = json.loads((row or {}).get("config_json") or "{}")
    return config.get("preset") == "paper"


def _print_paper_records(console: Console, record: ExportRecord) -> None:
    """The first accepted sample's explanation record and first Q-A record, as ``icm export
    --preset paper`` writes them (the explanation is written 5 times under drawn questions)."""
    try:
        policy = load_policy(record.policy)
    except PolicyError as exc:  # the records print in our form instead
        console.print(styled("\n(policy {} cannot be loaded: {})", record.policy, exc))
        return
    made, _meta, _skipped = paper_llava_records(
        [record], terms={record.policy: policy.term}, base_rules={record.policy: record.rule}
    )
    shown = made[:1] + [r for r in made if "_pair" in r["id"]][:1]
    console.print(
        styled(
            "\n[bold]one accepted sample[/] (sample {}, rule {}) as `icm export --preset paper` "
            "writes it: {} single-turn records, the explanation and the first Q-A shown:",
            record.sample_id,
            record.rule,
            len(made),
        )
    )
    console.print(
        plain(json.dumps(shown, indent=2, ensure_ascii=False)), soft_wrap=True
    )  # copyable: never wrapped


def print_final_report(console: Console, summary: Any) -> bool:
    """Per-sample outcomes, one accepted record in full, exports and cache use (see module).
    Returns whether the run is a ``--preset paper`` run (its export is the paper style)."""
    db = Path(summary.db)
    checked = bool(getattr(summary, "checked", True))
    with Store.open(db, read_only=True) as store:
        outcomes = sample_outcomes(store, summary.run_id)
        records = collect_records(store, summary.run_id).records
        paper = is_paper_run(store, summary.run_id)
    console.print(styled("\n[bold]samples[/] ({}):", len(outcomes)))
    for outcome in outcomes:
        name = Path(outcome.image_path).name if outcome.image_path else outcome.sample_id
        mark = _MARKS.get(outcome.status)
        reason = one_line_reason(outcome, checked)
        # the id too: what `icm traces` takes
        if mark:
            console.print(styled(f"  {mark}  {{:<24}} {{}}  {{}}", name, outcome.sample_id, reason))
        else:
            console.print(
                styled("  {}  {:<24} {}  {}", outcome.status, name, outcome.sample_id, reason)
            )
    for repeated in getattr(summary, "repeated_rows", None) or []:
        console.print(styled("  [yellow]repeated manifest rows[/]: {}", repeated))
    for bad in getattr(summary, "bad_rows", None) or []:
        console.print(styled("  [red]bad manifest row[/] (--skip-bad-rows): {}", bad))
    if paper and records:
        _print_paper_records(console, records[0])
    elif records:
        record = records[0]
        console.print(
            styled(
                "\n[bold]one accepted record[/] (sample {}, rule {}; as `icm export --format "
                "llava` writes it):",
                record.sample_id,
                record.rule,
            )
        )
        console.print(
            plain(json.dumps(llava_record(record), indent=2, ensure_ascii=False)), soft_wrap=True
        )  # copyable: never wrapped
    else:
        console.print(plain("\nno accepted record to show"))
    export = default_export_path(summary.run_id, "llava")
    if paper:
        console.print(
            plain(
                f"\nexports: icm export {summary.run_id} --preset paper --db {db}   (= --format "
                f"llava --style paper: the paper's single-turn records; writes {export}; --style "
                "ours for our multi-turn records)"
            )
        )
    else:
        console.print(
            plain(
                f"\nexports: icm export {summary.run_id} --format llava --db {db}   (writes "
                f"{export}; --format sharegpt, parquet or hf for the others)"
            )
        )
    calls = int(getattr(summary, "calls", 0) or 0)
    if calls:
        console.print(
            plain(cache_line(calls, int(getattr(summary, "cached_calls", 0) or 0), summary.tokens))
        )
    elif summary.processed == 0:
        console.print(
            plain(
                f"nothing to do: all {summary.skipped} samples are already done "
                "(--retry-failed redoes rejected and failed ones)"
            )
        )
    return paper
