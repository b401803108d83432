"""The fine-tune loop: LoRA (or full) SFT of a multimodal model on ICM conversations.

One process or many: the loop runs under ``accelerate`` (device placement, DDP gradient sync),
so the same command scales out with a launcher, e.g.::

    accelerate launch --num_processes 8 -m finetune.train --config cfg.yaml
    torchrun --nproc_per_node 8 -m finetune.train --config cfg.yaml

Each process reads its own shard of every epoch's permutation; the batch size is per process.

What a step does: ``grad_accum`` micro-batches, each a forward to the last hidden states and the
LM head applied only where a label exists (assistant tokens; the same loss as the full logits,
at a fraction of the head's cost and memory), a sum of token losses divided by the labelled
tokens of the whole accumulation window across processes (so every token weighs the same,
however the batches were padded or split), then clipping, AdamW and the schedule (linear warm-up,
then cosine, linear or constant).

What it writes (``train.output_dir``):

- ``checkpoint-N/``: the adapter (or the full model), optimizer, scheduler, RNG and loop state,
  the processor and ``finetune_config.json``; ``train.resume_from`` continues from one exactly;
- ``adapter/`` at the end (peft format, projector included), ``merged/`` when ``train.merge``;
- ``finetune_config.json`` and ``icm_finetune.json`` (what was trained, on what, with what result);
- the store (``data.db``): a ``finetune_runs`` row and the loss curve in ``finetune_metrics``
  (train loss each ``logging_steps``, validation loss each ``eval_steps``).

bf16 keeps the frozen weights in bf16, the trained ones in fp32, and runs the forward under
autocast; fp32 is for CPUs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from data.store import Store, records, to_json, utcnow
from finetune.collate import IGNORE, ChatEncoder, Collator, Example, model_inputs
from finetune.config import FinetuneConfig
from finetune.data import build_datasets
from finetune.families import (
    Family,
    expected_image_tokens,
    image_token_id,
    save_processor,
    submodule,
)
from finetune.loading import (
    ADAPTER_DIR,
    DTYPES,
    FULL_DIR,
    INFO_FILE,
    MERGED_DIR,
    Loaded,
    load_base,
)

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class TrainError(RuntimeError):
    """The fine-tune cannot run as configured (the message says what to change)."""


# --------------------------------------------------------------------------- model setup
def prepare_model(config: FinetuneConfig, loaded: Loaded) -> nn.Module:
    """Freeze and wrap ``loaded.model`` as the config asks; returns the model to train."""
    m, lora = config.model, config.lora
    model, family = loaded.model, loaded.family
    torch.manual_seed(config.train.seed)
    for param in model.parameters():
        param.requires_grad_(False)
    projector_names = [p for p in family.projector if _has_module(model, p)]
    if lora.enabled:
        from peft import LoraConfig, PeftModel, get_peft_model

        if m.init_adapter:
            model = PeftModel.from_pretrained(model, m.init_adapter, is_trainable=True)
        else:
            to_save = list(lora.modules_to_save)
            if lora.train_projector:
                to_save += projector_names
            peft_config = LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=family.lora_target_regex(lora.target_modules),
                modules_to_save=to_save or None,
                bias="none",
            )
            model = get_peft_model(model, peft_config)
            model.peft_config["default"].base_model_name_or_path = loaded.base
        inner = model.get_base_model()
    else:
        inner = model
        for param in submodule(inner, family.language_model).parameters():
            param.requires_grad_(True)
        if lora.train_projector:
            for name in projector_names:
                for param in submodule(inner, name).parameters():
                    param.requires_grad_(True)
        for name in lora.modules_to_save:
            for param in submodule(inner, name).parameters():
                param.requires_grad_(True)
    vision = submodule(inner, family.vision_tower)
    for name, param in vision.named_parameters():
        if lora.train_vision:
            param.requires_grad_(True)
        elif param.requires_grad and not _is_projector(f"{family.vision_tower}.{name}", family):
            param.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise TrainError("nothing to train: check lora.target_modules and lora.train_projector")
    # Trained weights in fp32 (AdamW on bf16 weights loses small updates); frozen ones stay.
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if config.train.gradient_checkpointing:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        inner.config.use_cache = False
    return model


def _has_module(model: nn.Module, dotted: str) -> bool:
    try:
        return isinstance(submodule(model, dotted), nn.Module)
    except Exception:
        return False


def _is_projector(name: str, family: Family) -> bool:
    return any(name == p or name.startswith(p + ".") for p in family.projector)


def hf_model(model: nn.Module) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def freeze_modes(model: nn.Module, family: Family, train_vision: bool) -> None:
    """Frozen vision towers stay in eval mode (batch-norm statistics, dropout)."""
    if not train_vision:
        submodule(hf_model(model), family.vision_tower).eval()


class SFTLoss(nn.Module):
    """Summed token cross-entropy of a batch and its labelled-token count.

    A module (not a function) so that DDP wraps the whole computation and syncs gradients.
    """

    def __init__(self, model: nn.Module, family: Family, labels_only: bool) -> None:
        super().__init__()
        self.model = model
        self.family = family
        self.labels_only = labels_only

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE
        inputs = model_inputs(batch)
        inner = hf_model(self.model)
        if self.labels_only:
            backbone = submodule(inner, self.family.backbone)
            hidden = backbone(**inputs, use_cache=False).last_hidden_state
            selected = hidden[:, :-1][mask]
            logits = inner.get_output_embeddings()(selected)
        else:
            logits = inner(**inputs, use_cache=False).logits[:, :-1][mask]
        loss = F.cross_entropy(logits.float(), labels[mask], reduction="sum")
        return loss, mask.sum()


# --------------------------------------------------------------------------- data order
class ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[Example], encoder: ChatEncoder) -> None:
        self.examples = examples
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.encoder.encode(self.examples[index])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list:
    """This process's batches of one epoch: a seeded permutation, padded to a multiple of the
    process count (as DistributedSampler does), sharded, chunked."""
    order = list(range(n))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    if world > 1 and len(order) % world:
        order += order[: world - len(order) % world]
    shard = order[rank::world]
    return [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]


# --------------------------------------------------------------------------- results
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


def peak_memory(device: torch.device) -> int:
    """Peak accelerator memory allocated, or this process's peak RSS on CPU (bytes)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024))


