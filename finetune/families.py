"""What differs between model families: where the parts sit, how turns end, how many image tokens.

One :class:`Family` per architecture the fine-tune stage supports. The processing itself (chat
template, image-token expansion, pixel batching) is the family's own processor from the model
folder; this module only names the facts the trainer needs on top:

- which submodules are the language model (LoRA goes there by default), the vision tower (frozen
  by default) and the projector (optionally trained), as dotted paths in the transformers model;
- which token ends an assistant turn (the loss must teach the model to stop);
- how many image tokens the model expects for a processed batch (checked against ``input_ids``,
  so a truncated or mis-expanded prompt fails before it reaches the model with transformers'
  "Image features and image tokens do not match").

Qwen2-VL's processor builds a video processor that needs torchvision; where that is missing the
image-only subclass here is used (fine-tuning on images needs no video path).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    PretrainedConfig,
    ProcessorMixin,
)
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

log = logging.getLogger(__name__)

CHAT_TEMPLATE_FILE = "chat_template.jinja"


class FamilyError(ValueError):
    """The model folder is of no supported family, or its parts are not where expected."""


@dataclass(frozen=True)
class Family:
    """The facts of one architecture that the trainer and the moderator need."""

    name: str
    model_types: tuple[str, ...]
    language_model: str
    """Dotted path of the language model inside the ``...ForConditionalGeneration`` model."""
    vision_tower: str
    projector: tuple[str, ...]
    """Dotted paths of the vision-to-language projector (trained when asked)."""
    end_of_turn: tuple[str, ...]
    """Candidates for the token that closes an assistant turn, first present wins (else EOS)."""
    backbone: str = "model"
    """The submodule that returns hidden states (the model without its LM head)."""

    def lora_target_regex(self, modules: list[str]) -> str:
        """A peft ``target_modules`` regex: ``modules`` inside the language model only."""
        names = "|".join(re.escape(m) for m in modules)
        return rf"^{re.escape(self.language_model)}\..*\.({names})$"

    def end_of_turn_token(self, tokenizer: Any) -> str:
        vocab = tokenizer.get_vocab()
        for token in self.end_of_turn:
            if token in vocab:
                return token
        if tokenizer.eos_token is None:
            raise FamilyError(f"{self.name}: the tokenizer has no end-of-turn or EOS token")
        return tokenizer.eos_token


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="llava",
            model_types=("llava",),
            language_model="model.language_model",
            vision_tower="model.vision_tower",
            projector=("model.multi_modal_projector",),
            end_of_turn=(),
        ),
        Family(
            name="llava_next",
            model_types=("llava_next",),
            language_model="model.language_model",
            vision_tower="model.vision_tower",
            projector=("model.multi_modal_projector", "model.image_newline"),
            end_of_turn=("</s>",),
        ),
        Family(
            name="qwen2_vl",
            model_types=("qwen2_vl",),
            language_model="model.language_model",
            vision_tower="model.visual",
            projector=("model.visual.merger",),
            end_of_turn=("<|im_end|>",),
        ),
        Family(
            name="qwen2_5_vl",
            model_types=("qwen2_5_vl",),
            language_model="model.language_model",
            vision_tower="model.visual",
            projector=("model.visual.merger",),
            end_of_turn=("<|im_end|>",),
        ),
        Family(
            name="idefics3",
            model_types=("idefics3",),
            language_model="model.text_model",
            vision_tower="model.vision_model",
            projector=("model.connector",),
            end_of_turn=("<end_of_utterance>",),
        ),
        Family(
            name="smolvlm",
            model_types=("smolvlm",),
            language_model="model.text_model",
            vision_tower="model.vision_model",
            projector=("model.connector",),
            end_of_turn=("<end_of_utterance>",),
        ),
    )
}
"""icm-tiny is a LLaVA (its vision tower is EfficientNet-Lite0): it uses the ``llava`` family."""


def family_for(config: PretrainedConfig) -> Family:
    """The family of a loaded config, by ``model_type``."""
    for family in FAMILIES.values():
        if config.model_type in family.model_types:
            return family
    supported = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise FamilyError(
        f"model type {config.model_type!r} is not supported for fine-tuning "
        f"(supported: {supported})"
    )


def detect_family(path: Path) -> Family:
    """The family of the model in folder ``path`` (reads ``config.json`` only)."""
    if not (Path(path) / "config.json").is_file():
        raise FamilyError(f"{path}: no config.json in that folder (not a model checkpoint)")
    return family_for(AutoConfig.from_pretrained(path, local_files_only=True))


def submodule(model: torch.nn.Module, dotted: str) -> Any:
    """``model.a.b`` by its dotted path; a FamilyError naming the path when it is absent."""
    found: Any = model
    for part in dotted.split("."):
        if not hasattr(found, part):
            raise FamilyError(f"{type(model).__name__} has no {dotted!r} (missing {part!r})")
        found = getattr(found, part)
    return found


# --------------------------------------------------------------------------- image tokens
def expected_image_tokens(family: Family, config: PretrainedConfig, batch: dict) -> int | None:
    """Image tokens the model will produce features for, from its config and the pixel inputs.

    None where the count depends on the image (LLaVA-NeXT's any-resolution tiling): the model's
    own check still runs in its forward.
    """
    name = family.name
    if name == "llava":
        vision = config.vision_config
        per_image = (vision.image_size // vision.patch_size) ** 2
        per_image += int(getattr(vision, "num_cls_tokens", 1))
        if config.vision_feature_select_strategy == "default":
            per_image -= 1
        return per_image * int(batch["pixel_values"].shape[0])
    if name in ("qwen2_vl", "qwen2_5_vl"):
        merge = config.vision_config.spatial_merge_size
        return int(batch["image_grid_thw"].prod(-1).sum()) // merge**2
    if name in ("idefics3", "smolvlm"):
        vision = config.vision_config
        per_image = (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2
        pixels = batch["pixel_values"]
        flat = pixels.reshape(-1, *pixels.shape[-3:])
        real = int((flat != 0).flatten(1).any(1).sum())  # all-zero images are batch padding
        return per_image * real
    return None


def image_token_id(config: PretrainedConfig) -> int:
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    raise FamilyError(f"{config.model_type}: the config names no image token id")


# --------------------------------------------------------------------------- processors
class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video part (whose processor needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def _image_only_smolvlm() -> type:
    from transformers import SmolVLMProcessor

    class ImageOnlySmolVLMProcessor(SmolVLMProcessor):
        """SmolVLM's processor without the video part (whose processor needs torchvision)."""

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            image_seq_len: int = 169,
            chat_template: str | None = None,
            **kwargs: Any,
        ) -> None:
            self.fake_image_token = getattr(
                tokenizer, "fake_image_token", "<fake_token_around_image>"
            )
            self.image_token = getattr(tokenizer, "image_token", "<image>")
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.end_of_utterance_token = getattr(
                tokenizer, "end_of_utterance_token", "<end_of_utterance>"
            )
            self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
            self.image_seq_len = image_seq_len
            self.video_token = "<video>"
            self.video_size = {"longest_edge": 512}
            self.default_max_frames = 64
            self.default_fps = 1
            self.do_image_splitting = getattr(image_processor, "do_image_splitting", True)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

        def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
            return ProcessorMixin.apply_chat_template(self, conversation, **kwargs)

    return ImageOnlySmolVLMProcessor


