"""One fine-tune, end to end: data, model, ``transformers.Trainer``, final outputs, the record.

:class:`FinetuneRun` turns a :class:`~finetune.config.FinetuneConfig` into ``TrainingArguments``
(:func:`training_arguments`), trains with :class:`~finetune.hf_trainer.ICMTrainer`, and writes
what the rest of the tool reads (``train.output_dir``):

- ``checkpoint-N/``: Trainer's checkpoint (adapter or full model, optimizer, scheduler, RNG and
  trainer state) plus the processor, ``finetune_config.json`` and ``icm_run.json``;
  ``train.resume_from`` continues from one exactly (``latest``: the newest complete one);
- ``adapter/`` at the end (peft format, projector included), ``merged/`` when ``train.merge``;
- ``finetune_config.json`` and ``icm_finetune.json`` (what was trained, on what, with what result);
- the store (``data.db``, :mod:`finetune.records`): a ``finetune_runs`` row and the loss curve.

One process or many, the same code: the launcher decides (``accelerate launch`` with a config
from ``finetune/configs/``, or ``torchrun``); the batch size is per process.

bf16 keeps the frozen weights in bf16, the trained ones in fp32, and runs the forward under
autocast (accelerate's mixed precision) on GPUs; fp32 is for CPUs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data.provenance import package_versions
from finetune.callbacks import CurveCallback
from finetune.collate import ChatEncoder, Collator, Example
from finetune.config import FinetuneConfig
from finetune.data import build_datasets
from finetune.families import save_processor
from finetune.hf_trainer import RUN_FILE, ExampleDataset, ICMTrainer
from finetune.loading import ADAPTER_DIR, DTYPES, FULL_DIR, INFO_FILE, MERGED_DIR, Loaded, load_base
from finetune.model_setup import TrainError, hf_model, peak_memory, prepare_model
from finetune.records import RunRecord

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
"""Written last into a checkpoint by Trainer: its presence marks the checkpoint complete."""
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@dataclass
class TrainResult:
    finetune_id: str
    output_dir: Path
    steps: int
    train_loss: float | None
    val_loss: float | None
    tokens: int
    train_seconds: float
    tokens_per_second: float
    peak_memory_bytes: int
    history: list[dict[str, Any]] = field(default_factory=list)
    adapter_dir: Path | None = None
    merged_dir: Path | None = None
    data_summary: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "tokens": self.tokens,
            "train_seconds": round(self.train_seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 2),
            "peak_memory_bytes": self.peak_memory_bytes,
        }


def total_steps(config: FinetuneConfig, n_train: int, world: int) -> int:
    """Optimizer steps: ``max_steps``, or ``epochs`` times the steps of one epoch (a batch per
    process per micro-step; the last window of an epoch may be short)."""
    t = config.train
    if t.max_steps > 0:
        return t.max_steps
    batches = math.ceil(math.ceil(n_train / t.batch_size) / world)
    return max(1, math.ceil(t.epochs * math.ceil(batches / t.grad_accum)))


def training_arguments(config: FinetuneConfig, total: int, *, has_val: bool) -> Any:
    """Our settings as ``TrainingArguments`` (everything Trainer does, it does from these)."""
    from transformers import TrainingArguments

    t, m = config.train, config.model
    cuda = torch.cuda.is_available()
    cpu_only = not torch.accelerator.is_available()
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1  # CPU processes talk over gloo
    dtype = DTYPES[m.dtype]
    evaluate = has_val and t.eval_steps > 0
    return TrainingArguments(
        output_dir=t.output_dir,
        max_steps=total,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=SCHEDULERS[t.scheduler],
        warmup_steps=math.ceil(t.warmup_ratio * total),
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # a non-finite loss stops the run (CurveCallback)
        eval_strategy="steps" if evaluate else "no",
        eval_steps=t.eval_steps if evaluate else None,
        save_strategy="steps",
        save_steps=t.save_steps if t.save_steps > 0 else total,  # and always at the end
        save_total_limit=max(1, t.save_total_limit),
        seed=t.seed,
        report_to=list(t.report_to) or "none",
        remove_unused_columns=False,  # the collator's keys are the model's inputs
        dataloader_num_workers=t.num_workers,
        dataloader_pin_memory=cuda,
        include_num_input_tokens_seen="non_padding",
        average_tokens_across_devices=True,
        ddp_find_unused_parameters=False,
        bf16=cuda and dtype == torch.bfloat16,
        fp16=cuda and dtype == torch.float16,
        deepspeed=t.deepspeed,
        disable_tqdm=True,
        use_cpu=cpu_only,
        ddp_backend="gloo" if cpu_only and several else None,
    )


class FinetuneRun:
    """Runs one fine-tune as configured. ``examples`` may be given directly (benchmarks)."""

    def __init__(
        self,
        config: FinetuneConfig,
        *,
        train_examples: list[Example] | None = None,
        val_examples: list[Example] | None = None,
        loaded: Loaded | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.progress = progress or (lambda message: log.info(message))
        t = config.train
        self.output_dir = Path(t.output_dir)
        if train_examples is None:
            bundle = build_datasets(config.data, mode=t.mode, seed=t.seed)
            train_examples, val_examples, self.data_summary = (
                bundle.train,
                bundle.val,
                bundle.summary,
            )
        else:
            self.data_summary = {"mode": t.mode, "train": len(train_examples),
                                 "val": len(val_examples or [])}  # fmt: skip
        self.train_examples = train_examples
        self.val_examples = val_examples or []
        self.loaded = loaded or load_base(
            config.model.name_or_path,
            dtype=DTYPES[config.model.dtype],
            attn_implementation=config.model.attn_implementation,
            seed=t.seed,
        )
        self.family = self.loaded.family
        self.model: Any = prepare_model(config, self.loaded)
        self.encoder = ChatEncoder(
            self.loaded.processor, self.family, hf_model(self.model).config, config.data.max_length
        )
        self.collator = Collator(self.encoder)
        self.finetune_id = f"ft-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.name = t.name or self.output_dir.name
        self.history: list[dict[str, Any]] = []
        self.trainer: ICMTrainer | None = None

    def _resume_folder(self) -> Path | None:
        where = self.config.train.resume_from
        if not where:
            return None
        folder = latest_checkpoint(self.output_dir) if where == "latest" else Path(where)
        if folder is None:
            raise TrainError(f"resume_from latest: no complete checkpoint-N in {self.output_dir}")
        if not (folder / TRAINER_STATE).is_file() or not (folder / RUN_FILE).is_file():
            raise TrainError(
                f"resume_from {folder}: not a complete checkpoint "
                f"(no {TRAINER_STATE} or {RUN_FILE})"
            )
        return folder

    def run(self) -> TrainResult:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        t = self.config.train
        if not self.train_examples:
            raise TrainError("no training examples after the split")
        resume = self._resume_folder()
        train_seconds = 0.0
        if resume is not None:
            saved = json.loads((resume / RUN_FILE).read_text(encoding="utf-8"))
            self.finetune_id, train_seconds = saved["finetune_id"], saved["train_seconds"]
        # Launchers (torchrun, accelerate launch, deepspeed) export WORLD_SIZE; TrainingArguments
        # then sets up the process group, so the step count cannot ask it first.
        world = int(os.environ.get("WORLD_SIZE", "1"))
        total = total_steps(self.config, len(self.train_examples), world)
        args = training_arguments(self.config, total, has_val=bool(self.val_examples))
        if args.world_size != world:
            raise TrainError(f"WORLD_SIZE is {world} but the launcher set up {args.world_size}")
        record = RunRecord(self.config.data.db, self.finetune_id, enabled=t.record)
        trainer = ICMTrainer(
            model=self.model,
            args=args,
            icm_config=self.config,
            family=self.family,
            processor=self.loaded.processor,
            finetune_id=self.finetune_id,
            train_dataset=ExampleDataset(self.train_examples, self.encoder),
            eval_dataset=ExampleDataset(self.val_examples, self.encoder)
            if self.val_examples
            else None,
            data_collator=self.collator,
        )
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not (
            trainer.is_fsdp_enabled
        ):
            raise TrainError(
                "the launcher asked for FSDP but accelerate set up "
                f"{trainer.accelerator.distributed_type.value} (FSDP needs GPUs; on CPUs "
                "launch plain DDP with torchrun)"
            )
        if t.merge and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
            raise TrainError(
                "train.merge under FSDP or DeepSpeed: the weights are sharded; merge the saved "
                "adapter afterwards (icm moderate --model reads adapters directly)"
            )
        trainer.train_seconds = train_seconds
        for noisy in (PrinterCallback, ProgressCallback):  # CurveCallback reports instead
            trainer.remove_callback(noisy)
        main = trainer.is_world_process_zero()
        trainer.add_callback(
            CurveCallback(self.history, self.progress, trainer=trainer,
                          flush=record.flush if t.record else None)
        )  # fmt: skip
        self.trainer = trainer
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.output_dir)
            record.start(self._record_row(), self._record(total), _versions())
        if main:
            self.progress(
                f"fine-tune {self.name}: {len(self.train_examples)} train / "
                f"{len(self.val_examples)} val examples, {total} steps of "
                f"{t.batch_size}x{t.grad_accum}x{world}"
            )
        device = args.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            step = trainer.state.global_step
            if self.val_examples and trainer.last_eval_step != step:
                trainer.evaluate()
            train_rows = [r for r in self.history if r["split"] == "train"]
            val_rows = [r for r in self.history if r["split"] == "val"]
            tokens = int(trainer.state.num_input_tokens_seen)
            seconds = trainer.train_seconds
            result = TrainResult(
                finetune_id=self.finetune_id,
                output_dir=self.output_dir,
                steps=step,
                train_loss=train_rows[-1]["loss"] if train_rows else None,
                val_loss=val_rows[-1]["loss"] if val_rows else None,
                tokens=tokens,
                train_seconds=seconds,
                tokens_per_second=tokens / seconds if seconds else 0.0,
                peak_memory_bytes=peak_memory(device),
                history=self.history,
                data_summary=self.data_summary,
            )
            final = self.output_dir / (ADAPTER_DIR if self.config.lora.enabled else FULL_DIR)
            if main:
                shutil.rmtree(final, ignore_errors=True)
            trainer.save_model(str(final))  # every process: FSDP and ZeRO-3 gather the weights
            result.adapter_dir = final
            if main:
                self._save_final(result)
                record.finish(self.history, result.metrics(), "finished")
            trainer.accelerator.wait_for_everyone()
            return result
        except BaseException as exc:
            if main:
                record.fail(self.history, exc)
            raise

    # ------------------------------------------------------------------ record and outputs
    def _record_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_model": self.loaded.base,
            "family": self.family.name,
            "mode": self.config.train.mode,
            "source_runs": ",".join(self.config.data.runs + self.config.data.files),
            "output_dir": str(self.output_dir.resolve()),
        }

    def _record(self, total: int) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "data": self.data_summary,
            "total_steps": total,
            "parent": _parent(self.config),
            "versions": _versions(),
        }

    def _save_final(self, result: TrainResult) -> None:
        out = self.output_dir
        if self.config.lora.enabled and self.config.train.merge:
            merged_dir = out / MERGED_DIR
            shutil.rmtree(merged_dir, ignore_errors=True)
            self.save_merged(merged_dir)
            result.merged_dir = merged_dir
        info = {
            "finetune_id": self.finetune_id,
            "name": self.name,
            "family": self.family.name,
            "base_model": self.loaded.base,
            "mode": self.config.train.mode,
            "parent": _parent(self.config),
            "data": self.data_summary,
            "metrics": result.metrics(),
        }
        folders = [out, result.adapter_dir, *([result.merged_dir] if result.merged_dir else [])]
        for folder in folders:
            assert folder is not None
            (folder / INFO_FILE).write_text(json.dumps(info, indent=2, default=str))

    def save_merged(self, folder: Path) -> None:
        """The adapter folded into a copy of the base weights, saved as a plain model."""
        merged = copy.deepcopy(self.model).merge_and_unload()
        for param in merged.parameters():
            param.requires_grad_(False)
        merged.save_pretrained(folder)
        save_processor(self.loaded.processor, folder)
        self.config.save(folder)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` in ``folder`` (a crash mid-write leaves one without
    ``trainer_state.json``, which is skipped)."""
    if not folder.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := CHECKPOINT.match(p.name)) and (p / TRAINER_STATE).is_file()
    ]
    return max(found)[1] if found else None


def _parent(config: FinetuneConfig) -> dict[str, Any] | None:
    """For continuous SFT: the fine-tune it continues (from the adapter's icm_finetune.json)."""
    if config.train.mode != "continuous":
        return None
    source = config.model.init_adapter or config.model.name_or_path
    info_file = Path(source) / INFO_FILE
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return {"path": source, "finetune_id": info.get("finetune_id"), "mode": info.get("mode")}


def _versions() -> dict[str, str | None]:
    return package_versions(("torch", "transformers", "peft", "accelerate"))


def train(config: FinetuneConfig, **kwargs: Any) -> TrainResult:
    """Run a fine-tune as configured (see :class:`FinetuneRun`)."""
    return FinetuneRun(config, **kwargs).run()
