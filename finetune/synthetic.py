"""Config-built multimodal models with random weights: tests, benchmarks and the GPU check.

Nothing here downloads anything. Each builder makes a real transformers model class of its family
(LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, Idefics3, SmolVLM) from a config alone, with a
byte-level BPE tokenizer trained in-process on a few sentences and the family's own chat template
(the template its released checkpoints ship), and saves model + processor to a folder so the
fine-tune stage loads it from a local path exactly as it loads a downloaded checkpoint.

Sizes: ``tiny`` (hidden 64, 2 layers, vision hidden 32; builds in well under a second) for tests,
and ``2b`` (Qwen2-VL-2B's shapes, ~2.2B parameters) for the GPU throughput check. Only the
tokenizer's vocabulary is small; at ``2b`` the embedding keeps Qwen2-VL's 151,936 rows, so the
FLOP count is that of the real model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from finetune.families import ImageOnlyQwen2VLProcessor, ImageOnlySmolVLMProcessor, save_processor

SYNTHETIC_FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm")

SPECIAL_TOKENS = (
    "<pad>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<|image_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|video_pad|>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    "<s>",
    "</s>",
    "<row_1_col_1>",
    "<row_1_col_2>",
    "<row_2_col_1>",
    "<row_2_col_2>",
)

_CORPUS = (
    "Under rule R1 (audience: under 13, conservative culture), is the image sexy? Explain why.",
    "Under rule R2 (audience: 13 and over, open culture), is the image sexy? Explain why.",
    "The image is not sexy: it shows a cat sitting on a table, fully covered, nothing suggestive.",
    "The image is sexy for this audience because the legs are bare and the pose is suggestive.",
    "Is the image sexy? Yes. No. What is shown? How is the person dressed? Answer with the option",
    "USER: ASSISTANT: User: Assistant: system user assistant You are a helpful assistant.",
    "Describe the image. A photo of a rocket, a coffee cup, an astronaut, a camera, a flower.",
    "0 1 2 3 4 5 6 7 8 9 A. B. C. D.",
)

# The chat templates the released checkpoints ship (llava-hf/llava-1.5-7b-hf,
# Qwen/Qwen2-VL-2B-Instruct, HuggingFaceM4/Idefics3-8B-Llama3, HuggingFaceTB/SmolVLM-Instruct).
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
MISTRAL_LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'][0]['text'] + '</s>'}}{% endif %}{% endfor %}"
)

SIZES = ("tiny", "2b")


def train_tokenizer(
    extra_corpus: Iterable[str] = (), vocab_size: int = 600
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in-process (milliseconds), with every family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_CORPUS, *extra_corpus] * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<pad>", "<|im_end|>")],
    )


def _text_config(size: str, vocab: int, model_type: str = "llama", **extra: Any) -> dict:
    if size == "tiny":
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    else:  # Qwen2-VL-2B's language model
        shape = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                 "num_attention_heads": 12, "num_key_value_heads": 2}  # fmt: skip
    return {"model_type": model_type, "vocab_size": vocab, "max_position_embeddings": 4096,
            "tie_word_embeddings": False, **shape, **extra}  # fmt: skip


def build(
    family: str,
    size: str = "tiny",
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: str | None = None,
) -> tuple[PreTrainedModel, Any]:
    """(model, processor) of ``family`` at ``size``, random weights (seeded).

    ``tiny`` is built in fp32 on the CPU; ``2b`` in bf16, on the GPU when there is one (random
    initialisation of 2.2B parameters takes minutes on a CPU, a second on a GPU).
    """
    if family not in SYNTHETIC_FAMILIES:
        raise ValueError(
            f"no synthetic builder for {family!r} (have {', '.join(SYNTHETIC_FAMILIES)})"
        )
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if size == "2b" and family != "qwen2_vl":
        raise ValueError("the 2b size is built for qwen2_vl only (Qwen2-VL-2B's shapes)")
    torch.manual_seed(seed)
    tokenizer = train_tokenizer()
    builder = {
        "llava": _llava,
        "llava_next": _llava_next,
        "qwen2_vl": _qwen2_vl,
        "qwen2_5_vl": _qwen2_vl,
        "idefics3": _idefics3,
        "smolvlm": _idefics3,
    }[family]
    if dtype is None:
        dtype = torch.bfloat16 if size == "2b" else torch.float32
    if device is None:
        device = "cuda" if size == "2b" and torch.cuda.is_available() else "cpu"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model, processor = builder(family, size, tokenizer)
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), processor


def _vocab(tokenizer: PreTrainedTokenizerFast, size: str) -> int:
    return 151936 if size == "2b" else len(tokenizer)


CLIP_IMAGE, CLIP_PATCH = 32, 8
"""Image side and patch of the tiny CLIP vision towers (16 patches per image)."""


def _clip_llava_config(size: str, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """Config arguments LLaVA and LLaVA-NeXT share: a tiny CLIP tower and the text model."""
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": CLIP_IMAGE,
              "patch_size": CLIP_PATCH, "projection_dim": 32}  # fmt: skip
    return {
        "vision_config": vision,
        "text_config": _text_config(size, _vocab(tokenizer, size)),
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "vision_feature_select_strategy": "default",
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }


def _clip_llava_processor(tokenizer: PreTrainedTokenizerFast, template: str) -> dict[str, Any]:
    """Processor arguments LLaVA and LLaVA-NeXT share (one CLS token per image)."""
    return {
        "tokenizer": tokenizer,
        "patch_size": CLIP_PATCH,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,
        "chat_template": template,
    }


def _llava(family: str, size: str, tokenizer: PreTrainedTokenizerFast) -> tuple[Any, Any]:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    config = LlavaConfig(**_clip_llava_config(size, tokenizer), vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": CLIP_IMAGE}, crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, **_clip_llava_processor(tokenizer, LLAVA_TEMPLATE)
    )
    return model, processor


def _llava_next(family: str, size: str, tokenizer: PreTrainedTokenizerFast) -> tuple[Any, Any]:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    pinpoints = [[32, 32], [32, 64], [64, 32]]
    config = LlavaNextConfig(**_clip_llava_config(size, tokenizer), image_grid_pinpoints=pinpoints)
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": CLIP_IMAGE},
        crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        **_clip_llava_processor(tokenizer, MISTRAL_LLAVA_NEXT_TEMPLATE),
    )
    return model, processor


def _qwen2_vl(family: str, size: str, tokenizer: PreTrainedTokenizerFast) -> tuple[Any, Any]:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in names.items()}
    if size == "tiny":
        vision = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
                  "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
        text = _text_config(size, _vocab(tokenizer, size), model_type=family + "_text")
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 2, 4],
                                   "rope_theta": 10000.0}  # fmt: skip
    else:  # Qwen2-VL-2B
        vision = {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
        text = _text_config(size, _vocab(tokenizer, size), model_type=family + "_text",
                            rms_norm_eps=1e-6, tie_word_embeddings=True)  # fmt: skip
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": [16, 24, 24],
                                   "rope_theta": 1000000.0}  # fmt: skip
    text["bos_token_id"] = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text["eos_token_id"] = tokenizer.eos_token_id
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model

        vision = {"depth": vision["depth"], "hidden_size": vision["embed_dim"],
                  "num_heads": vision["num_heads"], "intermediate_size": vision["embed_dim"] * 2,
                  "out_hidden_size": text["hidden_size"], "patch_size": 14,
                  "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                  "fullatt_block_indexes": [1]}  # fmt: skip
    else:
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model

        vision["hidden_size"] = text["hidden_size"]
    config = Config(
        vision_config=vision,
        text_config=text,
        tie_word_embeddings=text["tie_word_embeddings"],
        pad_token_id=tokenizer.pad_token_id,
        **ids,
    )
    model = Model(config)
    pixels = (28 * 28 * 4, 28 * 28 * 16) if size == "tiny" else (448 * 448, 448 * 448)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=pixels[0], max_pixels=pixels[1], patch_size=14, merge_size=2,
        temporal_patch_size=2,
    )  # fmt: skip
    processor = ImageOnlyQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE
    )
    return model, processor


def _idefics3(family: str, size: str, tokenizer: PreTrainedTokenizerFast) -> tuple[Any, Any]:
    if family == "smolvlm":
        from transformers import SmolVLMConfig as Config
        from transformers import SmolVLMForConditionalGeneration as Model
        from transformers import SmolVLMProcessor as Processor
        from transformers.models.smolvlm.image_processing_pil_smolvlm import (
            SmolVLMImageProcessorPil as ImageProcessor,
        )
    else:
        from transformers import Idefics3Config as Config
        from transformers import Idefics3ForConditionalGeneration as Model
        from transformers import Idefics3Processor as Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil as ImageProcessor,
        )
    image_size, patch, scale = 32, 8, 2
    config = Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": image_size, "patch_size": patch},
        text_config=_text_config(size, _vocab(tokenizer, size)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = Model(config)
    image_processor = ImageProcessor(
        size={"longest_edge": image_size * 2},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=True,
    )
    kwargs: dict[str, Any] = {}
    if family == "smolvlm":
        kwargs["video_processor"] = None
    image_seq_len = (image_size // patch) ** 2 // (scale**2)
    try:
        processor = Processor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_len=image_seq_len,
            chat_template=IDEFICS3_TEMPLATE,
            **kwargs,
        )
    except (ImportError, TypeError, ValueError, AttributeError):
        if family != "smolvlm":
            raise
        processor = ImageOnlySmolVLMProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_len=image_seq_len,
            chat_template=IDEFICS3_TEMPLATE,
        )
    return model, processor


def save(model: PreTrainedModel, processor: Any, folder: Path) -> Path:
    """Save like a downloaded checkpoint; the processor's parts one by one where its own
    ``save_pretrained`` cannot (an image-only Qwen2-VL processor without its video part)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    save_processor(processor, folder)
    (folder / "synthetic.json").write_text(
        json.dumps({"note": "config-built, random weights (finetune.synthetic)"}), encoding="utf-8"
    )
    return folder


def build_saved(family: str, folder: Path, size: str = "tiny", *, seed: int = 0) -> Path:
    """Build and save ``family`` into ``folder``; returns the folder."""
    model, processor = build(family, size, seed=seed)
    saved = save(model, processor, folder)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return saved
