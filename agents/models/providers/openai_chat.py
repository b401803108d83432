"""OpenAI and OpenAI-compatible endpoints (vLLM, Ollama, llama.cpp, LM Studio) via ChatOpenAI.

Structured-output dialects, a per-endpoint setting (``dialect``) because servers differ:

- ``json_schema``: ``response_format={"type": "json_schema", "json_schema": {name, schema}}``.
  OpenAI and vLLM. Default for ``openai:``. Sent with ``strict: false`` because pydantic
  schemas with optional fields or string bounds are not valid strict schemas; the layer
  validates every answer anyway.
- ``json_object_schema``: ``response_format={"type": "json_object", "schema": {...}}``. The
  llama.cpp server, which rejects ``json_schema`` and builds a grammar from this schema.
- ``tools``: one function whose parameters are the schema, forced with ``tool_choice``. For
  servers that constrain tool calls but not ``response_format``.
- ``text``: no constraint; the schema is written into the system message and the layer parses the
  first JSON object of the answer. Works anywhere; weakest.
- ``auto`` (default for ``openai-compatible:``): starts with ``json_schema`` and, when the server
  rejects the request because of ``response_format``/schema/tools (llama.cpp answers 500
  "response_format type must be ..."), moves to the next dialect in the order above and keeps
  it for the endpoint. The dialect actually used is recorded in each trace row.

Three ways to send the same request body, by the ``client`` setting: LangChain's ChatOpenAI
(``langchain``), the openai SDK's own ``AsyncOpenAI.post`` (``sdk``: no LangChain message
conversion, no SDK request transform or response model) or aiohttp directly (``raw``, see
openai_wire.py). CPU per call falls in that order (benchmarks/bench_generate.py), which is what
limits throughput at high concurrency against a fast self-hosted server. With no setting a role
gets ``raw``, or ``langchain`` while LangSmith tracing or a LangChain callback hook is configured
(providers/langchain_watch.py), so traced calls stay visible there.

Images (``send_images``): hosted OpenAI always gets them. ``openai-compatible:`` defaults to
``auto``: the image is sent (the paper's own set-up is a vision model behind vLLM's server) and,
when the endpoint answers that its model takes no images, the request fails with the
non-retryable kind ``images_unsupported`` and the endpoint and model are remembered as text-only
(like the dialect probe), so the layer asks again without the image and every later call of the
process goes text-only straight away. ``true`` always sends images, ``false`` never does.

Retries are the layer's job: the client is built with ``max_retries=0``.

``delivery=batch``: the same body goes, as one line of a round's batch file, to the Batch API of
the same base URL (providers/openai_batch.py, agents/models/batching.py), and its result line is
parsed exactly like a synchronous answer.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import openai
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from agents.models.base import GenerationParams, Message, ProviderError, ProviderResponse
from agents.models.batching import Batcher, Rounds, Sleep
from agents.models.cache import schema_document
from agents.models.credentials import NO_KEY_PLACEHOLDER, read_key
from agents.models.errors import classify
from agents.models.prompt_cache import langchain_usage
from agents.models.providers.http import async_http_client
from agents.models.providers.langchain_watch import choose_client
from agents.models.providers.openai_batch import OpenAIBatchBackend, completion_text
from agents.models.providers.openai_wire import (
    RawChatClient,
    chat_response,
    parse_completion,
    wire_messages,
    with_logprobs,
)
from agents.models.settings import RoleSettings
from agents.models.spec import ModelSpec
from data.store import Store

if TYPE_CHECKING:
    from openai._types import RequestOptions  # the SDK names the type only here

DIALECT_ORDER: tuple[str, ...] = ("json_schema", "json_object_schema", "tools", "text")
#: the ``client`` used when a role's settings name none and nothing watches LangChain (tests run
#: every case with each client)
DEFAULT_CLIENT = "raw"
OPENAI_BASE_URL = "https://api.openai.com/v1"

#: what ``auto`` learned per (endpoint, model), shared by every client in the process
_LEARNED_DIALECTS: dict[tuple[str, str], str] = {}

_DIALECT_REJECTION = re.compile(
    r"response_format|json_schema|json_object|schema|tool|function", re.I
)

#: (endpoint, model) pairs whose server answered that the model takes no images
_TEXT_ONLY_MODELS: set[tuple[str, str]] = set()

#: How each self-hosted server says "this model takes no images" (matched in the error text,
#: whatever the status: llama.cpp and Ollama's runner answer 500, vLLM 400):
_IMAGES_REJECTED = re.compile(
    "|".join(
        (
            # vLLM: vllm/multimodal/registry.py (vllm-project/vllm), MultiModalRegistry.
            # create_processor: raise ValueError(f"{model_name} is not a multimodal model"),
            # answered by the OpenAI server as 400 BadRequestError.
            r"is not a multimodal model",
            # llama.cpp server: tools/server (ggml-org/llama.cpp), oaicompat_chat_params_parse:
            # "image input is not supported - hint: if this is unexpected, you may need to
            # provide the mmproj" (older builds: "image input is not supported by this server",
            # issue ggml-org/llama.cpp#13566), answered as 500 server_error.
            r"image input is not supported",
            # Ollama: model/model.go (ollama/ollama), ErrNoVisionModel = errors.New("this model
            # is missing data required for image input"); and server/images.go's capability
            # check, errCapabilities ("does not support") + errCapabilityVision ("vision").
            r"missing data required for image input",
            r"does not support vision",
        )
    ),
    re.I,
)


def forget_learned_dialects() -> None:
    """Drop what ``auto`` learned, dialects and text-only models (tests reuse loopback ports
    across fake servers)."""
    _LEARNED_DIALECTS.clear()
    _TEXT_ONLY_MODELS.clear()


def rejects_images(error: ProviderError) -> bool:
    """Did the server answer that its model takes no images (see ``_IMAGES_REJECTED``)?"""
    return error.kind in ("bad_request", "server") and bool(_IMAGES_REJECTED.search(error.message))


def schema_name(schema: type[BaseModel]) -> str:
    """A function/schema name OpenAI accepts (``^[a-zA-Z0-9_-]{1,64}$``)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", schema.__name__)[:64] or "Output"


