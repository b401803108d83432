"""``local:<name>``: models that ship inside PyPI packages, each on the runtime that suits it.

``local:smollm2`` (135M) runs on transformers with our grammar decoder; ``local:qwen2.5-1.5b``
(1.5B, 4-bit) runs on llama.cpp, where it is ~5x faster and ~6x smaller in memory than
transformers' fp32 de-quantisation. Each runtime is imported only when its model is bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.models.base import ProviderError

if TYPE_CHECKING:
    from agents.models.base import Provider
    from agents.models.settings import RoleSettings
    from agents.models.spec import ModelSpec


def make_local_provider(spec: ModelSpec, settings: RoleSettings) -> Provider:
    """The provider for one ``local:`` model (its heavy runtime imported here, lazily)."""
    if spec.model == "smollm2":
        # lazy: transformers and torch load only when this model is bound
        from agents.models.providers.local_transformers import make_local_provider as smollm2

        return smollm2(spec, settings)
    if spec.model == "qwen2.5-1.5b":
        # lazy: llama-cpp-python is the optional qwen extra
        from agents.models.providers.local_llamacpp import make_qwen_provider

        return make_qwen_provider(spec, settings)
    raise ProviderError("unsupported", f"{spec.spec}: no local model {spec.model!r}")
