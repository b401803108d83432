"""The no-repeat n-gram processor of the llama.cpp provider (issue 15: greedy qwen looped)."""

from __future__ import annotations

import pytest

from agents.models.base import ProviderError
from agents.models.ngram_penalty import NGRAM_ENV, RepeatedNgramPenalty, ngram_size

PROMPT = [101, 102, 103, 104]


def _decode(processor: RepeatedNgramPenalty, prompt: list[int], wants: list[int]) -> list[int]:
    """Greedy decoding where the model always prefers ``wants[i]`` (score 10) over token 0
    (score 1); returns what was chosen."""
    ids = list(prompt)
    for want in wants:
        scores = [1.0] + [0.0] * 199
        scores[want] = 10.0
        scores = processor(ids, scores)
        ids.append(max(range(len(scores)), key=lambda t: scores[t]))
    return ids[len(prompt) :]


def test_a_repeated_sentence_is_stopped_at_its_nth_token() -> None:
    sentence = [11, 12, 13, 14, 15]
    chosen = _decode(RepeatedNgramPenalty(n=3), PROMPT, sentence + sentence)
    # the second copy may start with two tokens (11, 12); the third (13) would repeat 11 12 13
    assert chosen[:7] == [11, 12, 13, 14, 15, 11, 12] and chosen[7] == 0


def test_copying_the_prompt_is_not_a_repeat() -> None:
    chosen = _decode(RepeatedNgramPenalty(n=3), PROMPT, PROMPT)
    assert chosen == PROMPT


def test_shorter_repeats_pass_and_a_forced_token_still_wins() -> None:
    # a 3-token repeat under n=4 passes
    assert _decode(RepeatedNgramPenalty(n=4), PROMPT, [5, 6, 7, 5, 6, 7]) == [5, 6, 7, 5, 6, 7]
    # under n=3 token 7 would repeat "5 6 7"; when it is the only token allowed (the others at
    # -inf, as a grammar leaves them) it is still the one chosen
    processor = RepeatedNgramPenalty(n=3)
    assert _decode(processor, PROMPT, [5, 6, 7, 5, 6]) == [5, 6, 7, 5, 6]
    scores = [float("-inf")] * 10
    scores[7] = 3.0
    out = processor([*PROMPT, 5, 6, 7, 5, 6], scores)
    assert out[7] < 0 and max(range(10), key=lambda t: out[t]) == 7


def test_the_size_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NGRAM_ENV, raising=False)
    assert ngram_size() == 7
    monkeypatch.setenv(NGRAM_ENV, "0")
    assert ngram_size() is None
    monkeypatch.setenv(NGRAM_ENV, "1")
    with pytest.raises(ProviderError, match=NGRAM_ENV):
        ngram_size()
