"""Real multi-process training: ``torchrun --nproc_per_node 2`` (gloo, CPU) against one process.

Two processes with accumulation 1 must train like one process with accumulation 2 on the same
global batches, and a two-process run resumed from its step-3 checkpoint must end where the
uninterrupted one does.

Why the tolerances are tight: every process runs one thread (deterministic CPU kernels), LoRA
dropout is 0, the frozen vision tower is in eval mode, and the sampler gives rank r the batches
r, r + 2, ... of the one permutation the single process walks, so both runs compute the same
micro-batches with the same weights. The loss is divided by the labelled tokens of the whole
window summed over processes and multiplied by the process count, which DDP's gradient average
undoes; the only remaining difference is the order of floating-point additions (the gloo
all-reduce adds rank 0's and rank 1's gradient buckets where one process accumulates micro-batch
gradients into ``.grad``, and the scaling by 2 and 1/2 is exact in binary floating point).
Losses therefore agree to float32 rounding (relative 1e-5 leaves room for a few ulps of
reassociation carried through six AdamW steps) and the adapter weights to 1e-6 absolute. A
wrong sampler, a missing loss rescale or an un-synchronised gradient moves them by 1e-2 or more.

icm-tiny itself takes 30-40 s per process just to assemble on the shared 2-core machine, too
slow for the suite; the same test runs on it with ``ICM_SLOW_TESTS=1`` (see NOTES_h17train.md
for a recorded run). The default is a config-built LLaVA (same classes, random weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from data.store import Store
from finetune import synthetic
from finetune.config import FinetuneConfig
from finetune.train import train

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6  # 8 training examples, batch 1: 4 steps an epoch, so the run crosses an epoch
SLOW = os.environ.get("ICM_SLOW_TESTS") == "1"
LAUNCH_TIMEOUT = 1200 if SLOW else 280  # icm-tiny: ~40 s to assemble per process, shared cores
pytestmark = pytest.mark.timeout(3 * LAUNCH_TIMEOUT)


def _model(folder: Path) -> str:
    if SLOW:
        pytest.importorskip("efficientnet_lite_pytorch")
        return "icm-tiny"
    return str(synthetic.build_saved("llava", folder / "model"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("dist")
    records = []
    for i in range(10):
        image = folder / f"{i}.png"
        Image.new("RGB", (40 + 7 * i, 30 + 5 * i), (25 * i, 90, 200 - 15 * i)).save(image)
        answer = " ".join(["The image is not sexy."] * (1 + i % 3)) if i % 2 else "Yes, it is."
        records.append(
            {
                "id": f"r{i}",
                "image": image.name,
                "split": "val" if i >= 8 else "train",
                "conversations": [
                    {"from": "human", "value": "<image>\nIs the image sexy? Explain why."},
                    {"from": "gpt", "value": answer},
                    {"from": "human", "value": "Is it sexy?"},
                    {"from": "gpt", "value": "No." if i % 2 else "Yes."},
                ],
            }
        )
    data = folder / "data.llava.json"
    data.write_text(json.dumps(records))
    return {"folder": folder, "model": _model(folder), "data": str(data)}


def settings(setup: dict, name: str, *extra: str) -> list[str]:
    out = setup["folder"] / name
    return [
        f"model.name_or_path={setup['model']}",
        f"data.files=[{setup['data']}]",
        f"data.db={out}/icm.duckdb",
        "data.max_length=320",
        "lora.r=4",
        "lora.alpha=8",
        "lora.dropout=0",
        "lora.target_modules=[q_proj,v_proj]",
        f"train.output_dir={out}",
        "train.batch_size=1",
        "train.learning_rate=5e-3",
        "train.warmup_ratio=0",
        f"train.max_steps={STEPS}",
        "train.eval_steps=2",
        "train.save_steps=3",
        "train.save_total_limit=5",
        *extra,
    ]


def torchrun(overrides: list[str], nproc: int = 2) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "finetune.train"]  # fmt: skip
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-6000:]


def curve(out: Path) -> list[tuple[int, str, float]]:
    with Store.open(out / "icm.duckdb", read_only=True) as store:
        rows = store.rows("SELECT step, split, loss FROM finetune_metrics ORDER BY split, step")
    return [(r["step"], r["split"], r["loss"]) for r in rows]


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_training(a: Path, b: Path, *, rel: float, atol: float) -> None:
    ca, cb = curve(a), curve(b)
    assert [(s, p) for s, p, _ in ca] == [(s, p) for s, p, _ in cb]
    assert [s for s, p, _ in ca if p == "train"] == list(range(1, STEPS + 1))
    assert [s for s, p, _ in ca if p == "val"] == [2, 4, 6]
    for (step, split, la), (_, _, lb) in zip(ca, cb, strict=True):
        assert lb == pytest.approx(la, rel=rel), (step, split)
    wa, wb = adapter(a / "adapter"), adapter(b / "adapter")
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        assert torch.allclose(wa[key], wb[key], rtol=0, atol=atol), key


@pytest.fixture(scope="module")
def two_ranks(setup: dict) -> Path:
    torchrun(settings(setup, "two", "train.grad_accum=1"))
    return setup["folder"] / "two"


def test_two_processes_train_like_one_with_twice_the_accumulation(
    setup: dict, two_ranks: Path
) -> None:
    torch.set_num_threads(1)
    result = train(FinetuneConfig.load(None, settings(setup, "one", "train.grad_accum=2")))
    assert result.steps == STEPS
    assert_same_training(setup["folder"] / "one", two_ranks, rel=1e-5, atol=1e-6)
    # Sanity of the comparison itself: the curve moved (training happened, not a constant).
    losses = [loss for _, split, loss in curve(two_ranks) if split == "train"]
    assert max(losses) - min(losses) > 1e-3
    info = json.loads((two_ranks / "icm_finetune.json").read_text())
    assert info["metrics"]["steps"] == STEPS and info["metrics"]["tokens"] > 0
    # Only rank 0 wrote the record: one finished run.
    with Store.open(two_ranks / "icm.duckdb", read_only=True) as store:
        assert [r["status"] for r in store.rows("SELECT status FROM finetune_runs")] == ["finished"]


def test_two_process_resume_equals_the_uninterrupted_run(setup: dict, two_ranks: Path) -> None:
    checkpoint = two_ranks / "checkpoint-3"  # mid-epoch: resume skips 3 of 4 batches per rank
    assert (checkpoint / "trainer_state.json").is_file()
    torchrun(settings(setup, "resumed", "train.grad_accum=1", f"train.resume_from={checkpoint}"))
    resumed = setup["folder"] / "resumed"
    assert_same_training(two_ranks, resumed, rel=1e-6, atol=1e-7)
    run_id = json.loads((resumed / "icm_finetune.json").read_text())["finetune_id"]
    assert run_id == json.loads((two_ranks / "icm_finetune.json").read_text())["finetune_id"]
