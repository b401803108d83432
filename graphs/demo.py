"""Which offline demo ``python graphs/generate.py`` runs when it is given no arguments.

The stronger local model (``local:qwen2.5-1.5b``, the ``qwen`` extra) when it is installed:
SmolLM2-135M shows the pipeline but cannot do the task (0 of the 14 bundled samples accepted),
while qwen writes records the critic accepts. Without the extra, the SmolLM2 profile as before,
which needs no compiler and no 1.1 GB download. Either way one line says which backend runs and
how to get the stronger one, so a newcomer knows why the results look as they do.

Deciding needs no model load: only whether llama-cpp-python and the 22 weight parts are
installed (:func:`agents.models.llamacpp_loading.qwen_available`, which imports neither).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.models.llamacpp_loading import QWEN_INSTALL, QWEN_KEY, qwen_available
from agents.models.settings import DEFAULT_SPEC as SMOLLM2_KEY

CONFIGS = Path(__file__).resolve().parent / "configs"
#: every role on local:smollm2: short texts, no critic-driven retries
SMOLLM2_DEMO = CONFIGS / "offline_demo.yaml"
#: every role on local:qwen2.5-1.5b: full-length texts, one critic-driven retry
QWEN_DEMO = CONFIGS / "offline_qwen.yaml"


@dataclass(frozen=True)
class DemoChoice:
    """The demo's config file, the model every role runs on, and the line that says so."""

    config: Path
    model: str
    line: str


def choose_demo(available: Callable[[], bool] | None = None) -> DemoChoice:
    """The qwen profile when the ``qwen`` extra is installed (``available``, default
    :func:`qwen_available`, says whether), else SmolLM2's."""
    if (available or qwen_available)():
        return DemoChoice(
            QWEN_DEMO,
            QWEN_KEY,
            f"offline demo: bundled samples, every role on {QWEN_KEY} (llama.cpp, the qwen "
            f"extra) ({QWEN_DEMO})",
        )
    return DemoChoice(
        SMOLLM2_DEMO,
        SMOLLM2_KEY,
        f"offline demo: bundled samples, every role on {SMOLLM2_KEY} ({SMOLLM2_DEMO}); a 135M "
        f"model cannot write acceptable records. For the stronger {QWEN_KEY}: {QWEN_INSTALL}",
    )
