"""Types shared by every model provider and by the layer that calls them.

A provider does one thing: send rendered messages plus a JSON schema to one model and return
its raw answer (or raise a classified :class:`ProviderError`). Everything around that call
(retries, re-asking after a parse failure, caching, accounting, traces) lives once in the layer,
so every provider behaves the same and a new provider is one file plus one registry line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

ErrorKind = Literal[
    "rate_limited",  # 429: retry after Retry-After
    "server",  # 5xx: retry with backoff
    "timeout",  # no answer in time: retry with backoff
    "connection",  # refused/reset: retry with backoff
    "bad_request",  # 400/404/422: fail fast with the provider's message
    "auth",  # 401/403: fail fast
    "refused",  # the model or its content filter declined: never cached
    "unsupported",  # the endpoint cannot do what was asked (e.g. a structured-output dialect)
    "images_unsupported",  # the endpoint's model takes no images: the layer asks text-only
]

RETRYABLE_KINDS: frozenset[str] = frozenset({"rate_limited", "server", "timeout", "connection"})


class ProviderError(Exception):
    """A failed provider call, classified so the layer knows whether and when to retry."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        raw_text: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        self.raw_text = raw_text

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


@dataclass(frozen=True)
class ImageInput:
    """An image ready to send: bytes already resized/re-encoded, identified by content hash.

    ``sha256`` is the hash of the ORIGINAL file's bytes; it stands in for the image in cache keys
    and traces (the bytes themselves never reach the store).
    """

    sha256: str
    media_type: str
    data: bytes = field(repr=False)
    width: int
    height: int


@dataclass(frozen=True)
class Message:
    """One chat message. Images ride on user messages only."""

    role: Literal["system", "user", "assistant"]
    text: str
    images: tuple[ImageInput, ...] = ()
    images_first: bool = False
    """Send the images before the text (default: after it)."""


@dataclass(frozen=True)
class GenerationParams:
    """Parameters that change what a model writes; they are part of the cache key.

    Retries, timeouts and concurrency change only how we ask, so they live in the role settings
    and are kept out of the key.
    """

    temperature: float = 0.0
    max_tokens: int = 1024
    top_p: float | None = None
    seed: int | None = None
    top_logprobs: int | None = None
    """Ask for the answer tokens' log-probabilities with this many alternatives per token
    (OpenAI Chat Completions ``logprobs: true, top_logprobs: N``); None asks for none."""

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (what ``dataclasses.asdict`` gives, without its deep copy: this
        runs several times per model call). ``top_logprobs`` only when asked for, so the cache
        keys of calls that never ask stay what they were."""
        out: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        if self.top_logprobs is not None:
            out["top_logprobs"] = self.top_logprobs
        return out


@dataclass
class ProviderResponse:
    """What a provider returns for one successful HTTP/in-process call.

    ``raw_text`` is the model's text exactly as received (for tool use: the tool arguments as
    JSON text). ``parsed`` is set only where the provider already parsed it (tool arguments);
    the layer validates against the schema either way.
    """

    raw_text: str
    parsed: dict[str, Any] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    refusal: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cached_input_tokens: int | None = None
    """Of ``input_tokens`` (always the whole prompt), those the provider read from its prompt
    cache (OpenAI ``prompt_tokens_details.cached_tokens``, Anthropic
    ``cache_read_input_tokens``); billed at the cached rate."""
    cache_write_tokens: int | None = None
    """Of ``input_tokens``, those written to the prompt cache (Anthropic
    ``cache_creation_input_tokens``); billed at the cache-write rate."""


@runtime_checkable
class Provider(Protocol):
    """A model behind one spec. Implementations live one per file in ``agents/models/providers``."""

    #: ``openai``, ``anthropic``, ``openai-compatible``, ``hf``, ``local``
    provider: str
    #: the model name or path as given in the spec
    model: str
    #: base URL for HTTP providers, a path or package for in-process ones (recorded in traces)
    endpoint: str | None
    #: whether images are sent; text-only models get none and the trace says so
    supports_images: bool

    async def complete(
        self,
        messages: list[Message],
        schema: type[BaseModel],
        params: GenerationParams,
        timeout: float | None,
    ) -> ProviderResponse:
        """Ask once. Raise :class:`ProviderError` for every failure, classified."""
        ...
