"""What `generate` prints (issue 15.4): steps and per-call progress while it runs; per-sample
status and reason, one accepted record in full, where exports go, and cache use at the end."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from rich.console import Console
from rich.progress import Progress
from test_generate import FAST, make_manifest

from data.store import Store
from data.store.outcomes import SampleOutcome
from graphs.config import load_config
from graphs.report import (
    UPDATE_INTERVAL_S,
    RunReporter,
    cache_line,
    one_line_reason,
    print_final_report,
)
from graphs.runner import GenerationRun, RunSummary


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    # upper_bust: always the wrong verdict, so it ends rejected with the critic's reason.
    with FakeOpenAIServer(responder=ICMResponder(faults={"upper_bust": {"explainer": 99}})) as fake:
        yield fake


def generate(manifest: Path, db: Path, server: FakeOpenAIServer, **extra: object):
    """One run with its console captured; returns (summary, everything it printed)."""
    options = {
        "manifest": manifest, "db": db, "rules": ["R1", "R2"], "max_stage_retries": 0,
        "roles": {"all": f"openai-compatible:{server.base_url}#fake-model"},
        "role_settings": FAST, "perception": False, **extra,
    }  # fmt: skip
    out = io.StringIO()
    console = Console(file=out, width=250, color_system=None)
    summary = asyncio.run(GenerationRun(load_config(None, options), console).run())
    print_final_report(console, summary)
    return summary, out.getvalue()


def test_the_end_of_run_report(tmp_path: Path, server) -> None:
    manifest = make_manifest(tmp_path / "in", ["upper_normal", "upper_bust", "tongue"])
    db = tmp_path / "icm.duckdb"
    summary, text = generate(manifest, db, server)
    assert summary.counts["accepted"] == 2 and summary.counts["rejected"] == 1
    # steps before the samples, each with its time
    assert f"✓ checking {manifest.resolve()}: 3 rows, 3 usable" in text
    assert "✓ starting the clients of 5 roles" in text
    # every call was counted as it finished: the same number the trace table holds
    with Store.open(db, read_only=True) as store:
        traced = store.scalar("SELECT count(*) FROM llm_calls WHERE run_id = ?", [summary.run_id])
        reason = json.loads(
            store.scalar("SELECT reasons_json FROM samples WHERE status='rejected'")
        )
    assert summary.calls == traced > 0 and summary.cached_calls == 0
    # one line per sample: status, image, the first reason
    lines = {line.split()[2]: line for line in text.splitlines() if line.startswith("  ✓ accepted")
             or line.startswith("  ✗ rejected")}  # fmt: skip
    assert set(lines) == {"0.png", "1.png", "2.png"}
    assert "✓ accepted" in lines["0.png"] and "passed every check" in lines["0.png"]
    assert "✗ rejected" in lines["1.png"] and " ".join(reason[0].split())[:60] in lines["1.png"]
    # one accepted record, in full, as the LLaVA export writes it
    start = text.index("one accepted record")
    body = text[text.index("{", start) : text.index("\nexports:")]
    record = json.loads(body)
    assert set(record) == {"id", "image", "conversations"}
    assert record["conversations"][0]["value"].startswith("<image>\n")
    assert f"exports: icm export {summary.run_id} --format llava --db {db}" in text
    assert f"{summary.calls} model calls (0 from cache), {summary.tokens} tokens spent" in text


def test_a_run_served_from_the_cache_says_so(tmp_path: Path, server) -> None:
    manifest = make_manifest(tmp_path / "in", ["upper_normal"])
    db = tmp_path / "icm.duckdb"
    first, _ = generate(manifest, db, server)
    sent = len(server.chat_requests())
    # the same configuration under another run name: every call is answered by the cache
    again, text = generate(manifest, db, server, run="second")
    assert len(server.chat_requests()) == sent
    assert again.calls == first.calls and again.cached_calls == first.calls
    assert f"{first.calls} calls from cache, 0 tokens spent" in text
    # the same command once more: nothing to do, and it says why
    _, text = generate(manifest, db, server, run="second")
    assert "nothing to do: all 1 samples are already done" in text


def test_one_line_reasons() -> None:
    def outcome(status: str, *reasons: str) -> SampleOutcome:
        return SampleOutcome("s1", "/x/0.png", None, status, reasons)

    assert one_line_reason(outcome("accepted")) == "passed every check"
    # a run without checks (the paper preset) does not claim its samples passed any
    assert one_line_reason(outcome("accepted"), checked=False) == (
        "accepted unchecked (checks are off)"
    )
    assert "the same command continues it" in one_line_reason(outcome("pending"))
    assert one_line_reason(outcome("failed", "a\nb", "c", "d")) == "a b (+2 more)"
    long = one_line_reason(outcome("rejected", "x" * 500))
    assert len(long) == 110 and long.endswith("…")
    assert cache_line(3, 1, 40) == "3 model calls (1 from cache), 40 tokens spent"
    assert RunSummary("r", Path("db")).bad_rows == []


def test_the_progress_line_is_updated_at_most_every_interval_and_ends_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hundreds of calls a second must not each take the display's lock; every call is still
    counted, and the line left on screen shows the final figures."""
    updates: list[dict] = []
    real_update = Progress.update

    def spy(self: Progress, task: object, **fields: object) -> None:
        updates.append(fields)
        real_update(self, task, **fields)  # type: ignore[arg-type]

    monkeypatch.setattr(Progress, "update", spy)
    now = [0.0]
    out = io.StringIO()
    # a terminal: the live display (a log file gets plain lines, tests/test_progress_log.py)
    console = Console(file=out, width=250, color_system=None, force_terminal=True)
    reporter = RunReporter(console, clock=lambda: now[0])
    result = SimpleNamespace(input_tokens=10, output_tokens=2, cache_hit=False, latency_ms=50.0)
    with reporter.samples("run", 3):
        for _ in range(40):  # all within one interval: only the first call reaches the display
            reporter.on_call("explainer", result)
        reporter.on_sample("accepted", 0.5)
        assert len(updates) == 1 and updates[0]["calls"] == 1
        now[0] += UPDATE_INTERVAL_S
        reporter.on_call("critic", result)
        assert len(updates) == 2 and updates[1]["calls"] == 41 and updates[1]["advance"] == 1
        reporter.on_sample("rejected", 0.75)
        reporter.on_sample("accepted", 1.0)
    assert reporter.tally.calls == 41
    final = updates[-1]
    assert final["advance"] == 2 and final["accepted"] == 2 and final["rejected"] == 1
    assert final["cost"] == 1.0 and final["tokens"] == 41 * 12
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", out.getvalue())  # a terminal's redraws
    last_line = [line for line in frames.splitlines() if "calls" in line][-1]
    assert "3/3" in last_line and "41 calls" in last_line
    assert "critic: 10+2 tok in 0.1 s, 40.0 tok/s" in last_line  # the last call, in words
