"""``python -m finetune.train``: the fine-tune entry point that launchers run.

The training itself is ``transformers.Trainer`` (:mod:`finetune.hf_trainer`, driven by
:mod:`finetune.run`); this module is the command line and the names the rest of the tool
imports. One process or many, the same command (``cfg.yaml``: a fine-tune config;
``C=finetune/configs``)::

    python -m finetune.train --config cfg.yaml
    torchrun --nproc_per_node 8 -m finetune.train --config cfg.yaml
    accelerate launch --config_file $C/accelerate_ddp.yaml -m finetune.train --config cfg.yaml
    accelerate launch --config_file $C/accelerate_fsdp.yaml -m finetune.train --config cfg.yaml
    accelerate launch --use_deepspeed --deepspeed_config_file $C/deepspeed_zero3.json \\
        --num_processes 8 -m finetune.train --config cfg.yaml
    torchrun --nproc_per_node 8 -m finetune.train --config cfg.yaml \\
        --set train.deepspeed=$C/deepspeed_zero2.json

``train.batch_size`` is per process: the global batch is ``batch_size x grad_accum x processes``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from finetune.config import ConfigError, FinetuneConfig
from finetune.data import DataFileError
from finetune.families import FamilyError
from finetune.model_setup import TrainError, hf_model, prepare_model
from finetune.run import FinetuneRun, TrainResult, latest_checkpoint, train

Trainer = FinetuneRun
"""The name the CLI, tests and benchmarks use for one fine-tune run."""

__all__ = [
    "FinetuneRun",
    "TrainError",
    "TrainResult",
    "Trainer",
    "hf_model",
    "latest_checkpoint",
    "main",
    "prepare_model",
    "train",
]


def main(argv: list[str] | None = None) -> None:
    """``python -m finetune.train --config cfg.yaml [--set k=v ...]`` (what launchers run)."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Fine-tune a multimodal model on ICM data (transformers.Trainer; launch with "
        "accelerate launch or torchrun to use several processes).",
    )
    parser.add_argument("--config", type=Path, help="YAML with sections model, lora, data, train")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. train.max_steps=20 (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        result = train(FinetuneConfig.load(args.config, args.overrides))
    except (ConfigError, DataFileError, FamilyError, TrainError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"finetune_id": result.finetune_id, **result.metrics()}, indent=2))


if __name__ == "__main__":
    main()
