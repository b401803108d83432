"""Manifest rows are checked before any model loads (issue 15.5): a missing or unreadable image
stops the run naming the manifest file and line, unless --skip-bad-rows records it as failed."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from data.manifest import ManifestError
from data.store import Store
from graphs.config import load_config
from graphs.runner import GenerationRun

REPO = Path(__file__).resolve().parents[1]
#: a binding that fails the moment a model would load: reaching it means the check came too late
UNLOADABLE = {"all": "hf:/no/such/model"}


def manifest_with(folder: Path, *, missing: bool = False, not_image: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(3):
        Image.new("RGB", (40 + n, 30), (n * 60, 90, 160)).save(folder / f"{n}.png")
        rows.append({"image": f"{n}.png", "policy": "icm_sexy", "category": "upper_normal"})
    if missing:
        (folder / "1.png").unlink()
    if not_image:
        (folder / "2.png").write_text("<html>404 not found</html>")
    rows.append({"image": "gone.png", "policy": "icm_sexy", "description": "a text-only row"})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run(manifest: Path, db: Path, **overrides: object):
    options = {"manifest": manifest, "db": db, "roles": UNLOADABLE, "perception": False}
    console = Console(file=io.StringIO(), width=200)
    return asyncio.run(GenerationRun(load_config(None, {**options, **overrides}), console).run())


def test_bad_images_stop_the_run_before_models_load_naming_each_line(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path / "in", missing=True, not_image=True)
    with pytest.raises(ManifestError) as info:
        run(manifest, tmp_path / "icm.duckdb")
    message = str(info.value)
    assert f"{manifest}:2: image '1.png': image not found" in message
    assert f"{manifest}:3: image '2.png': " in message and "not an image" in message
    assert "2 of 4 manifest rows cannot be used" in message and "--skip-bad-rows" in message
    assert "gone.png" not in message  # a text-only row needs no image
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM samples") == 0
        assert store.scalar("SELECT count(*) FROM llm_calls") == 0


def test_the_cli_exits_non_zero_with_the_line_and_loads_no_model(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path / "in", missing=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"}  # no wrapping
    done = subprocess.run(
        [sys.executable, str(REPO / "graphs" / "generate.py"), str(manifest),
         "--role", "all=hf:/no/such/model", "--db", str(tmp_path / "icm.duckdb"),
         "--no-perception"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{manifest}:2: image '1.png': image not found" in done.stderr
    assert "cannot start a model" not in done.stderr


def test_skip_bad_rows_records_them_failed_and_the_summary_says_so(tmp_path: Path) -> None:
    """The bad rows fail with their reason; the run goes on to the models (which here cannot
    load, proving the check ran first and the skip let the run continue)."""
    manifest = manifest_with(tmp_path / "in", missing=True)
    db = tmp_path / "icm.duckdb"
    with pytest.raises(ValueError, match="cannot start a model"):
        run(manifest, db, skip_bad_rows=True)
    with Store.open(db, read_only=True) as store:
        rows = store.rows("SELECT image_path, status, reasons_json FROM samples")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and len(failed) == 1
    assert (
        f"bad manifest row: {manifest}:2: image '1.png': image not found"
        in (failed[0]["reasons_json"])
    )
