"""Greedy decoding under a grammar that consults the grammar only when it must.

llama-cpp-python builds one sampler chain per call: its logits processors (a Python callback),
the penalties, the grammar, greedy. The grammar sampler checks every one of the vocabulary's
151,936 tokens against the grammar at every step. Measured on ``local:qwen2.5-1.5b`` (one
explainer call, 120 output tokens, two shared cores): 118-146 s with the grammar, 38 s without
it; the grammar is most of the demo's decoding time.

Greedy decoding picks the highest-scoring token the grammar allows. When the highest-scoring
token of all is allowed, that is the same token, so it is enough to ask the grammar about that
one token; only when it is refused is the grammar applied to the whole vocabulary (llama.cpp's
own ``common_sampler`` does the same). The output is the same token for token (the test runs
both on the real model); the grammar's state advances by the chosen token either way.

The logits processors (the repeated n-gram penalty, the call's deadline) are called here in
Python, before the choice, in the order llama-cpp-python calls them. A processor that raises
now stops the call: inside llama-cpp-python's ctypes callback the exception was printed and
swallowed, so a local call's ``timeout_s`` never ended it. Calls the lazy grammar does not
apply to (sampled, unconstrained) keep llama-cpp-python's chain, with the processors run the
same way, in Python, first (:class:`ProcessorsFirst`).

Used only where it is equivalent: temperature 0, no mirostat, neutral penalties, a grammar
given. ``ICM_LLAMA_LAZY_GRAMMAR=0`` turns it off (the chain as llama-cpp-python builds it,
with the processors still run first in Python).
"""

from __future__ import annotations

import ctypes
import os
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

LAZY_ENV = "ICM_LLAMA_LAZY_GRAMMAR"
#: llama.cpp's ``llama_token_data`` as numpy sees it
TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


def lazy_grammar_enabled() -> bool:
    """``ICM_LLAMA_LAZY_GRAMMAR`` (default on; ``0``, ``false`` or ``off`` turns it off)."""
    return os.environ.get(LAZY_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


class LazyGrammarGreedy:
    """A stand-in for llama-cpp-python's ``LlamaSampler`` (``sample``, ``accept``, ``reset``,
    ``close``) for greedy decoding under a grammar."""

    def __init__(self, llama: Any, grammar: Any, processors: Sequence[Any] | None = None) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._llama = llama
        self._processors = list(processors or [])
        self._n_vocab = int(llama.n_vocab())
        self._grammar = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self._grammar:
            raise ValueError("llama.cpp could not build a sampler from the grammar")
        # one token's array for the cheap check, the whole vocabulary's for the fallback
        self._one = (llama_cpp.llama_token_data * 1)()
        self._all = (llama_cpp.llama_token_data * self._n_vocab)()
        self._one_view = np.frombuffer(memoryview(self._one), dtype=TOKEN_DATA)
        self._all_view = np.frombuffer(memoryview(self._all), dtype=TOKEN_DATA)
        self.checked = 0
        """Tokens whose choice took one grammar check."""
        self.full = 0
        """Tokens for which the grammar was applied to the whole vocabulary."""

    def _scores(self, ctx: Any, idx: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(ctx.ctx, idx)
        scores = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).copy()
        for processor in self._processors:
            scores = processor(self._llama._input_ids, scores)
        return scores

    def _allowed(self, token: int, score: float) -> bool:
        one = self._one_view
        one["id"], one["logit"], one["p"] = token, score, 0.0
        array = self._lib.llama_token_data_array(
            data=ctypes.cast(self._one, self._lib.llama_token_data_p), size=1, selected=-1,
            sorted=False,
        )  # fmt: skip
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return bool(np.isfinite(one["logit"][0]))

    def _constrained_best(self, scores: np.ndarray) -> int:
        view = self._all_view
        view["id"] = np.arange(self._n_vocab, dtype=np.intc)
        view["logit"] = scores
        view["p"] = 0.0
        array = self._lib.llama_token_data_array(
            data=ctypes.cast(self._all, self._lib.llama_token_data_p), size=self._n_vocab,
            selected=-1, sorted=False,
        )  # fmt: skip
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        size = int(array.size)
        kept = view[:size]
        return int(kept["id"][int(np.argmax(kept["logit"]))])

    def sample(self, ctx: Any, idx: int = -1) -> int:
        scores = self._scores(ctx, idx)
        token = int(np.argmax(scores))
        if self._allowed(token, float(scores[token])):
            self.checked += 1
        else:
            self.full += 1
            token = self._constrained_best(scores)
        self._lib.llama_sampler_accept(self._grammar, token)
        return token

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._grammar, token)

    def reset(self) -> None:
        self._lib.llama_sampler_reset(self._grammar)

    def close(self) -> None:
        if self._grammar:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None

    def __del__(self) -> None:
        self.close()


def _equivalent(kwargs: dict[str, Any]) -> bool:
    """Whether the chain llama-cpp-python would build is greedy + grammar (+ processors)."""
    return (
        kwargs.get("grammar") is not None
        and kwargs.get("temp", 0.8) == 0.0
        and kwargs.get("mirostat_mode", 0) == 0
        and kwargs.get("repeat_penalty", 1.0) == 1.0
        and kwargs.get("frequency_penalty", 0.0) == 0.0
        and kwargs.get("presence_penalty", 0.0) == 0.0
    )


class ProcessorsFirst:
    """llama-cpp-python's own chain with the logits processors run here, in Python, on the
    context's logits before the chain reads them: the same scores reach the chain as when the
    chain called them first, and an exception a processor raises ends the call."""

    def __init__(self, inner: Any, llama: Any, processors: Sequence[Any]) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._inner = inner
        self._llama = llama
        self._processors = list(processors)
        self._n_vocab = int(llama.n_vocab())

    def sample(self, ctx: Any, idx: int = -1) -> int:
        pointer = self._lib.llama_get_logits_ith(ctx.ctx, idx)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        for processor in self._processors:
            logits[:] = processor(self._llama._input_ids, logits)
        return int(self._inner.sample(ctx, idx))

    def accept(self, token: int) -> None:
        self._inner.accept(token)

    def reset(self) -> None:
        self._inner.reset()

    def close(self) -> None:
        self._inner.close()


def attach_lazy_grammar(llama: Any) -> None:
    """Make ``llama`` build a :class:`LazyGrammarGreedy` wherever it is equivalent, and run the
    logits processors in Python (:class:`ProcessorsFirst`) everywhere else.

    ``Llama.generate`` builds its sampler with ``self._init_sampler(...)``; an instance
    attribute of that name takes its place for this one model."""
    original = type(llama)._init_sampler

    def init_sampler(self: Any, **kwargs: Any) -> Any:
        processors = kwargs.get("logits_processor")
        if lazy_grammar_enabled() and _equivalent(kwargs):
            return LazyGrammarGreedy(self, kwargs["grammar"], processors)
        if not processors:
            return original(self, **kwargs)
        inner = original(self, **(kwargs | {"logits_processor": None}))
        return ProcessorsFirst(inner, self, processors)

    llama._init_sampler = types.MethodType(init_sampler, llama)
