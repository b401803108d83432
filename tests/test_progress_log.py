"""Progress in a log (issue 24): when the output is not a terminal, plain whole lines, one per
finished sample and one every ``ICM_PROGRESS_INTERVAL_S`` seconds, never cut to a width.

The heartbeat is tested by synchronising on what it writes (an event), never by sleeping for it;
the real command is run with its output in a file, as under ``nohup ... > log``.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import GatedResponder, ICMResponder
from rich.console import Console
from test_generate import CATEGORIES, REPO, make_manifest, wait_for

from graphs.progress_log import (
    INTERVAL_ENV,
    Heartbeat,
    ProgressFigures,
    duration,
    progress_interval,
    progress_line,
)
from graphs.report import RunReporter

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d progress (\S+): (.+?); (\d+)/(\S+) samples done"
)


def test_a_bad_interval_stops_the_run_before_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    with pytest.raises(ValueError, match=f"{INTERVAL_ENV} must be a number of seconds"):
        RunReporter(Console(file=io.StringIO()))  # built with the run, before any model loads


def test_the_interval_setting() -> None:
    assert progress_interval({}) == 30.0
    assert progress_interval({INTERVAL_ENV: "5"}) == 5.0
    assert progress_interval({INTERVAL_ENV: "600"}) == 60.0  # at least once a minute
    for bad in ("0", "-3", "soon", "nan"):
        with pytest.raises(ValueError, match=f"{INTERVAL_ENV} must be a number of seconds"):
            progress_interval({INTERVAL_ENV: bad})


def test_a_line_says_everything_and_the_eta_follows_the_pace() -> None:
    figures = ProgressFigures(
        done=2, total=14, accepted=1, rejected=1, failed=0, calls=23, cached=3, tokens=12345,
        cost_usd=None, elapsed_s=360.0, last_call="explainer: 300+200 tok in 40.0 s",
    )  # fmt: skip
    line = progress_line("run-1", figures, "sample finished: rejected", datetime(2026, 1, 2, 3, 4))
    assert line == (
        "2026-01-02 03:04:00 progress run-1: sample finished: rejected; 2/14 samples done "
        "(1 accepted, 1 rejected, 0 failed), 23 model calls (3 cached), 12,345 tokens; "
        "elapsed 6m00s, ETA 36m00s; last call explainer: 300+200 tok in 40.0 s"
    )
    none_yet = ProgressFigures(0, 14, 0, 0, 0, 1, 0, 10, 0.25, 75.0, "")
    assert "ETA unknown (no sample finished yet)" in progress_line(
        "r", none_yet, "x", datetime.now()
    )
    assert ", $0.2500;" in progress_line("r", none_yet, "x", datetime.now())
    assert duration(59.6) == "1m00s" and duration(7380) == "2h03m"


def test_the_reporter_writes_whole_lines_to_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-terminal console of width 80: lines longer than that stay whole, one per sample."""
    monkeypatch.setenv(INTERVAL_ENV, "60")  # no heartbeat within this test
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    assert not console.is_terminal
    now = [100.0]
    reporter = RunReporter(console, clock=lambda: now[0], now=lambda: datetime(2026, 5, 6, 7, 8, 9))
    call = SimpleNamespace(input_tokens=1000, output_tokens=250, cache_hit=False, latency_ms=5e4)
    with reporter.samples("a-run-with-a-long-name", 3):
        reporter.on_call("describer", call)
        now[0] += 120
        reporter.on_sample("accepted", 0.0)
        reporter.on_call("explainer", call)
        now[0] += 120
        reporter.on_sample("failed", 0.0)
    lines = out.getvalue().splitlines()
    assert [LINE.match(line).group(2, 3) for line in lines] == [  # type: ignore[union-attr]
        ("started", "0"),
        ("sample finished: accepted", "1"),
        ("sample finished: failed", "2"),
        ("samples finished", "2"),
    ]
    assert all(len(line) > 80 for line in lines)  # never cut nor wrapped at the width
    assert "1 accepted, 0 rejected, 0 failed" in lines[1] and "ETA 4m00s" in lines[1]
    assert "ETA 2m00s" in lines[2] and "2,500 tokens" in lines[2]
    assert "last call explainer: 1000+250 tok in 50.0 s, 5.0 tok/s" in lines[2]
    assert "\x1b" not in out.getvalue()  # no terminal control codes in a log


def test_between_samples_the_heartbeat_writes_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0.01")
    written = threading.Event()

    class Log(io.StringIO):
        def write(self, text: str) -> int:
            if "still running" in text:
                written.set()
            return super().write(text)

    out = Log()
    reporter = RunReporter(Console(file=out, width=80, color_system=None))
    with reporter.samples("run", 2):
        assert written.wait(30), "no heartbeat line while a sample was in flight"
    text = out.getvalue()
    assert re.search(r"progress run: still running; 0/2 samples done .* ETA unknown", text)
    assert text.splitlines()[-1].split("progress run: ")[1].startswith("samples finished")


def test_a_heartbeat_stops_at_once_and_survives_a_failing_beat() -> None:
    calls: list[int] = []
    beat_ran = threading.Event()

    def beat() -> None:
        calls.append(1)
        beat_ran.set()
        raise OSError("the log's disk is full")

    heartbeat = Heartbeat(0.01, beat)
    heartbeat.start()
    assert beat_ran.wait(30)
    heartbeat.stop()  # returns: the failing beat ended the thread, not the caller
    assert calls == [1]


def test_the_command_in_a_log_file_writes_progress_lines(tmp_path: Path) -> None:
    """``python graphs/generate.py ... > log 2>&1``: while every model call is held, heartbeat
    lines; then one line per finished sample with the counts; no line cut at a width."""
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:3])
    db = tmp_path / "icm.duckdb"
    log = tmp_path / "run.log"
    gate = GatedResponder(ICMResponder())
    gate.arm(open_for=0)  # hold every call: no sample can finish until released
    env = {**os.environ, "PYTHONUNBUFFERED": "1", INTERVAL_ENV: "0.2", "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    with FakeOpenAIServer(responder=gate) as server, log.open("w") as handle:
        command = [
            sys.executable, str(REPO / "graphs" / "generate.py"), str(manifest), "--db", str(db),
            "--rules", "R1,R2", "--role", f"all=openai-compatible:{server.base_url}#fake-model",
            "--role-setting", "all.jitter=false", "--role-setting", "all.backoff_base_s=0",
            "--no-perception", "--concurrency", "1", "--run", "logged",
        ]  # fmt: skip
        child = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            assert gate.holding.wait(300), "the run never asked a model"
            wait_for(lambda: "still running" in log.read_text(), "a heartbeat line in the log")
        finally:
            gate.release()
            assert child.wait(timeout=600) == 0, log.read_text()
    lines = log.read_text().splitlines()
    progress = [m for m in map(LINE.match, lines) if m]
    assert all(m.group(1) == "logged" for m in progress)
    assert progress[0].group(2, 3, 4) == ("started", "0", "3")
    held = [m for m in progress if m.group(2) == "still running"]
    assert held and held[0].group(3) == "0"
    finished = [m for m in progress if m.group(2).startswith("sample finished")]
    assert [m.group(3) for m in finished] == ["1", "2", "3"]
    last = next(line for line in lines if "progress logged: samples finished" in line)
    assert "3/3 samples done (3 accepted, 0 rejected, 0 failed)" in last and "ETA 0s" in last
    assert len(last) > 80  # whole, though COLUMNS says 80
    assert not any("\x1b" in line for line in lines)
