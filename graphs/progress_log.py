"""Progress a log file can hold: plain lines, one per finished sample and one every N seconds.

A long run is started under ``nohup ... > log``. There the live progress bar of a terminal
shows nothing until the end (rich draws a live display only on a terminal), and its last frame
is cut to the width of a terminal that is not there. So when the output is not a terminal,
:class:`graphs.report.RunReporter` writes these lines instead: whole, never wrapped or cut,
each with the wall-clock time, so ``tail -f log`` or ``grep progress log`` reads the run.

A line is written when a sample finishes (its status) and, between samples, every
``ICM_PROGRESS_INTERVAL_S`` seconds (default 30, at most 60): a local model can spend several
minutes on one sample, and a log that is silent that long looks like a hung run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console

INTERVAL_ENV = "ICM_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0
MAX_INTERVAL_S = 60.0
"""The log says something at least once a minute, whatever the setting."""


def progress_interval(environ: dict[str, str] | None = None) -> float:
    """Seconds between two heartbeat lines: ``ICM_PROGRESS_INTERVAL_S``, default 30, capped at
    60. A value that is not a positive number is an error naming the variable."""
    raw = (os.environ if environ is None else environ).get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds above 0, got {raw!r}")
    return min(seconds, MAX_INTERVAL_S)


@dataclass(frozen=True)
class ProgressFigures:
    """What one progress line says (the same figures the terminal's progress bar shows)."""

    done: int
    total: int | None
    accepted: int
    rejected: int
    failed: int
    calls: int
    cached: int
    tokens: int
    cost_usd: float | None
    elapsed_s: float
    last_call: str


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``2h03m``: short and unambiguous in a log."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def eta(figures: ProgressFigures) -> str:
    """Time left at the pace of the samples finished so far (unknown before the first)."""
    if figures.total is None:
        return "unknown (total not known yet)"
    left = figures.total - figures.done
    if left <= 0:
        return "0s"
    if figures.done == 0:
        return "unknown (no sample finished yet)"
    return duration(figures.elapsed_s / figures.done * left)


def progress_line(run_id: str, figures: ProgressFigures, event: str, now: datetime) -> str:
    """One whole line: time, run, event, samples, outcomes, calls, tokens, elapsed, ETA, last
    call. ``event`` says why the line was written (a sample's status, or ``still running``)."""
    total = "?" if figures.total is None else str(figures.total)
    cost = f", ${figures.cost_usd:.4f}" if figures.cost_usd else ""
    last = f"; last call {figures.last_call}" if figures.last_call else ""
    return (
        f"{now:%Y-%m-%d %H:%M:%S} progress {run_id}: {event}; "
        f"{figures.done}/{total} samples done ({figures.accepted} accepted, "
        f"{figures.rejected} rejected, {figures.failed} failed), "
        f"{figures.calls} model calls ({figures.cached} cached), {figures.tokens:,} tokens{cost}; "
        f"elapsed {duration(figures.elapsed_s)}, ETA {eta(figures)}{last}"
    )


def write_log_line(console: Console, line: str) -> None:
    """``line`` and a newline on ``console``'s file, as ``console.print`` writes it there
    (no markup, highlighting, emoji or wrapping), without rich's rendering.

    A run writes one line per finished sample; rich's ``print`` (segments, options, a buffer per
    call) was about 3 % of a generation run's CPU at 32 samples in flight. A line rich would
    change (a tab, a control character or any other character that is not printable) and a
    console that records, captures or is quiet still go through ``console.print``.
    """
    if (
        console.record
        or console.quiet
        or console.is_jupyter
        or console.legacy_windows
        or console._buffer_index  # inside console.capture() or a live display's buffer
        or not line.isprintable()
    ):
        console.print(line, markup=False, highlight=False, soft_wrap=True, emoji=False)
        return
    with console._lock:  # the lock rich writes under (a heartbeat line comes from a thread)
        try:
            file = console.file
            file.write(line + "\n")
            file.flush()
        except BrokenPipeError:
            console.on_broken_pipe()  # what rich does: the reader went away


class Heartbeat:
    """Calls ``beat`` every ``interval_s`` seconds on a daemon thread until :meth:`stop`.

    It waits on an event, not in a sleep, so stopping is immediate; a beat that raises ends
    the thread rather than the run (a progress line is never worth a failed run).
    """

    def __init__(self, interval_s: float, beat: Callable[[], None]) -> None:
        self.interval_s = interval_s
        self._beat = beat
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="icm-progress-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self._beat()
            except Exception:
                return