def schema_instruction(schema: type[BaseModel]) -> str:
    """The instruction that carries the schema when the endpoint cannot enforce it."""
    return (
        "Answer with exactly one JSON object and nothing else (no prose, no code fences). "
        f"It must validate against this JSON schema:\n{schema_document(schema)[1]}"
    )


def image_block(data: bytes, media_type: str) -> dict[str, Any]:
    """OpenAI's image content block: a base64 data URL."""
    encoded = base64.b64encode(data).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{encoded}"}}


def to_langchain(
    messages: list[Message],
    instruction: str | None = None,
    *,
    image_block: Callable[[bytes, str], dict[str, Any]] = image_block,
    images_first: bool = False,
) -> list[BaseMessage]:
    """Our messages as LangChain messages; ``instruction`` is appended to the system message.

    ``image_block`` builds the provider's image content block; ``images_first`` puts a user
    message's images before its text (as Anthropic advises) instead of after it.
    """
    out: list[BaseMessage] = []
    for m in messages:
        if m.role == "system":
            out.append(SystemMessage(content=m.text))
        elif m.role == "assistant":
            out.append(AIMessage(content=m.text))
        elif m.images:
            images = [image_block(i.data, i.media_type) for i in m.images]
            text: list[Any] = [{"type": "text", "text": m.text}]
            first = images_first or m.images_first
            out.append(HumanMessage(content=images + text if first else text + images))
        else:
            out.append(HumanMessage(content=m.text))
    if instruction:
        if out and isinstance(out[0], SystemMessage):
            out[0] = SystemMessage(content=f"{out[0].content}\n\n{instruction}")
        else:
            out.insert(0, SystemMessage(content=instruction))
    return out


def message_text(message: AIMessage) -> str:
    """The text of an answer whether content is a string or a list of blocks."""
    if isinstance(message.content, str):
        return message.content
    return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in message.content)


def langchain_response(
    answer: AIMessage,
    text: str,
    parsed: dict[str, Any] | None,
    finish_reason: str | None,
    dialect: str,
) -> ProviderResponse:
    """The layer's response from a LangChain answer whose provider-specific refusals were
    handled (see :func:`chat_response`)."""
    usage: Mapping[str, Any] = answer.usage_metadata or {}
    return chat_response(
        text, parsed, langchain_usage(usage), usage.get("output_tokens"), finish_reason, dialect
    )


