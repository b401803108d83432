"""Trainer callbacks: the loss curve (history, progress lines, store) and step timing.

The curve has one row per logged step and split, ``{"step", "split", "loss", "learning_rate",
"tokens"}``, the rows the store's ``finetune_metrics`` holds; ``tokens`` counts non-padding
tokens (image tokens included) over all processes so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from finetune.model_setup import TrainError


def curve_row(step: int, logs: dict[str, Any], tokens: int) -> dict[str, Any] | None:
    """A curve row from one Trainer log entry (None for entries that are not a loss)."""
    if "loss" in logs:
        return {"step": step, "split": "train", "loss": float(logs["loss"]),
                "learning_rate": logs.get("learning_rate"), "tokens": tokens}  # fmt: skip
    if "eval_loss" in logs:
        return {"step": step, "split": "val", "loss": float(logs["eval_loss"]),
                "learning_rate": None, "tokens": tokens}  # fmt: skip
    return None


def progress_line(row: dict[str, Any]) -> str:
    lr = row["learning_rate"]
    lr_text = f" lr {lr:.2e}" if lr is not None else ""
    return (
        f"step {row['step']} {row['split']} loss {row['loss']:.4f}{lr_text} tokens {row['tokens']}"
    )


class CurveCallback(TrainerCallback):
    """Keeps ``history``, reports each row through ``progress`` (main process), stops on a
    non-finite loss, times the optimizer steps, and flushes the curve at every checkpoint."""

    def __init__(
        self,
        history: list[dict[str, Any]],
        progress: Callable[[str], None],
        *,
        trainer: Any,
        flush: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.history = history
        self.progress = progress
        self.trainer = trainer
        self.flush = flush
        self._started: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.log_history and not self.history:  # resumed: the curve so far
            for entry in state.log_history:
                row = curve_row(entry["step"], entry, int(entry.get("num_input_tokens_seen", 0)))
                if row is not None:
                    self.history.append(row)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._started is not None:
            self.trainer.train_seconds += time.perf_counter() - self._started
            self._started = None

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        row = curve_row(state.global_step, logs or {}, int(state.num_input_tokens_seen))
        if row is None:
            return
        if not math.isfinite(row["loss"]):
            raise TrainError(f"the {row['split']} loss is not finite at step {row['step']}")
        self.history.append(row)
        if state.is_world_process_zero:
            self.progress(progress_line(row))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.flush is not None and state.is_world_process_zero:
            self.flush(self.history)