def __getattr__(name: str) -> Any:
    if name == "ImageOnlySmolVLMProcessor":
        return _image_only_smolvlm()
    raise AttributeError(name)


def save_processor(processor: Any, folder: Path) -> None:
    """``save_pretrained``, or its parts one by one for the image-only processors above."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if type(processor).__name__.startswith("ImageOnly"):
        processor.tokenizer.save_pretrained(folder)
        processor.image_processor.save_pretrained(folder)
        (folder / CHAT_TEMPLATE_FILE).write_text(processor.chat_template or "", encoding="utf-8")
        extra = {"image_only_processor": type(processor).__name__}
        if hasattr(processor, "image_seq_len"):
            extra["image_seq_len"] = processor.image_seq_len
        (folder / "icm_processor.json").write_text(json.dumps(extra), encoding="utf-8")
        return
    processor.save_pretrained(folder)


def load_processor(path: Path, family: Family) -> Any:
    """The processor saved in ``path``; the image-only variant where the full one cannot load."""
    path = Path(path)
    marker = path / "icm_processor.json"
    if not marker.is_file():
        try:
            return AutoProcessor.from_pretrained(path, local_files_only=True)
        except (ImportError, AttributeError, ValueError, TypeError, OSError) as exc:
            if family.name not in ("qwen2_vl", "qwen2_5_vl", "smolvlm"):
                raise FamilyError(f"{path}: cannot load the processor: {exc}") from exc
            log.info("%s: full processor unavailable (%s); using the image-only one", path, exc)
    extra = json.loads(marker.read_text()) if marker.is_file() else {}
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    template_file = path / CHAT_TEMPLATE_FILE
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
    template = template or getattr(tokenizer, "chat_template", None)
    if family.name in ("qwen2_vl", "qwen2_5_vl"):
        return ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=template)
    cls = _image_only_smolvlm()
    return cls(
        image_processor,
        tokenizer,
        image_seq_len=int(extra.get("image_seq_len", 169)),
        chat_template=template,
    )
