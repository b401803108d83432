"""The outcome of one model call, as the agents see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)

#: ``ok`` (validated value), ``parse_failed`` (raw text kept), ``refused`` (never cached),
#: ``failed`` (error kept), ``too_large`` (the answer exceeded the role's ``max_answer_bytes``:
#: not parsed, not cached, raw text kept cut at the bound). Only ``ok`` carries a value; nothing
#: is ever filled with a default.
Status = Literal["ok", "parse_failed", "refused", "failed", "too_large"]


@dataclass
class CallResult(Generic[T]):
    """One ``ModelLayer.call``: the value when ``ok``, otherwise why not, plus its accounting.

    ``call_id`` is the ``llm_calls`` row of the last attempt (after refusal retries or a
    refusal fallback, that attempt's row; ``fallback_from`` names the refused one). On a cache
    hit tokens and cost are 0: nothing was sent and nothing paid.
    """

    status: Status
    value: T | None
    raw_text: str | None
    error: str | None
    call_id: str
    cache_hit: bool
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float
    cost_usd: float | None
    model_spec: str
    role: str
    requests: int = 0
    parse_attempts: int = 0
    fallback_from: str | None = None
    error_kind: str | None = None
    """The classified error of a ``failed``/``refused`` call (``rate_limited``, ``refused``,
    ``images_unsupported``...); None for ``ok`` and ``parse_failed``."""
    refusals: int = 0
    """How many attempts of this call were refused (retries and fallback included)."""
    cached_input_tokens: int | None = None
    """Of ``input_tokens``, those the provider read from its prompt cache (priced at the
    cached rate; None where nothing was sent)."""
    cache_write_tokens: int | None = None
    """Of ``input_tokens``, those written to the provider's prompt cache (Anthropic)."""
    logprobs: list[dict[str, Any]] | None = None
    """The answer's tokens with their log-probabilities and top alternatives, in the Chat
    Completions wire shape (``[{"token", "logprob", "top_logprobs": [...]}, ...]``), when the
    role asked for them (``top_logprobs``) and the API returned them. None otherwise: an API
    without them (Anthropic's), a local model, or a call that was not asked."""

    parsed_json: str | None = None
    """The value as pydantic serialised it for the call's trace row (``llm_calls.parsed_json``);
    the stage recorder stores the same text instead of serialising the value again."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"
