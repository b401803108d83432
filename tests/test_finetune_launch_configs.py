"""The shipped scale-out configs (finetune/configs) parse as what their launchers expect.

They are not run here (no GPUs, no DeepSpeed in this environment); these checks catch a config
that accelerate would reject, or a DeepSpeed file that would replace our optimizer groups and
schedule with its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "finetune" / "configs"


def test_accelerate_configs_load() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    ddp = load_config_from_file(str(CONFIGS / "accelerate_ddp.yaml"))
    assert ddp.distributed_type == "MULTI_GPU" and ddp.mixed_precision == "no"
    fsdp = load_config_from_file(str(CONFIGS / "accelerate_fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP"
    assert fsdp.fsdp_config["fsdp_version"] == 2
    # Full state dicts: checkpoints and adapter/ are ordinary weights that resume and moderate read.
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_leave_optimizer_and_sizes_to_the_trainer(stage: int) -> None:
    config = json.loads((CONFIGS / f"deepspeed_zero{stage}.json").read_text())
    assert config["zero_optimization"]["stage"] == stage
    assert "optimizer" not in config and "scheduler" not in config
    for key in (
        "gradient_accumulation_steps",
        "train_micro_batch_size_per_gpu",
        "gradient_clipping",
    ):
        assert config[key] == "auto", key  # filled from the fine-tune config by transformers
    if stage == 3:  # adapter/ must hold gathered weights, not ZeRO shards
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
