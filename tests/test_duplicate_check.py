"""The optional near-duplicate check of a generation run (``reject_near_duplicates``): off by
default; on, a sample whose description or explanation nearly copies an accepted one ends
rejected, naming the sample it repeats; a resumed run compares with what it already accepted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from PIL import Image

from data.store import Store
from graphs.config import load_config
from graphs.duplicate_check import DuplicateScreen
from graphs.runner import GenerationRun

FAST = {"all": {"jitter": "false", "backoff_base_s": "0", "max_retries": "6"}}


def manifest(folder: Path, categories: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, category in enumerate(categories):
        Image.new("RGB", (40 + n, 30), (n * 40 % 256, 80, 150)).save(folder / f"{n}.png")
        rows.append({"image": f"{n}.png", "policy": "icm_sexy", "category": category})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def generate(path: Path, db: Path, **overrides: object) -> dict[str, int]:
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        options = {"manifest": path, "db": db, "rules": ["R1"], "role_settings": FAST,
                   "roles": {"all": f"openai-compatible:{server.base_url}#fake-model"},
                   "perception": False, "concurrency": 1, **overrides}  # fmt: skip
        return asyncio.run(GenerationRun(load_config(None, options)).run()).counts


def outcomes(db: Path) -> list[dict]:
    with Store.open(db, read_only=True) as store:
        return store.rows("SELECT sample_id, category, status, reasons_json FROM samples "
                          "ORDER BY image_path")  # fmt: skip


def test_off_by_default_the_fakes_repeated_texts_are_all_accepted(tmp_path: Path) -> None:
    # the fake writes the same description for two images of one category
    path = manifest(tmp_path / "in", ["upper_normal", "upper_normal", "tongue"])
    assert generate(path, tmp_path / "a.duckdb")["accepted"] == 3


def test_on_a_sample_that_copies_an_accepted_one_is_rejected_naming_it(tmp_path: Path) -> None:
    path = manifest(tmp_path / "in", ["upper_normal", "upper_normal", "tongue"])
    db = tmp_path / "b.duckdb"
    counts = generate(path, db, reject_near_duplicates=True)
    assert counts["accepted"] == 2 and counts["rejected"] == 1
    rows = outcomes(db)
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert len(rejected) == 1 and rejected[0]["category"] == "upper_normal"
    other = next(r["sample_id"] for r in rows
                 if r["category"] == "upper_normal" and r["status"] == "accepted")  # fmt: skip
    reasons = json.loads(rejected[0]["reasons_json"])
    assert f"near_duplicate: description repeats sample {other} (Jaccard 1.00)" in reasons
    # a resumed run seeds the index from the store: a new image of the category is rejected too
    path = manifest(tmp_path / "in", ["upper_normal", "upper_normal", "tongue", "upper_normal"])
    counts = generate(path, db, reject_near_duplicates=True)
    assert counts == {"accepted": 2, "rejected": 2, "failed": 0, "pending": 0}


def test_the_screen_passes_distinct_texts_and_indexes_them() -> None:
    screen = DuplicateScreen(0.8)
    first = {"status": "accepted", "description": "A red car parked by a lake at dusk.",
             "explanations": {"R1": {"explanation": "The car is ordinary; not sexy."}}}  # fmt: skip
    assert screen.screen("s1", first) is first
    second = {"status": "accepted", "description": "A cat asleep on a blue sofa at noon."}
    assert screen.screen("s2", second)["status"] == "accepted"
    copy = {"status": "accepted", "description": "A cat asleep on a blue sofa at noon.",
            "explanations": {"R1": {"explanation": "The car is ordinary; not sexy."}}}  # fmt: skip
    out = screen.screen("s3", copy)
    assert out["status"] == "rejected"
    assert out["reasons"] == [
        "near_duplicate: description repeats sample s2 (Jaccard 1.00)",
        "near_duplicate: explanation[R1] repeats sample s1 (Jaccard 1.00)",
    ]
