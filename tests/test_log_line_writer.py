"""Issue 28: a progress log line is written straight to the console's file, byte for byte what
``console.print`` writes there, and through ``console.print`` wherever rich would change it or
the console is not writing plainly (``graphs.progress_log.write_log_line``)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from graphs.progress_log import write_log_line

LINES = [
    "2026-05-06 07:08:09 progress run-1: sample finished: accepted; 1/3 samples done "
    "(1 accepted, 0 rejected, 0 failed), 6 model calls (0 cached), 2,500 tokens; " + "x" * 200,
    "[bold]not markup[/bold] :smile: https://example.com 12.5 'quoted' ünïcödé",
    "a tab\there",  # rich expands it: printed by rich
    "a bell\x07 and a carriage return\r",  # rich strips them: printed by rich
    "",
]


def _printed(line: str, **options: object) -> str:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, **options)  # type: ignore[arg-type]
    console.print(line, markup=False, highlight=False, soft_wrap=True, emoji=False)
    return out.getvalue()


def _written(line: str, **options: object) -> str:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, **options)  # type: ignore[arg-type]
    write_log_line(console, line)
    return out.getvalue()


@pytest.mark.parametrize("line", LINES)
def test_a_line_is_written_as_console_print_writes_it(line: str) -> None:
    assert _written(line) == _printed(line)


def test_a_plain_line_skips_rich_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_render(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendered through console.print")

    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    monkeypatch.setattr(console, "print", no_render)
    write_log_line(console, LINES[0])
    assert out.getvalue() == LINES[0] + "\n"


def test_a_capturing_or_recording_or_quiet_console_gets_the_line_through_rich() -> None:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    with console.capture() as capture:
        write_log_line(console, LINES[0])
    assert capture.get() == LINES[0] + "\n"
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]

    recording = Console(file=io.StringIO(), width=80, color_system=None, record=True)
    write_log_line(recording, LINES[0])
    assert recording.export_text() == LINES[0] + "\n"

    assert _written(LINES[0], quiet=True) == ""
