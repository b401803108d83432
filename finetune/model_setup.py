"""What trains: freezing, LoRA wrapping, fp32 trained weights, optimizer groups, strict reloads.

Kept apart from the training loop so that the loop (``transformers.Trainer``, see
:mod:`finetune.hf_trainer`) and the tools around it (benchmarks, tests) prepare a model the same
way.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finetune.config import FinetuneConfig, TrainArguments
from finetune.families import Family, submodule
from finetune.loading import Loaded

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class TrainError(RuntimeError):
    """The fine-tune cannot run as configured (the message says what to change)."""


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
        # transformers 5.2x renamed it (the old name warns, and goes in v6); older 5.x has only it
        enable = getattr(inner, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            inner.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
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


def frozen_vision(model: nn.Module, family: Family, train_vision: bool) -> nn.Module | None:
    """The vision tower that must stay in eval mode while the rest trains (batch-norm statistics,
    dropout), or None when it trains."""
    return None if train_vision else submodule(hf_model(model), family.vision_tower)


def optimizer_groups(model: nn.Module, t: TrainArguments) -> list[dict[str, Any]]:
    """AdamW groups: LoRA matrices at ``learning_rate``, fully trained modules (projector) at
    ``projector_learning_rate``; weight decay on every trained tensor."""
    lora_params: list[nn.Parameter] = []
    full_params: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (lora_params if "lora_" in name else full_params).append(param)
    groups: list[dict[str, Any]] = []
    if lora_params:
        groups.append({"params": lora_params, "lr": t.learning_rate})
    if full_params:
        groups.append({"params": full_params, "lr": t.projector_learning_rate or t.learning_rate})
    return groups


def load_trained_weights(model: nn.Module, folder: Path, *, lora: bool) -> None:
    """Put a checkpoint's trained weights into ``model``, strictly: a key the checkpoint lacks or
    the model does not know is an error naming it (no silent ``strict=False`` drops)."""
    from safetensors.torch import load_file

    if lora:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        file = folder / ADAPTER_WEIGHTS
        if not file.is_file():
            raise TrainError(f"resume from {folder}: no {ADAPTER_WEIGHTS} (not a LoRA checkpoint)")
        weights = load_file(str(file))
        expected = set(get_peft_model_state_dict(model, save_embedding_layers=False))
        _check_keys(folder, expected, set(weights), allowed_missing=set())
        set_peft_model_state_dict(model, weights)
        return
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise TrainError(f"resume from {folder}: no model*.safetensors (not a full checkpoint)")
    weights = {}
    for file in files:
        weights.update(load_file(str(file)))
    state = model.state_dict()
    loaded_ptrs = {state[k].data_ptr() for k in weights if k in state}
    tied = {k for k in state if k not in weights and state[k].data_ptr() in loaded_ptrs}
    _check_keys(folder, set(state), set(weights), allowed_missing=tied)
    model.load_state_dict(weights, strict=False)  # every key checked above; tied ones share


def _check_keys(
    folder: Path, expected: set[str], found: set[str], allowed_missing: set[str]
) -> None:
    missing = sorted(expected - found - allowed_missing)
    unexpected = sorted(found - expected)
    if missing or unexpected:
        raise TrainError(
            f"resume from {folder}: the checkpoint does not match the model being trained "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}); resume with the same "
            "model and lora settings it was written with"
        )


def peak_memory(device: torch.device) -> int:
    """Peak accelerator memory allocated, or this process's peak RSS on CPU (bytes)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024))
