"""Greedy decoding under a grammar that asks the grammar about the best token first (issue 22,
item 5: half the demo's time). The output must be the same token for token as llama-cpp-python's
own chain; a processor that raises (the call's deadline) must now end the call. The model tests
need the ``qwen`` extra and are skipped without it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from agents.models.llama_lazy_grammar import LAZY_ENV, _equivalent, lazy_grammar_enabled
from agents.models.llamacpp_loading import QWEN_INSTALL, qwen_available


def test_only_greedy_unpenalised_grammar_calls_are_taken_over() -> None:
    grammar = object()
    greedy = {"grammar": grammar, "temp": 0.0, "repeat_penalty": 1.0}
    assert _equivalent(greedy)
    assert not _equivalent(greedy | {"grammar": None})
    assert not _equivalent(greedy | {"temp": 0.7})  # sampled: the chain's top-k/p/dist
    assert not _equivalent(greedy | {"repeat_penalty": 1.1})  # penalties change the scores
    assert not _equivalent(greedy | {"presence_penalty": 0.5})
    assert not _equivalent(greedy | {"mirostat_mode": 2})


def test_the_switch_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LAZY_ENV, raising=False)
    assert lazy_grammar_enabled()
    for off in ("0", "false", "off"):
        monkeypatch.setenv(LAZY_ENV, off)
        assert not lazy_grammar_enabled()


class Verdict(BaseModel):
    verdict: str = Field(pattern="^(safe|unsafe)$")
    reason: str = Field(min_length=10, max_length=200)
    objects: list[str] = Field(min_length=1, max_length=3)


PROMPT = [
    {"role": "system", "content": "You moderate images. Answer with JSON: verdict, reason, "
     "objects (the objects named)."},
    {"role": "user", "content": "The image shows a kitten asleep on a red sofa beside a lamp. "
     "Is it safe for children? Answer with the JSON object."},
]  # fmt: skip


@pytest.fixture(scope="module")
def llama(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Any]:
    if not qwen_available():
        pytest.skip(f"needs the qwen extra: {QWEN_INSTALL}")
    monkeypatch_module.setenv("ICM_LLAMA_PREFIX_CACHE_MB", "0")  # both ways evaluate alike
    from agents.models.llamacpp_loading import load_qwen

    yield load_qwen().llama


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def _complete(llama: Any, lazy: bool, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> str:
    from agents.models.providers.local_llamacpp import schema_grammar

    monkeypatch.setenv(LAZY_ENV, "1" if lazy else "0")
    llama.reset()  # the prompt evaluated the same way both times (batched, from scratch)
    settings = {"temperature": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0} | extra
    out = llama.create_chat_completion(
        messages=PROMPT, grammar=schema_grammar(Verdict), repeat_penalty=1.0, max_tokens=80,
        **settings,
    )  # fmt: skip
    return str(out["choices"][0]["message"]["content"])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_same_greedy_answer_token_for_token(
    llama: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.models.ngram_penalty import RepeatedNgramPenalty

    chain = _complete(llama, False, monkeypatch, logits_processor=[RepeatedNgramPenalty(7)])
    lazy = _complete(llama, True, monkeypatch, logits_processor=[RepeatedNgramPenalty(7)])
    assert lazy == chain
    Verdict.model_validate(json.loads(lazy))  # and the grammar still held


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("temperature", [0.0, 0.7])  # the lazy grammar; the chain, sampled
def test_a_processor_that_raises_ends_the_call(
    llama: Any, monkeypatch: pytest.MonkeyPatch, temperature: float
) -> None:
    # in llama-cpp-python's chain the processor is a ctypes callback: an exception there is
    # printed and swallowed, and the call ran on to max_tokens; the deadline check relies on it
    seen: list[int] = []

    def stop_after_three(input_ids: Any, scores: Any) -> Any:
        seen.append(len(input_ids))
        if len(seen) > 3:
            raise TimeoutError("past the deadline")
        return scores

    with pytest.raises(TimeoutError, match="past the deadline"):
        _complete(
            llama, True, monkeypatch, logits_processor=[stop_after_three],
            temperature=temperature, top_k=40, seed=1,
        )  # fmt: skip
    assert len(seen) == 4


class LongAnswer(BaseModel):
    story: str = Field(min_length=400, max_length=900)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_local_call_past_its_timeout_fails_as_a_timeout(tmp_path: Any) -> None:
    # before, the deadline check raised inside the ctypes callback: printed, swallowed, and the
    # call decoded on to its end; now the call ends with a timeout at the first token past it
    if not qwen_available():
        pytest.skip(f"needs the qwen extra: {QWEN_INSTALL}")
    from conftest import run_call

    from agents.models import Message, ModelConfig, ModelLayer
    from data.store import Store

    config = ModelConfig.from_mapping(
        {
            "roles": {"all": "local:qwen2.5-1.5b"},
            "settings": {"all": {"timeout_s": "1", "max_retries": "0"}},
        }
    )
    store = Store.open(tmp_path / "calls.duckdb")
    with ModelLayer(config, store) as layer:
        result = run_call(
            layer, role="describer", schema=LongAnswer,
            messages=[Message("user", "Write a long story about a lighthouse keeper.")],
        )  # fmt: skip
    store.close()
    assert result.status == "failed"
    assert "timeout" in (result.error or "").lower()
