"""``local:qwen2.5-1.5b`` end to end: the joined, verified GGUF in llama.cpp, one bundled sample
through ``python graphs/generate.py`` (issue 15.3). Slow (a 1.5B model on CPU: minutes);
skipped unless the ``qwen`` extra (llama-cpp-python and the 22 parts) is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_call
from pydantic import BaseModel, Field

from agents.models import Message, ModelConfig, ModelLayer
from agents.models.llamacpp_loading import QWEN_INSTALL, qwen_available
from data.store import Store

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not qwen_available(), reason=f"needs the qwen extra: {QWEN_INSTALL}"),
]


class Finding(BaseModel):
    verdict: str = Field(pattern="^(safe|unsafe)$")
    reason: str = Field(min_length=10, max_length=160)


@pytest.mark.timeout(1200)
def test_one_typed_call_is_schema_valid_with_real_token_counts(tmp_path: Path) -> None:
    config = ModelConfig.from_mapping({"roles": {"all": "local:qwen2.5-1.5b"}})
    store = Store.open(tmp_path / "calls.duckdb")
    with ModelLayer(config, store) as layer:
        result = run_call(
            layer, role="critic", schema=Finding,
            messages=[Message("user", "Content moderation. The image shows a kitten asleep on a "
                              "sofa. Is the image safe to show to children? Give the verdict "
                              "and a one-sentence reason.")],
        )  # fmt: skip
    assert result.status == "ok", (result.error, result.raw_text)
    # real text about the input (the verdict is the model's judgment; the grammar fixes its form)
    assert result.value.verdict in ("safe", "unsafe")
    assert len(result.value.reason.split()) >= 3 and "kitten" in result.value.reason.lower()
    assert result.input_tokens > 20 and 5 < result.output_tokens < 120
    store.close()


@pytest.mark.timeout(3600)  # ~6 model calls; minutes on an idle 2-core machine, more when busy
def test_one_bundled_sample_end_to_end_through_generate(tmp_path: Path) -> None:
    db = tmp_path / "qwen.duckdb"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(REPO / "graphs" / "generate.py"),
         "--config", str(REPO / "graphs" / "configs" / "offline_demo.yaml"),
         "--role", "all=local:qwen2.5-1.5b", "--limit", "1", "--db", str(db)],
        capture_output=True, text=True, env=env, timeout=3500,
    )  # fmt: skip
    (tmp_path / "generate.stderr.txt").write_text(done.stderr)  # kept for a look afterwards
    assert done.returncode == 0, done.stderr[-3000:]
    assert "✓ loading local:qwen2.5-1.5b for describer" in done.stderr
    with Store.open(db, read_only=True) as store:
        samples = store.rows("SELECT status, description, reasons_json FROM samples")
        calls = store.rows("SELECT status, endpoint, output_tokens FROM llm_calls")
    finished = [s for s in samples if s["status"] != "pending"]
    assert len(finished) == 1 and finished[0]["status"] in ("accepted", "rejected")
    # real text: a description of several words, and every call answered by the model
    assert len((finished[0]["description"] or "").split()) >= 8
    assert calls and all(c["output_tokens"] for c in calls)
    assert all("sha256:" in c["endpoint"] and "llama-cpp-python" in c["endpoint"] for c in calls)
    if finished[0]["status"] == "rejected":
        assert json.loads(finished[0]["reasons_json"])
