"""The fine-tune on ``transformers.Trainer``: our loss, data order, validation and saving.

Why ``transformers.Trainer`` and not TRL's ``SFTTrainer``: what SFTTrainer adds over Trainer is
dataset preparation (tokenising, packing, its own completion-only masks) and per-step token
accuracy computed from the full logits. For image-text models we already have the part that
matters, :mod:`finetune.collate` (the family's chat template, labels exactly on the assistant
answers, image tokens never truncated), so SFTTrainer would run with its preparation switched
off, and its accuracy metric would force the full ``(batch, length, vocab)`` logits that the
labels-only loss below avoids. Trainer gives the rest unchanged: checkpoints and resume,
gradient accumulation, schedulers, ``report_to`` integrations, and accelerate for DDP, FSDP and
DeepSpeed.

What this subclass changes, and why:

- **loss** (:meth:`ICMTrainer.compute_loss`): summed token cross-entropy over the labelled
  (assistant) tokens, divided by the labelled tokens of the whole accumulation window across
  processes, so every token weighs the same however the batches were padded, accumulated or
  split over processes. With ``loss_on_labels_only`` a forward pre-hook on the LM head keeps only
  the rows that have a label: the same loss as full logits at a fraction of the head's work and
  memory, computed inside the model's own forward, so DDP, FSDP and DeepSpeed see one ordinary
  forward and backward;
- **data order** (:class:`EpochSampler`): one seeded permutation per epoch, the same for every
  process count; accelerate hands consecutive batches of it to consecutive processes, so two
  processes with accumulation 1 see the global batches one process with accumulation 2 sees;
- **validation** (:meth:`ICMTrainer.evaluate`): token-weighted mean loss over the validation
  set, each example counted once on exactly one process (Trainer's own evaluation averages
  per-batch losses and pads the last batches by repeating examples);
- **saving**: the adapter (or full model), the processor (image-only variants included),
  ``finetune_config.json`` and ``icm_run.json`` in every checkpoint; **resume** loads the
  trained weights strictly (:func:`finetune.model_setup.load_trained_weights`);
- frozen vision towers stay in eval mode although Trainer calls ``model.train()`` every step.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from finetune.collate import IGNORE, ChatEncoder, Example, model_inputs
from finetune.config import FinetuneConfig
from finetune.families import Family, expected_image_tokens, image_token_id, save_processor
from finetune.model_setup import (
    TrainError,
    frozen_vision,
    hf_model,
    load_trained_weights,
    optimizer_groups,
)

RUN_FILE = "icm_run.json"
"""In every checkpoint: the fine-tune id and the training seconds so far (for resume)."""


class ExampleDataset(torch.utils.data.Dataset):
    """Examples encoded on access; holds the epoch that :class:`EpochSampler` permutes by.

    The epoch lives here because accelerate forwards ``set_epoch`` to the dataset on paths where
    it cannot reach the sampler (a sharded batch sampler that skips batches on resume).
    """

    def __init__(self, examples: list[Example], encoder: ChatEncoder) -> None:
        self.examples = examples
        self.encoder = encoder
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.encoder.encode(self.examples[index])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class EpochSampler(torch.utils.data.Sampler[int]):
    """A seeded permutation of the dataset per epoch (the same on every process)."""

    def __init__(self, dataset: ExampleDataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(range(len(self.dataset)))
        random.Random(self.seed * 100_003 + self.dataset.epoch).shuffle(order)
        return iter(order)


class ICMTrainer(Trainer):
    """``transformers.Trainer`` with the ICM loss, data order, validation and checkpoint files."""

    loss_is_scaled_for_ga = True  # compute_loss divides by the window's labelled tokens

    def __init__(
        self,
        *,
        model: nn.Module,
        args: Any,
        icm_config: FinetuneConfig,
        family: Family,
        processor: Any,
        finetune_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, args=args, **kwargs)
        self.icm_config = icm_config
        self.family = family
        self.processor = processor
        self.finetune_id = finetune_id
        self.train_seconds = 0.0
        """Seconds spent in optimizer steps (kept up to date by the curve callback)."""
        self.last_eval_step = -1
        inner = hf_model(model)
        self._model_config = inner.config
        self._frozen = frozen_vision(model, family, icm_config.lora.train_vision)
        self._labels_only = icm_config.train.loss_on_labels_only
        self._rows: torch.Tensor | None = None
        self._checked = False
        head = inner.get_output_embeddings()
        if self._labels_only and head is None:
            raise TrainError("train.loss_on_labels_only needs a model with an output embedding")
        if self._labels_only:
            head.register_forward_pre_hook(self._labelled_rows_only)

    # ------------------------------------------------------------------ loss
    def _labelled_rows_only(self, module: nn.Module, args: tuple[Any, ...]) -> Any:
        """LM-head pre-hook: hidden states ``(B, L, D)`` -> the ``(N, D)`` rows that predict a
        label (position t predicts label t + 1); inactive outside :meth:`loss_sum`."""
        if self._rows is None:
            return None
        return (args[0][:, :-1][self._rows], *args[1:])

    def loss_sum(
        self, model: nn.Module, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed token cross-entropy of a batch and its labelled-token count."""
        labels = inputs["labels"][:, 1:]
        mask = labels != IGNORE
        feed = model_inputs(inputs)
        if self._labels_only:
            self._rows = mask
            try:
                logits = model(**feed, use_cache=False).logits
            finally:
                self._rows = None
        else:
            logits = model(**feed, use_cache=False).logits[:, :-1][mask]
        loss = F.cross_entropy(logits.float(), labels[mask], reduction="sum")
        return loss, mask.sum()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if model.training and self._frozen is not None and self._frozen.training:
            self._frozen.eval()
        if not self._checked:
            self._check_image_tokens(inputs)
            self._checked = True
        loss_sum, count = self.loss_sum(model, inputs)
        if num_items_in_batch is None:  # a lone batch: its own mean
            loss = loss_sum / count.clamp(min=1)
        else:
            # DDP, FSDP and DeepSpeed average gradients over processes: times the process count,
            # this is the window's summed loss over the window's labelled tokens, everywhere.
            world = self.accelerator.num_processes
            denominator = torch.as_tensor(num_items_in_batch, device=loss_sum.device)
            loss = loss_sum * world / denominator.clamp(min=1)
        return (loss, None) if return_outputs else loss

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, torch.Tensor | int | None]:
        """The accumulation window's batches and its labelled tokens summed over processes."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if not batches:
            return batches, None
        labelled = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
        total = torch.tensor(labelled, device=device, dtype=torch.long)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        return batches, total

    def _check_image_tokens(self, batch: dict[str, Any]) -> None:
        config = self._model_config
        found = int((batch["input_ids"] == image_token_id(config)).sum())
        expected = expected_image_tokens(self.family, config, batch)
        if expected is not None and expected != found:
            raise TrainError(
                f"the batch has {found} image tokens but the model expects {expected} from its "
                "pixel inputs; the processor and the model config disagree"
            )

    # ------------------------------------------------------------------ data and optimizer
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset: Any = train_dataset if train_dataset is not None else self.train_dataset
        return EpochSampler(dataset, self.args.seed)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            target: Any = model if model is not None else self.model
            kwargs: dict[str, Any] = {"weight_decay": self.icm_config.train.weight_decay}
            if self.args.device.type == "cuda":
                kwargs["fused"] = True
            self.optimizer = torch.optim.AdamW(
                optimizer_groups(target, self.icm_config.train), **kwargs
            )
        return self.optimizer

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Token-weighted mean loss on the validation set; every process its share of batches,
        padded with uncounted repeats so sharded models (FSDP, ZeRO-3) run equal forwards."""
        dataset: Any = eval_dataset if eval_dataset is not None else self.eval_dataset
        size = self.args.per_device_eval_batch_size
        batches = [
            list(range(i, min(i + size, len(dataset)))) for i in range(0, len(dataset), size)
        ]
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        mine = [(b, True) for b in batches[rank::world]]
        mine += [(batches[0], False)] * (math.ceil(len(batches) / world) - len(mine))
        model = self.model_wrapped
        was_training = model.training
        model.eval()
        total = torch.zeros((), device=self.args.device)
        count = torch.zeros((), device=self.args.device, dtype=torch.long)
        try:
            for indices, counted in mine:
                batch = self._prepare_inputs(self.data_collator([dataset[i] for i in indices]))
                loss_sum, n = self.loss_sum(model, batch)
                if counted:
                    total += loss_sum.float()
                    count += n
        finally:
            if was_training:
                model.train()
                if self._frozen is not None:
                    self._frozen.eval()
        if world > 1:
            total = self.accelerator.reduce(total, reduction="sum")
            count = self.accelerator.reduce(count, reduction="sum")
        metrics = {f"{metric_key_prefix}_loss": float(total) / max(1, int(count))}
        self.last_eval_step = self.state.global_step
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics

    # ------------------------------------------------------------------ saving and resume
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Weights (adapter or full model), processor, resolved config and run file."""
        if not self.args.should_save:
            return
        folder = Path(str(output_dir if output_dir is not None else self.args.output_dir))
        folder.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if self.icm_config.lora.enabled:
            # save_embedding_layers=False: peft would otherwise look the base up on the Hub to
            # see whether its vocabulary changed (embeddings are never trained here).
            model.save_pretrained(folder, state_dict=state_dict, save_embedding_layers=False)
        else:
            model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        save_processor(self.processor, folder)
        self.icm_config.save(folder)
        run = {"finetune_id": self.finetune_id, "train_seconds": self.train_seconds}
        (folder / RUN_FILE).write_text(json.dumps(run, indent=1), encoding="utf-8")

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: nn.Module | None = None
    ) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:  # their own sharded formats
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        target: Any = model if model is not None else self.model
        load_trained_weights(
            target, Path(resume_from_checkpoint), lora=self.icm_config.lora.enabled
        )
