"""A GGUF model in llama.cpp, in this process, as a provider: ``local:qwen2.5-1.5b``.

The answer is decoded under a grammar llama.cpp builds from the call's JSON schema (its own
JSON-schema-to-GBNF converter, the one behind ``response_format={"type": "json_object",
"schema": ...}``), so it is always a prefix of a schema-valid object; the layer still validates
it with pydantic and reports ``parse_failed`` (raw text kept) when it does not validate, e.g.
cut off at ``max_tokens``. The schema also goes into the prompt, compact, so the model knows
what each field means (the same instruction the transformers models get). Calls run on the
model's own worker thread under its lock; a call's ``timeout`` bounds its generation, counted
from when it gets the model. Greedy decoding runs with a no-repeat n-gram penalty
(:mod:`agents.models.ngram_penalty`; ``ICM_LLAMA_NO_REPEAT_NGRAM``, ``0`` turns it off): without
it qwen looped on a sentence until the length bound.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any

from pydantic import BaseModel

from agents.models.base import GenerationParams, Message, ProviderError, ProviderResponse
from agents.models.constrained import prompt_schema
from agents.models.llamacpp_loading import (
    QWEN_KEY,
    QWEN_NAME,
    LlamaModel,
    check_qwen,
    load_qwen,
    qwen_endpoint,
)
from agents.models.model_thread import model_worker, run_on_model_thread
from agents.models.ngram_penalty import RepeatedNgramPenalty, ngram_size
from agents.models.providers.local_transformers import render_chat
from agents.models.settings import RoleSettings
from agents.models.spec import ModelSpec


class _DeadlinePassed(Exception):
    """Raised inside llama.cpp's sampling loop to end a generation that ran out of time."""


class LlamaCppProvider:
    """A llama.cpp model in this process, behind the :class:`Provider` protocol (text only)."""

    def __init__(self, *, model: str, endpoint: str, key: str, load: Any) -> None:
        self.provider = "local"
        self.model = model
        self.endpoint: str | None = endpoint
        self.supports_images = False
        self._worker = model_worker(key)
        self._load = load
        # greedy decoding of a small model loops; see agents/models/ngram_penalty.py
        self._ngram = ngram_size()
        if self._ngram:
            # the decoding differs, so the endpoint (part of the cache key and the trace) says so
            self.endpoint = f"{endpoint} +no-repeat-{self._ngram}gram"

    async def complete(
        self,
        messages: list[Message],
        schema: type[BaseModel],
        params: GenerationParams,
        timeout: float | None,
    ) -> ProviderResponse:
        """Generate one grammar-constrained answer; every failure is a ProviderError."""
        if any(m.images for m in messages):
            raise ProviderError("unsupported", f"local:{self.model} takes no images")
        job = functools.partial(self._complete, messages, schema, params, timeout)
        return await run_on_model_thread(self._worker, job, _DeadlinePassed)

    def warm(self) -> None:
        """Load the model now (the run's warm-up step), on the model's thread."""
        self._worker.submit(self._load).result()

    def _complete(
        self,
        messages: list[Message],
        schema: type[BaseModel],
        params: GenerationParams,
        timeout: float | None,
    ) -> ProviderResponse:
        local: LlamaModel = self._load()
        grammar = schema_grammar(schema)
        chat = render_chat(messages, prompt_schema(schema), with_images=False)
        processors: list[Any] = [RepeatedNgramPenalty(self._ngram)] if self._ngram else []
        with local.lock:
            started = time.perf_counter()
            deadline = time.monotonic() + timeout if timeout else None
            if deadline:
                processors.append(_deadline_check(deadline, timeout))
            _reset_perf(local.llama)
            raw = local.llama.create_chat_completion(
                messages=chat,
                grammar=grammar,
                temperature=params.temperature,
                top_p=params.top_p if params.top_p is not None else 1.0,
                top_k=0 if params.temperature > 0 else 1,
                min_p=0.0,
                repeat_penalty=1.0,  # llama-cpp-python's 1.1 default penalises JSON's own syntax
                max_tokens=params.max_tokens,
                seed=params.seed,
                logits_processor=processors or None,
            )
            elapsed = time.perf_counter() - started
            perf = _perf(local.llama)
        response = _response(raw, elapsed)
        if perf is not None:
            response.extra["llama_perf"] = perf
        return response


#: longest ``maxLength`` put into a grammar. llama.cpp expands a bounded string into one nested
#: rule per character and its parser refuses past a limit ("exceeds sane defaults", seen with
#: the full profile's 1,400-character explanation; 900 worked), after which sampling with the
#: missing grammar crashes the process. Longer bounds are left to pydantic's validation.
MAX_GRAMMAR_LENGTH = 1000


def grammar_schema(node: Any) -> Any:
    """A copy of a JSON schema with string ``maxLength`` above ``MAX_GRAMMAR_LENGTH`` removed."""
    if isinstance(node, list):
        return [grammar_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: grammar_schema(v) for k, v in node.items()}
    if isinstance(out.get("maxLength"), int) and out["maxLength"] > MAX_GRAMMAR_LENGTH:
        del out["maxLength"]
    return out


