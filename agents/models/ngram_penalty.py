"""A logits processor that keeps greedy decoding from repeating itself word for word.

``local:qwen2.5-1.5b`` decodes greedily (temperature 0, so reruns are comparable) with llama.cpp's
repetition penalty off (it penalises JSON's own syntax). A 1.5B model decoded that way falls into
loops: on the bundled samples it wrote "The image is not flagged as NSFW and contains text in the
image, but it does not contain any explicit content." six times in one explanation, and wrote the
same loop again when the critic sent it back with "say each point once" (same greedy path).

This processor lowers the score of every token that would complete an ``n``-gram the answer
already contains (like transformers' ``no_repeat_ngram_size``), counting only the generated
tokens: copying a phrase of the prompt (the description it cites) is not a repeat. The penalty is
large but finite, so where the grammar allows only that token (JSON keys repeat in a list of
items) it is still chosen. Pure Python over token ids: testable without llama.cpp.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from agents.models.base import ProviderError

NGRAM_ENV = "ICM_LLAMA_NO_REPEAT_NGRAM"
#: tokens in the n-gram that may not repeat: long enough that ordinary phrases ("the image is
#: not sexy") may recur, short enough to stop a repeated sentence after a few words
DEFAULT_NGRAM = 7
#: subtracted from a repeating token's logit (logits of this model span about 10-40)
PENALTY = 1e4


class RepeatedNgramPenalty:
    """Called by llama.cpp before each sampled token with every token so far (prompt first)."""

    def __init__(self, n: int = DEFAULT_NGRAM, penalty: float = PENALTY) -> None:
        if n < 2:
            raise ValueError(f"n-gram size must be at least 2, got {n}")
        self.n = n
        self.penalty = penalty
        self._start: int | None = None
        self._generated: list[int] = []
        self._followers: dict[tuple[int, ...], set[int]] = {}

    def __call__(self, input_ids: Sequence[int], scores: Any) -> Any:
        if self._start is None:  # the first call sees the prompt only
            self._start = len(input_ids)
        new = input_ids[self._start + len(self._generated) :]
        for token in list(new):
            self._generated.append(int(token))
            if len(self._generated) >= self.n:
                gram = tuple(self._generated[-self.n :])
                self._followers.setdefault(gram[:-1], set()).add(gram[-1])
        if len(self._generated) >= self.n - 1:
            for token in self._followers.get(tuple(self._generated[-(self.n - 1) :]), ()):
                scores[token] -= self.penalty
        return scores


def ngram_size() -> int | None:
    """The n-gram size from ``ICM_LLAMA_NO_REPEAT_NGRAM`` (default 7; ``0`` turns it off)."""
    value = os.environ.get(NGRAM_ENV, "").strip()
    if not value:
        return DEFAULT_NGRAM
    if not value.isdigit() or int(value) == 1:
        raise ProviderError("bad_request", f"{NGRAM_ENV}={value!r}: use 0 (off) or a size >= 2")
    return int(value) or None