# --------------------------------------------------------------------------- the trainer
class Trainer:
    """Runs one fine-tune as configured. ``examples`` may be given directly (benchmarks)."""

    def __init__(
        self,
        config: FinetuneConfig,
        *,
        train_examples: list[Example] | None = None,
        val_examples: list[Example] | None = None,
        loaded: Loaded | None = None,
        progress: Any = None,
    ) -> None:
        from accelerate import Accelerator

        self.config = config
        self.accelerator = Accelerator()
        self.device = self.accelerator.device
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
        dtype = DTYPES[config.model.dtype]
        self.loaded = loaded or load_base(
            config.model.name_or_path,
            dtype=dtype,
            attn_implementation=config.model.attn_implementation,
            seed=t.seed,
        )
        self.family = self.loaded.family
        self.model = prepare_model(config, self.loaded)
        self.encoder = ChatEncoder(
            self.loaded.processor, self.family, hf_model(self.model).config, config.data.max_length
        )
        self.collator = Collator(self.encoder)
        self.autocast = dtype in (torch.bfloat16, torch.float16) and self.device.type != "cpu"
        self.autocast_dtype = dtype
        self.finetune_id = f"ft-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.name = t.name or self.output_dir.name
        self.history: list[dict[str, Any]] = []
        self._flushed = 0

    # ------------------------------------------------------------------ helpers
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _loader(self, examples: list[Example], batches: list[list[int]]) -> Iterator[dict]:
        dataset = ExampleDataset(examples, self.encoder)
        workers = self.config.train.num_workers
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=self.collator,
            num_workers=workers,
            persistent_workers=False,
        )
        for batch in loader:
            yield {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def _check_image_tokens(self, batch: dict[str, Any]) -> None:
        config = hf_model(self.model).config
        found = int((batch["input_ids"] == image_token_id(config)).sum())
        expected = expected_image_tokens(self.family, config, batch)
        if expected is not None and expected != found:
            raise TrainError(
                f"the batch has {found} image tokens but the model expects {expected} from its "
                "pixel inputs; the processor and the model config disagree"
            )

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        t = self.config.train
        lora_params: list[nn.Parameter] = []
        full_params: list[nn.Parameter] = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            (lora_params if "lora_" in name else full_params).append(param)
        groups = []
        if lora_params:
            groups.append({"params": lora_params, "lr": t.learning_rate})
        if full_params:
            groups.append(
                {"params": full_params, "lr": t.projector_learning_rate or t.learning_rate}
            )
        kwargs: dict[str, Any] = {"weight_decay": t.weight_decay}
        if self.device.type == "cuda":
            kwargs["fused"] = True
        return torch.optim.AdamW(groups, **kwargs)

    def _scheduler(self, optimizer: torch.optim.Optimizer, total: int) -> Any:
        from transformers import get_scheduler

        t = self.config.train
        name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[
            t.scheduler
        ]
        return get_scheduler(
            name,
            optimizer,
            num_warmup_steps=math.ceil(t.warmup_ratio * total),
            num_training_steps=total,
        )

    # ------------------------------------------------------------------ the run
    def run(self) -> TrainResult:
        t, acc = self.config.train, self.accelerator
        if not self.train_examples:
            raise TrainError("no training examples after the split")
        world, rank = acc.num_processes, acc.process_index
        batches_per_epoch = len(
            epoch_batches(len(self.train_examples), t.batch_size, t.seed, 0, rank, world)
        )
        steps_per_epoch = max(1, math.ceil(batches_per_epoch / t.grad_accum))
        total = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.epochs * steps_per_epoch))
        self.model.to(self.device)  # before the optimizer: fused AdamW wants device tensors
        loss_module = SFTLoss(self.model, self.family, t.loss_on_labels_only)
        optimizer = self._optimizer(self.model)
        scheduler = self._scheduler(optimizer, total)
        loss_module, optimizer = acc.prepare(loss_module, optimizer)
        state: dict[str, Any] = {
            "step": 0, "epoch": 0, "batch_in_epoch": 0, "tokens": 0, "train_seconds": 0.0
        }  # fmt: skip
        if t.resume_from:
            state = self._resume(t.resume_from, optimizer, scheduler)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.output_dir)
            self._record_start(total)
        self.progress(
            f"fine-tune {self.name}: {len(self.train_examples)} train / "
            f"{len(self.val_examples)} val examples, {total} steps of "
            f"{t.batch_size}x{t.grad_accum}x{world}"
        )
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.model.train()
        freeze_modes(self.model, self.family, self.config.lora.train_vision)
        step, epoch = state["step"], state["epoch"]
        tokens, train_seconds = state["tokens"], state["train_seconds"]
        last_train_loss: float | None = None
        last_val: float | None = None
        window_loss = torch.zeros((), device=self.device)
        window_labels = torch.zeros((), device=self.device, dtype=torch.long)
        checked = False
        skip = state["batch_in_epoch"]
        try:
            while step < total:
                batches = epoch_batches(
                    len(self.train_examples), t.batch_size, t.seed, epoch, rank, world
                )
                position = skip
                stream = self._loader(self.train_examples, batches[skip:])
                skip = 0
                while step < total:
                    window = list(_take(stream, t.grad_accum))
                    if not window:
                        break
                    position += len(window)
                    if not checked:
                        self._check_image_tokens(window[0])
                        checked = True
                    started = time.perf_counter()
                    labelled = torch.stack(
                        [(b["labels"][:, 1:] != IGNORE).sum() for b in window]
                    ).sum()
                    labelled = acc.reduce(labelled, reduction="sum") if world > 1 else labelled
                    for i, batch in enumerate(window):
                        sync = i == len(window) - 1
                        ctx = contextlib.nullcontext() if sync else acc.no_sync(loss_module)
                        with ctx, self._autocast():
                            loss_sum, _ = loss_module(batch)
                            acc.backward(loss_sum * world / labelled.clamp(min=1))
                        window_loss += loss_sum.detach()
                    window_labels += labelled
                    if t.max_grad_norm > 0:
                        acc.clip_grad_norm_(
                            [p for p in self.model.parameters() if p.requires_grad], t.max_grad_norm
                        )
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step_tokens = torch.stack([b["attention_mask"].sum() for b in window]).sum()
                    if world > 1:
                        step_tokens = acc.reduce(step_tokens, reduction="sum")
                    tokens += int(step_tokens)
                    train_seconds += time.perf_counter() - started
                    step += 1
                    if step % t.logging_steps == 0 or step == total:
                        total_loss = (
                            acc.reduce(window_loss, reduction="sum") if world > 1 else window_loss
                        )
                        last_train_loss = float(total_loss) / max(1, int(window_labels))
                        if not math.isfinite(last_train_loss):
                            raise TrainError(f"the loss is not finite at step {step}")
                        self._log(
                            step, "train", last_train_loss, scheduler.get_last_lr()[0], tokens
                        )
                        window_loss.zero_()
                        window_labels.zero_()
                    if (
                        self.val_examples
                        and t.eval_steps > 0
                        and step % t.eval_steps == 0
                        and step < total
                    ):
                        last_val = self.evaluate(loss_module)
                        self._log(step, "val", last_val, None, tokens)
                    if t.save_steps > 0 and step % t.save_steps == 0 and step < total:
                        self._checkpoint(
                            step, epoch, position, tokens, train_seconds, optimizer, scheduler
                        )
                else:
                    break
                if position >= len(batches):
                    epoch += 1
            if self.val_examples:
                last_val = self.evaluate(loss_module)
                self._log(step, "val", last_val, None, tokens)
            self._checkpoint(step, epoch, 0, tokens, train_seconds, optimizer, scheduler)
            result = TrainResult(
                finetune_id=self.finetune_id,
                output_dir=self.output_dir,
                steps=step,
                train_loss=last_train_loss,
                val_loss=last_val,
                tokens=tokens,
                train_seconds=train_seconds,
                tokens_per_second=tokens / train_seconds if train_seconds else 0.0,
                peak_memory_bytes=peak_memory(self.device),
                history=self.history,
                data_summary=self.data_summary,
            )
            if self.is_main:
                self._save_final(result)
                self._record_end(result, "finished")
            acc.wait_for_everyone()
            return result
        except BaseException as exc:
            if self.is_main and self.config.train.record:
                self._record_failure(exc)
            raise

    def _autocast(self) -> Any:
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def evaluate(self, loss_module: nn.Module) -> float:
        """Mean token loss on the validation examples (every process its shard)."""
        acc, t = self.accelerator, self.config.train
        was_training = self.model.training
        self.model.eval()
        batches = epoch_batches(
            len(self.val_examples), t.batch_size, 0, 0, acc.process_index, acc.num_processes
        )
        # no shuffling for validation: keep the natural order
        batches = [sorted(b) for b in batches]
        total = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device, dtype=torch.long)
        for batch in self._loader(self.val_examples, batches):
            with self._autocast():
                loss_sum, n = loss_module(batch)
            total += loss_sum.float()
            count += n
        if acc.num_processes > 1:
            total, count = acc.reduce(total, reduction="sum"), acc.reduce(count, reduction="sum")
        if was_training:
            self.model.train()
            freeze_modes(self.model, self.family, self.config.lora.train_vision)
        return float(total) / max(1, int(count))

    # ------------------------------------------------------------------ logging and store
    def _log(self, step: int, split: str, loss: float, lr: float | None, tokens: int) -> None:
        row = {"step": step, "split": split, "loss": loss, "learning_rate": lr, "tokens": tokens}
        self.history.append(row)
        if self.is_main:
            lr_text = f" lr {lr:.2e}" if lr is not None else ""
            self.progress(f"step {step} {split} loss {loss:.4f}{lr_text} tokens {tokens}")

    def _store(self) -> Any:
        return Store.open(self.config.data.db)

    def _record_start(self, total: int) -> None:
        if not self.config.train.record:
            return
        record = {
            "config": self.config.to_dict(),
            "data": self.data_summary,
            "total_steps": total,
            "parent": _parent(self.config),
            "versions": _versions(),
        }
        with self._store() as store:
            records.record_finetune_start(
                store,
                {
                    "finetune_id": self.finetune_id,
                    "name": self.name,
                    "base_model": self.loaded.base,
                    "family": self.family.name,
                    "mode": self.config.train.mode,
                    "source_runs": ",".join(self.config.data.runs + self.config.data.files),
                    "config_json": to_json(record),
                    "output_dir": str(self.output_dir.resolve()),
                    "status": "running",
                    "started_at": utcnow(),
                },
            )
            records.register_run(
                store,
                records.RunRecord(
                    run_id=self.finetune_id,
                    name=self.name,
                    kind="finetune",
                    config=record,
                    package_versions=_versions(),
                ),
                on_conflict="replace",
            )

    def _flush_metrics(self, store: Any) -> None:
        rows = [
            {**row, "finetune_id": self.finetune_id, "created_at": utcnow()}
            for row in self.history[self._flushed :]
        ]
        records.record_finetune_metrics(store, rows)
        self._flushed = len(self.history)

    def _record_end(self, result: TrainResult, status: str) -> None:
        if not self.config.train.record:
            return
        with self._store() as store:
            self._flush_metrics(store)
            records.finish_finetune(store, self.finetune_id, status, result.metrics())

    def _record_failure(self, exc: BaseException) -> None:
        try:
            with self._store() as store:
                self._flush_metrics(store)
                records.finish_finetune(
                    store, self.finetune_id, "failed", {"error": f"{type(exc).__name__}: {exc}"}
                )
        except Exception as inner:  # the original error matters more
            log.warning("could not record the failure in the store: %s", inner)

    # ------------------------------------------------------------------ checkpoints
    def _save_weights(self, folder: Path) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if self.config.lora.enabled:
            # save_embedding_layers=False: peft would otherwise look the base up on the Hub to
            # see whether its vocabulary changed (embeddings are never trained here).
            model.save_pretrained(folder, save_embedding_layers=False)
        else:
            model.save_pretrained(folder, safe_serialization=True)
        save_processor(self.loaded.processor, folder)
        self.config.save(folder)

    def _checkpoint(
        self,
        step: int,
        epoch: int,
        batch_in_epoch: int,
        tokens: int,
        train_seconds: float,
        optimizer: Any,
        scheduler: Any,
    ) -> None:
        self.accelerator.wait_for_everyone()
        if not self.is_main:
            return
        folder = self.output_dir / f"checkpoint-{step}"
        staging = self.output_dir / f".checkpoint-{step}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self._save_weights(staging)
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        torch.save(
            {"python": random.getstate(), "torch": torch.get_rng_state()}, staging / "rng_state.pt"
        )
        (staging / STATE_FILE).write_text(
            json.dumps(
                {
                    "finetune_id": self.finetune_id,
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "tokens": tokens,
                    "train_seconds": train_seconds,
                    "history": self.history,
                },
                indent=1,
            )
        )
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)  # a crash mid-write leaves only the .partial folder
        if self.config.train.record:
            with self._store() as store:
                self._flush_metrics(store)
        self._prune()

    def _prune(self) -> None:
        limit = self.config.train.save_total_limit
        found = sorted(
            (int(m.group(1)), p)
            for p in self.output_dir.iterdir()
            if (m := CHECKPOINT.match(p.name)) and p.is_dir()
        )
        for _, path in found[: max(0, len(found) - max(1, limit))]:
            shutil.rmtree(path, ignore_errors=True)

    def _resume(self, where: str, optimizer: Any, scheduler: Any) -> dict[str, Any]:
        folder = latest_checkpoint(self.output_dir) if where == "latest" else Path(where)
        if folder is None:
            raise TrainError(f"resume_from latest: no checkpoint-N folder in {self.output_dir}")
        if not (folder / STATE_FILE).is_file():
            raise TrainError(f"resume_from {folder}: not a checkpoint (no {STATE_FILE})")
        state = json.loads((folder / STATE_FILE).read_text())
        model = self.accelerator.unwrap_model(self.model)
        if self.config.lora.enabled:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            weights = load_file(str(folder / "adapter_model.safetensors"))
            set_peft_model_state_dict(model, weights)
        else:
            from safetensors.torch import load_file

            files = sorted(folder.glob("model*.safetensors"))
            weights = {}
            for file in files:
                weights.update(load_file(str(file)))
            model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
        rng = torch.load(folder / "rng_state.pt", weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        self.finetune_id = state["finetune_id"]
        self.history = list(state.get("history", []))
        self._flushed = 0
        self.progress(f"resumed from {folder} at step {state['step']}")
        return state

    def _save_final(self, result: TrainResult) -> None:
        out = self.output_dir
        final = out / (ADAPTER_DIR if self.config.lora.enabled else FULL_DIR)
        shutil.rmtree(final, ignore_errors=True)
        self._save_weights(final)
        result.adapter_dir = final
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
        for folder in [out, final, *([result.merged_dir] if result.merged_dir else [])]:
            (folder / INFO_FILE).write_text(json.dumps(info, indent=2, default=str))

    def save_merged(self, folder: Path) -> None:
        """The adapter folded into a copy of the base weights, saved as a plain model."""
        import copy

        model = self.accelerator.unwrap_model(self.model)
        merged = copy.deepcopy(model).merge_and_unload()
        for param in merged.parameters():
            param.requires_grad_(False)
        merged.save_pretrained(folder)
        save_processor(self.loaded.processor, folder)
        self.config.save(folder)


def _take(stream: Iterator[dict], n: int) -> Iterator[dict]:
    for _ in range(n):
        try:
            yield next(stream)
        except StopIteration:
            return


def latest_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := CHECKPOINT.match(p.name)) and p.is_dir()
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
    import importlib.metadata

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "accelerate"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def train(config: FinetuneConfig, **kwargs: Any) -> TrainResult:
    """Run a fine-tune as configured (see :class:`Trainer`)."""
    return Trainer(config, **kwargs).run()


def main(argv: list[str] | None = None) -> None:
    """``python -m finetune.train --config cfg.yaml [--set k=v ...]`` (what launchers run)."""
    import argparse

    parser = argparse.ArgumentParser(description="Fine-tune a multimodal model on ICM data.")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = train(FinetuneConfig.load(args.config, args.overrides))
    print(json.dumps({"finetune_id": result.finetune_id, **result.metrics()}, indent=2))


if __name__ == "__main__":
    main()