_grammars: dict[type[BaseModel], Any] = {}
_grammars_lock = threading.Lock()


def schema_grammar(schema: type[BaseModel]) -> Any:
    """llama.cpp's grammar for ``schema`` (its own JSON-schema converter), built once per schema.

    Built here rather than through ``response_format``, which silently falls back to "any JSON"
    when a schema does not convert: an unconvertible schema is an error that names it.
    """
    with _grammars_lock:
        grammar = _grammars.get(schema)
    if grammar is not None:
        return grammar
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(grammar_schema(schema.model_json_schema())))
    except Exception as exc:
        raise ProviderError(
            "unsupported",
            f"llama.cpp cannot turn the {schema.__name__} schema into a grammar: {exc}",
        ) from exc
    grammar = LlamaGrammar.from_string(json_string_chars(gbnf), verbose=False)
    with _grammars_lock:
        _grammars[schema] = grammar
    return grammar


#: the string character rule llama-cpp-python's converter writes: any character but a quote or
#: a backslash, raw control characters included
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
#: JSON's: no raw control character (llama.cpp's own converter and llama-cpp-python's JSON
#: grammar write this)
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def json_string_chars(gbnf: str) -> str:
    """``gbnf`` with strings that can only hold what JSON allows.

    llama-cpp-python 0.3's converter lets a string hold a raw newline; qwen wrote one as the last
    character of a 1,000-character explanation (the grammar's bound), and the answer was not
    JSON: the whole sample failed as ``parse_failed`` where a cut text is the critic's to send
    back. Rules written from a ``pattern`` have their own character classes and are unchanged.
    """
    return "\n".join(
        _JSON_CHAR + line[len(_LOOSE_CHAR) :] if line.startswith(_LOOSE_CHAR) else line
        for line in gbnf.split("\n")
    )


def _reset_perf(llama: Any) -> None:
    """Zero llama.cpp's per-context counters, so :func:`_perf` reads this call alone."""
    try:
        import llama_cpp

        llama_cpp.llama_perf_context_reset(llama._ctx.ctx)
    except (ImportError, AttributeError):  # a stand-in model in tests
        pass


def _perf(llama: Any) -> dict[str, Any] | None:
    """This call's prefill and decode: tokens llama.cpp evaluated and the time each took.

    Prefill counts only the prompt tokens actually evaluated (a prefix restored from an
    earlier call's state is not), so the trace shows what prefix reuse saved."""
    try:
        import llama_cpp

        data = llama_cpp.llama_perf_context(llama._ctx.ctx)
    except (ImportError, AttributeError):
        return None
    return {
        "prefill_tokens": int(data.n_p_eval),
        "prefill_s": round(data.t_p_eval_ms / 1000.0, 3),
        "decode_tokens": int(data.n_eval),
        "decode_s": round(data.t_eval_ms / 1000.0, 3),
    }


def _deadline_check(deadline: float, timeout: float | None) -> Any:
    def check(input_ids: Any, scores: Any) -> Any:
        if time.monotonic() > deadline:
            raise _DeadlinePassed(f"generation passed its {timeout:g} s timeout")
        return scores

    return check


def _response(raw: dict[str, Any], elapsed: float) -> ProviderResponse:
    """The provider response from llama-cpp-python's OpenAI-shaped completion dict."""
    choices = raw.get("choices") or []
    if not choices:
        raise ProviderError("server", "llama.cpp returned no choices")
    choice = choices[0]
    usage = raw.get("usage") or {}
    output_tokens = usage.get("completion_tokens")
    extra: dict[str, Any] = {"decoder": "llama.cpp+json-schema-grammar"}
    extra["generation_s"] = round(elapsed, 3)
    if output_tokens and elapsed > 0:
        extra["tokens_per_s"] = round(output_tokens / elapsed, 2)
    return ProviderResponse(
        raw_text=(choice.get("message") or {}).get("content") or "",
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=output_tokens,
        finish_reason=choice.get("finish_reason"),
        extra=extra,
    )


def make_qwen_provider(spec: ModelSpec, settings: RoleSettings) -> LlamaCppProvider:
    """``local:qwen2.5-1.5b``: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) in llama.cpp, text only.

    Checks here that the extra is installed (a clear error at binding time); the weights are
    joined, verified and loaded on the first call or the run's warm-up, on the model's thread.
    """
    if spec.model != QWEN_NAME:
        raise ProviderError("unsupported", f"{spec.spec}: this provider serves {QWEN_KEY} only")
    if settings.send_images:
        raise ProviderError("unsupported", f"{spec.spec}: send_images=true but it is a text model")
    check_qwen()
    endpoint = qwen_endpoint()
    return LlamaCppProvider(model=spec.model, endpoint=endpoint, key=QWEN_KEY, load=load_qwen)