class OpenAIChatProvider:
    """One SDK client (and ChatOpenAI over it) per spec and role settings, reused for every call."""

    def __init__(self, spec: ModelSpec, settings: RoleSettings, api_key: str | None) -> None:
        self.provider = spec.provider
        self.model = spec.model
        base_url = spec.base_url or settings.base_url
        self.endpoint = base_url or OPENAI_BASE_URL
        hosted = spec.provider == "openai"
        self.send_images = settings.send_images
        if self.send_images is None:
            self.send_images = True if hosted else "auto"
        self.configured_dialect = settings.dialect or ("json_schema" if hosted else "auto")
        if self.configured_dialect == "auto":
            self.dialect = _LEARNED_DIALECTS.get((self.endpoint, self.model), DIALECT_ORDER[0])
        else:
            self.dialect = self.configured_dialect
        self._hosted = hosted
        # Our own client (the SDK's class, on whichever httpx it uses): LangChain's default is
        # shared process-wide, and connections opened in one event loop break in the next.
        self._http = async_http_client(openai, settings)
        self.client = choose_client(settings.client, DEFAULT_CLIENT)
        self._raw = RawChatClient(self.endpoint, api_key or NO_KEY_PLACEHOLDER, settings.timeout_s)
        self._sdk = openai.AsyncOpenAI(
            api_key=api_key or NO_KEY_PLACEHOLDER,
            base_url=self.endpoint,
            max_retries=0,
            timeout=settings.timeout_s,
            http_client=self._http,
        )
        self._chat = ChatOpenAI(
            model=spec.model,
            api_key=SecretStr(api_key or NO_KEY_PLACEHOLDER),
            base_url=self.endpoint,
            max_retries=0,
            timeout=settings.timeout_s,
            http_async_client=self._http,
            use_responses_api=False,
        )
        self._format_cache: dict[tuple[type[BaseModel], str], dict[str, Any]] = {}
        self._settings = settings
        self._batcher: Batcher | None = None

    def attach_batching(self, rounds: Rounds, store: Store | None, sleep: Sleep) -> None:
        """Send every request through the Batch API in rounds (``delivery=batch``)."""
        backend = OpenAIBatchBackend(self._sdk, self.endpoint)
        self._batcher = Batcher(
            backend,
            rounds,
            store,
            poll_s=self._settings.batch_poll_s,
            timeout_s=self._settings.batch_timeout_s,
            sleep=sleep,
        )

    @property
    def supports_images(self) -> bool:
        """Whether images are sent now: under ``auto``, until the endpoint said it takes none."""
        if self.send_images == "auto":
            return (self.endpoint, self.model) not in _TEXT_ONLY_MODELS
        return bool(self.send_images)

    async def aclose(self) -> None:
        """Close this client's connections (the layer calls it when a run ends)."""
        await self._raw.aclose()
        await self._http.aclose()

    def _format_kwargs(self, schema: type[BaseModel], dialect: str) -> dict[str, Any]:
        """Request arguments that ask for ``schema`` in ``dialect`` (built once per pair)."""
        cached = self._format_cache.get((schema, dialect))
        if cached is not None:
            return cached
        document = schema_document(schema)[0]
        name = schema_name(schema)
        kwargs: dict[str, Any]
        # response_format rides in the body (extra_body), not as ChatOpenAI's kwarg: the kwarg
        # routes through the SDK's parse() helper, which re-walks the schema client-side and
        # raises on finish reasons we classify ourselves; the wire request is the same.
        if dialect == "json_schema":
            spec = {"name": name, "schema": document, "strict": False}
            kwargs = {"response_format": {"type": "json_schema", "json_schema": spec}}
        elif dialect == "json_object_schema":
            kwargs = {"response_format": {"type": "json_object", "schema": document}}
        elif dialect == "tools":
            function = {
                "name": name,
                "description": document.get("description") or f"Return the {name} object.",
                "parameters": document,
            }
            kwargs = {
                "tools": [{"type": "function", "function": function}],
                "tool_choice": {"type": "function", "function": {"name": name}},
            }
        else:
            kwargs = {}
        self._format_cache[(schema, dialect)] = kwargs
        return kwargs

    def _param_kwargs(self, params: GenerationParams, timeout: float | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"temperature": params.temperature}
        if self._hosted:
            kwargs["max_tokens"] = params.max_tokens  # sent as max_completion_tokens
        else:  # older servers know only max_tokens; ChatOpenAI would rename it
            kwargs["extra_body"] = {"max_tokens": params.max_tokens}
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.top_logprobs is not None:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = params.top_logprobs
        if timeout is not None:
            kwargs["timeout"] = timeout
        return kwargs

    def _request_body(
        self, messages: list[Message], instruction: str | None, params: GenerationParams
    ) -> dict[str, Any]:
        """The Chat Completions body ChatOpenAI would send for the same call."""
        body: dict[str, Any] = {
            "model": self.model,
            "stream": False,
            "messages": wire_messages(messages, image_block, instruction),
            "temperature": params.temperature,
        }
        body["max_completion_tokens" if self._hosted else "max_tokens"] = params.max_tokens
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = params.top_logprobs
        return body

    async def complete(
        self,
        messages: list[Message],
        schema: type[BaseModel],
        params: GenerationParams,
        timeout: float | None,
    ) -> ProviderResponse:
        while True:
            dialect = self.dialect
            instruction = schema_instruction(schema) if dialect == "text" else None
            try:
                return await self._send(messages, instruction, schema, params, timeout)
            except Exception as exc:
                error = classify(exc)  # a ProviderError stays itself
                if self._images_rejected(error, messages):
                    raise ProviderError(
                        "images_unsupported",
                        f"{self.endpoint} ({self.model}) takes no images: {error.message}",
                        status_code=error.status_code,
                    ) from exc
                if not self._rejects_dialect(error):
                    if error is exc:
                        raise
                    raise error from exc
                if self._next_dialect(dialect):
                    continue
                raise self._unsupported(dialect, error) from exc

    def _images_rejected(self, error: ProviderError, messages: list[Message]) -> bool:
        """Under ``auto``, a request with images that the server refused because its model takes
        none: remembered for the endpoint and model (checked before the retry policy sees the
        error, since llama.cpp's 500 would otherwise be retried as a server fault)."""
        if self.send_images != "auto" or not any(m.images for m in messages):
            return False
        if not rejects_images(error):
            return False
        _TEXT_ONLY_MODELS.add((self.endpoint, self.model))
        return True

    def _next_dialect(self, dialect: str) -> bool:
        """Under ``auto``, move to the next dialect (remembered for the endpoint); False when
        the dialect was configured or none is left."""
        if self.configured_dialect != "auto" or dialect == DIALECT_ORDER[-1]:
            return False
        self.dialect = DIALECT_ORDER[DIALECT_ORDER.index(dialect) + 1]
        _LEARNED_DIALECTS[(self.endpoint, self.model)] = self.dialect
        return True

    def _unsupported(self, dialect: str, error: ProviderError) -> ProviderError:
        return ProviderError(
            "unsupported",
            f"{self.endpoint} rejected the {dialect!r} structured-output dialect "
            f"({error.message}); choose another with dialect=json_schema, "
            "json_object_schema, tools, text or auto",
            status_code=error.status_code,
        )

    async def _send(
        self,
        messages: list[Message],
        instruction: str | None,
        schema: type[BaseModel],
        params: GenerationParams,
        timeout: float | None,
    ) -> ProviderResponse:
        """One request in the current dialect, sent as the ``client`` setting says (the body on
        the wire is the same each way)."""
        dialect = self.dialect
        fmt = self._format_kwargs(schema, dialect)
        if self._batcher is not None:  # one line of the next round's batch
            body = self._request_body(messages, instruction, params) | fmt
            batch_id, line = await self._batcher.ask(body)
            response = parse_completion(completion_text(line), dialect, self.endpoint)
            response.extra["batch_id"] = batch_id
            return response
        if self.client == "langchain":
            kwargs = self._param_kwargs(params, timeout)
            if "response_format" in fmt:
                kwargs["extra_body"] = kwargs.get("extra_body", {}) | fmt
            else:
                kwargs |= fmt
            answer = await self._chat.ainvoke(to_langchain(messages, instruction), **kwargs)
            return self._response(answer, dialect)
        body = self._request_body(messages, instruction, params) | fmt
        if self.client == "raw":
            text = await self._raw.post(body, timeout)
        else:
            options: RequestOptions = {} if timeout is None else {"timeout": timeout}
            text = await self._sdk.post(
                "/chat/completions", cast_to=str, body=body, options=options
            )
        return parse_completion(text, dialect, self.endpoint)

    def _rejects_dialect(self, error: ProviderError) -> bool:
        """Did a self-hosted server reject the structured-output request itself?

        llama.cpp answers 500 (not 400) to ``json_schema``, which would otherwise be retried as a
        server fault; hosted OpenAI's 400s about schemas are real errors and pass through.
        """
        return (
            not self._hosted
            and error.kind in ("bad_request", "server")
            and error.status_code in (400, 404, 422, 500, 501)
            and bool(_DIALECT_REJECTION.search(error.message))
        )

    def _response(self, answer: AIMessage, dialect: str) -> ProviderResponse:
        meta = answer.response_metadata or {}
        finish = meta.get("finish_reason")
        text = message_text(answer)
        refusal = answer.additional_kwargs.get("refusal")
        if refusal:
            raise ProviderError("refused", f"the model refused: {refusal}", raw_text=refusal)
        if finish == "content_filter":
            raise ProviderError("refused", "the content filter stopped the answer", raw_text=text)
        parsed: dict[str, Any] | None = None
        if dialect == "tools" and answer.tool_calls:
            parsed = answer.tool_calls[0]["args"]
            text = json.dumps(parsed, ensure_ascii=False)
        elif dialect == "tools" and answer.invalid_tool_calls:
            text = answer.invalid_tool_calls[0].get("args") or ""
        return with_logprobs(
            langchain_response(answer, text, parsed, finish, dialect), meta.get("logprobs")
        )


def make_openai_provider(spec: ModelSpec, settings: RoleSettings) -> OpenAIChatProvider:
    """Registry factory for ``openai:`` and ``openai-compatible:`` specs."""
    return OpenAIChatProvider(spec, settings, read_key(spec, settings))
