"""JSON-schema-constrained decoding for in-process transformers models, with xgrammar.

A 135M model does not write JSON on its own (OFFLINE_MODELS.md: 0/6 valid unconstrained). Here
the schema of the call becomes a grammar, and at every step the tokens that would break it are
masked out, so the text is always a prefix of a schema-valid object and ends only when the object
is complete. The schema's bounds (``maxLength``, ``minItems``/``maxItems``, enums, number
ranges) are enforced token by token; that is how a tiny model is kept from rambling.

Two ways to decode, same grammar:

* :func:`decode` - our own greedy/sampling loop for causal LMs, with *jump-forward*: where the
  grammar allows exactly one continuation (keys, ``", "``, ``": "``, closing brackets, a
  one-value enum), that text is fed to the model in a single forward pass instead of one pass per
  token. Object keys are a large share of a structured answer, so this saves steps; it also stops
  as soon as the object is closed instead of spending a step on the end-of-turn token.
* :func:`logits_processor` - xgrammar's stateful ``LogitsProcessor`` for ``model.generate``; used
  for image-text-to-text models, whose forward needs model-specific input preparation
  (pixel values, multimodal positions) that ``generate`` already knows.

Known limits (xgrammar 0.2.8): a string with a length bound is compiled as a pattern (see
:func:`grammar_schema`), so it cannot contain escapes (no ``"``, backslash or newline inside);
``uniqueItems``, ``not`` and ``if``/``then`` are accepted but not enforced; properties are
written in schema order; a ``oneOf`` whose branches overlap is treated as ``anyOf``;
``pattern`` supports the regex subset xgrammar parses.
Whatever the grammar cannot enforce, the layer's pydantic validation still catches (and re-asks).
Compiling takes 0.05-0.3 s per schema (the agents' schemas, SmolLM2's 49k-token vocabulary),
once per schema and process: compiled grammars are cached here.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xgrammar as xgr
from pydantic import BaseModel
from transformers import DynamicCache, PreTrainedTokenizerBase

#: schema keys left out of the prompt copy (pydantic's titles repeat the field names); so is
#: ``additionalProperties: false``, which the grammar enforces anyway
_SCHEMA_PROMPT_DROP = frozenset({"title"})
#: JSON string content without quotes, backslashes or control characters, of bounded length
_BOUNDED_STRING = r'^[^"\\\x00-\x1f]{{{low},{high}}}$'
_STRING_SHAPES = frozenset({"pattern", "format", "enum", "const"})


def schema_json(schema: type[BaseModel]) -> str:
    """The schema as compiled: :func:`grammar_schema`, property order kept (never sorted)."""
    return json.dumps(grammar_schema(schema.model_json_schema()), ensure_ascii=False)


def grammar_schema(node: Any) -> Any:
    """A copy of a JSON schema with string length bounds rewritten as a pattern.

    xgrammar 0.2.8 compiles ``minLength``/``maxLength`` to a character class that lets raw
    control characters (U+0000-U+001F) through, which is invalid JSON (seen: a random model
    wrote ``\x0f`` into a bounded string and pydantic rejected the object). The pattern
    ``^[^"\\\x00-\x1f]{min,max}$`` bounds the same code points, keeps control characters
    out, and compiles ~10x faster for long bounds. Strings that already have a ``pattern``,
    ``format``, ``enum`` or ``const`` are left alone.
    """
    if isinstance(node, list):
        return [grammar_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: grammar_schema(v) for k, v in node.items()}
    bounded = "minLength" in out or "maxLength" in out
    if bounded and out.get("type") == "string" and not _STRING_SHAPES & out.keys():
        low = int(out.pop("minLength", 0))
        high = out.pop("maxLength", None)
        out["pattern"] = _BOUNDED_STRING.format(low=low, high="" if high is None else int(high))
    return out


def prompt_schema(schema: type[BaseModel]) -> str:
    """A compact, readable form of the schema for the prompt: refs inlined, titles dropped.

    The grammar already enforces the structure; the prompt copy is there so the model knows what
    each field means (descriptions) and how long it may be. Small models cannot follow ``$ref``
    and every token of prompt costs prefill time, hence inlining and dropping titles. A recursive
    schema keeps its ``$defs`` and refs (inlining would not terminate).
    """
    raw = schema.model_json_schema()
    defs = raw.get("$defs", {})
    inline = not _is_recursive(defs)
    if inline:
        raw.pop("$defs", None)

    def tidy(node: Any) -> Any:
        if isinstance(node, list):
            return [tidy(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if inline and isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.rsplit("/", 1)[-1]
            if name in defs:
                return tidy({**defs[name], **{k: v for k, v in node.items() if k != "$ref"}})
        out = {}
        for key, value in node.items():
            if key in ("properties", "$defs") and isinstance(value, dict):
                out[key] = {name: tidy(sub) for name, sub in value.items()}  # names, not keywords
            elif key not in _SCHEMA_PROMPT_DROP and not (
                key == "additionalProperties" and value is False
            ):
                out[key] = tidy(value)
        return out

    return json.dumps(tidy(raw), ensure_ascii=False, separators=(",", ":"))


def _is_recursive(defs: dict[str, Any]) -> bool:
    """Whether some definition refers to itself, directly or not (then ``$defs`` must stay)."""
    refs = {name: set(_refs_in(body)) for name, body in defs.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in refs.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    return any(reaches(name, name, {name}) for name in defs)


def _refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = []
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            found.append(ref.rsplit("/", 1)[-1])
        for value in node.values():
            found.extend(_refs_in(value))
        return found
    if isinstance(node, list):
        return [r for value in node for r in _refs_in(value)]
    return []


class GrammarBackend:
    """Grammars for one tokenizer: its xgrammar vocabulary info, compiler and compiled schemas.

    Building the tokenizer info walks the whole vocabulary and compiling a schema takes up to
    ~0.3 s, so both happen once per model and schema per process.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_token_ids: list[int]
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = list(stop_token_ids)
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=self.stop_token_ids
        )
        # xgrammar 0.2.8's own compiler cache fails an internal check on long bounded patterns
        # ("per_rule_fsm_hashes ... has_value()"); compiled grammars are cached below instead.
        self._compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)
        self._compiled: dict[str, xgr.CompiledGrammar] = {}
        self._lock = threading.Lock()

    def compile(self, schema: type[BaseModel]) -> xgr.CompiledGrammar:
        """The compiled grammar for ``schema`` (cached by its JSON text)."""
        text = schema_json(schema)
        with self._lock:
            compiled = self._compiled.get(text)
            if compiled is None:
                compiled = self._compiler.compile_json_schema(text, any_whitespace=False)
                self._compiled[text] = compiled
            return compiled

    def text(self, token_ids: list[int]) -> str:
        """Token ids back to text exactly: no special tokens, no "clean-up" of spaces (which
        would rewrite ``" ,"`` inside the model's strings)."""
        text = self.tokenizer.decode(
            token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        assert isinstance(text, str)  # one sequence of ids decodes to one string
        return text

    def allowed_tokens(self, bitmask: torch.Tensor) -> np.ndarray:
        """Token ids a filled bitmask allows (one set bit per allowed token)."""
        bits = np.unpackbits(bitmask[0].numpy().view(np.uint8), bitorder="little")
        return np.flatnonzero(bits[: self.vocab_size])


def logits_processor(compiled: xgr.CompiledGrammar) -> xgr.contrib.hf.LogitsProcessor:
    """A fresh processor for one ``generate`` call (it keeps the matcher state of that call)."""
    return xgr.contrib.hf.LogitsProcessor(compiled)


@dataclass
class Decoded:
    """What one constrained decode produced."""

    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    forced_tokens: int
    """Of ``token_ids``, how many were fed by jump-forward rather than chosen by the model."""


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy when ``temperature`` is 0."""

    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None


class DecodeTimeout(TimeoutError):
    """The decode ran past its deadline (raised between steps, never mid-forward)."""


def decode(
    model: torch.nn.Module,
    backend: GrammarBackend,
    compiled: xgr.CompiledGrammar,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    deadline: float | None = None,
    jump_forward: bool = True,
) -> Decoded:
    """Decode one answer of a causal LM under ``compiled``; the model's KV cache spans steps.

    ``input_ids`` is the rendered prompt, shape (1, n). ``deadline`` is a ``time.monotonic()``
    value; past it :class:`DecodeTimeout` is raised. Stops when the grammar allows nothing but a
    stop token (finish ``stop``) or after ``max_new_tokens`` tokens, forced ones included
    (finish ``length``; the text is then an unfinished JSON prefix).
    """
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, backend.vocab_size)
    stop = set(backend.stop_token_ids)
    generator = _generator(sampling)
    out: list[int] = []
    forced_total = 0
    with torch.inference_mode():
        config: Any = model.config  # a transformers config (Module.__getattr__ types it loosely)
        cache = DynamicCache(config=config)
        feed = input_ids
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise DecodeTimeout(
                    f"constrained decode passed its deadline after {len(out)} tokens"
                )
            result = model(input_ids=feed, cache=cache, use_cache=True, logits_to_keep=1)
            logits = result.logits[:, -1, :].float()  # vocab_size is the logits' width
            matcher.fill_next_token_bitmask(bitmask)
            xgr.apply_token_bitmask_inplace(logits, bitmask)
            token = _choose(logits, sampling, generator)
            if token in stop:
                return Decoded(out, "stop", forced_total)
            if not matcher.accept_token(token):  # cannot happen: the token came from the mask
                raise RuntimeError(f"grammar rejected token {token} it allowed")
            out.append(token)
            if _only_stop_left(matcher, backend, bitmask, stop):
                return Decoded(out, "stop", forced_total)
            if len(out) >= max_new_tokens:
                return Decoded(out, "length", forced_total)
            forced = (
                _jump_forward(matcher, backend, max_new_tokens - len(out)) if jump_forward else []
            )
            out.extend(forced)
            forced_total += len(forced)
            if forced and _only_stop_left(matcher, backend, bitmask, stop):
                return Decoded(out, "stop", forced_total)
            if len(out) >= max_new_tokens:
                return Decoded(out, "length", forced_total)
            feed = torch.tensor([[token, *forced]], dtype=input_ids.dtype)


def _generator(sampling: Sampling) -> torch.Generator | None:
    if sampling.temperature <= 0:
        return None
    generator = torch.Generator()
    if sampling.seed is not None:
        generator.manual_seed(sampling.seed)
    else:
        generator.seed()
    return generator


def _choose(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0, else temperature + optional nucleus sampling."""
    if sampling.temperature <= 0 or generator is None:
        return int(torch.argmax(logits, dim=-1))
    probs = torch.softmax(logits / sampling.temperature, dim=-1)[0]
    if sampling.top_p is not None and sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=0) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def _only_stop_left(
    matcher: xgr.GrammarMatcher, backend: GrammarBackend, bitmask: torch.Tensor, stop: set[int]
) -> bool:
    """True once the object is complete and the grammar allows nothing but a stop token.

    Ending here saves the forward pass that would only pick the end-of-turn token.
    """
    if not matcher.is_completed():
        return False
    matcher.fill_next_token_bitmask(bitmask)
    return all(int(t) in stop for t in backend.allowed_tokens(bitmask))


def _jump_forward(matcher: xgr.GrammarMatcher, backend: GrammarBackend, budget: int) -> list[int]:
    """Tokens for the text the grammar forces next, already accepted by ``matcher``.

    The forced text is tokenized the tokenizer's own way and its last token is held back: the
    model then picks the token at that boundary itself, so a forced ``"`` can still merge with
    the word the model writes next the way it was trained. Tokenizers that do not round-trip the
    text (e.g. SentencePiece adding a leading space) get no jump-forward for that step.
    """
    text = matcher.find_jump_forward_string()
    if not text:
        return []
    ids = backend.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < 2 or backend.text(ids) != text:
        return []
    forced = ids[:-1][:budget]
    for n, token in enumerate(forced):
        if not matcher.accept_token(token):
            if n:
                matcher.rollback(n)
            return []
    return forced
