"""Provider registry: a spec's provider name -> the factory that builds its :class:`Provider`.

How to add a provider (one file, one line):

1. Write ``agents/models/providers/<name>.py`` with a factory
   ``make_x(spec: ModelSpec, settings: RoleSettings) -> Provider``. The provider implements
   :class:`agents.models.base.Provider`: ``async complete(messages, schema, params, timeout)``
   returns a :class:`ProviderResponse` and raises :class:`ProviderError` (classified) for every
   failure. It never retries, caches or writes traces: the layer does that once for all.
2. Add one entry to ``FACTORIES`` below: ``"<provider name>": "<module path>:<factory name>"``.

Entries are import paths, not imported objects, so a provider's heavy dependencies (torch,
transformers) load only when a role is actually bound to it, and a broken optional provider
cannot break the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.models.base import Provider
    from agents.models.settings import RoleSettings
    from agents.models.spec import ModelSpec

ProviderFactory = Callable[["ModelSpec", "RoleSettings"], "Provider"]

FACTORIES: dict[str, str] = {
    "openai": "agents.models.providers.openai_chat:make_openai_provider",
    "openai-compatible": "agents.models.providers.openai_chat:make_openai_provider",
    "anthropic": "agents.models.providers.anthropic_chat:make_anthropic_provider",
    "hf": "agents.models.providers.local_transformers:make_hf_provider",
    "local": "agents.models.providers.local:make_local_provider",
}

#: providers whose models run in this process: no API key, no network, cost 0
IN_PROCESS_PROVIDERS: frozenset[str] = frozenset({"hf", "local"})


def get_factory(provider: str) -> ProviderFactory:
    """Import and return the factory registered for ``provider``."""
    try:
        target = FACTORIES[provider]
    except KeyError:
        known = ", ".join(sorted(FACTORIES))
        raise ValueError(f"no model provider {provider!r} (registered: {known})") from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(
            f"{module_name} has no factory {attr!r} (registry entry {target})"
        ) from None


def make_provider(spec: ModelSpec, settings: RoleSettings) -> Provider:
    """Build the provider for one spec with its role's resolved settings."""
    return get_factory(spec.provider)(spec, settings)


__all__ = ["FACTORIES", "IN_PROCESS_PROVIDERS", "ProviderFactory", "get_factory", "make_provider"]
