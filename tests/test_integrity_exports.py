"""Issue 23 (A): every export is written beside its target and renamed into place, so a failure
mid-write (a full disk, here injected) leaves the previous good export as it was and no
temporary file behind. Driven through ``icm export``.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from run_store import build_store
from typer.testing import CliRunner

from graphs.cli import app

DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("template") / "icm.duckdb")


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(template, tmp_path / "icm.duckdb"))


def export(db: Path, run: str, fmt: str, out: Path) -> Any:
    args = ["export", run, "--format", fmt, "--out", str(out), "--db", str(db)]
    return CliRunner().invoke(app, args)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (exports, sidecars, temporary names) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def half_then_full(write: Callable[..., Any]) -> Callable[..., Any]:
    """A writer that writes part of its output, then finds the disk full."""

    def failing(*args: Any, **kwargs: Any) -> Any:
        write(*args, **kwargs)
        raise DISK_FULL

    return failing


FORMATS = {"llava": "x.llava.json", "sharegpt": "x.json", "parquet": "x.parquet", "hf": "x.hf"}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_failed_export_leaves_the_previous_one_intact(fmt, db, tmp_path, monkeypatch) -> None:
    if fmt == "hf":
        pytest.importorskip("datasets")
    folder = tmp_path / "exports"
    out = folder / FORMATS[fmt]
    good = export(db, "offline-demo", fmt, out)
    assert good.exit_code == 0, good.output
    before = snapshot(folder)
    if fmt in ("llava", "sharegpt"):
        # the sidecar is written second: the main file must not be replaced alone either
        original = Path.write_text

        def write_text(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
            if ".meta.jsonl" in self.name:
                original(self, text[: len(text) // 2], *args, **kwargs)
                raise DISK_FULL
            return original(self, text, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        monkeypatch.setattr(pq, "write_table", half_then_full(pq.write_table))
    else:
        from datasets import Dataset

        monkeypatch.setattr(Dataset, "save_to_disk", half_then_full(Dataset.save_to_disk))
    failed = export(db, "gpt4o-trial", fmt, out)
    assert failed.exit_code != 0
    assert f"error: cannot write {out}: No space left on device" in failed.output
    assert snapshot(folder) == before  # same files, same bytes: nothing left over
    monkeypatch.undo()
    again = export(db, "gpt4o-trial", fmt, out)
    assert again.exit_code == 0, again.output
    assert snapshot(folder) != before and not list(folder.glob(".*"))
