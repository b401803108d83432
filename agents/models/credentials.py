"""API keys: read only from the environment, checked before any work starts, never recorded.

A run that would fail on its hundredth sample because the critic's key is missing should fail
before the first one, saying which variable to set. Keys live in memory only for as long as a
client needs them; the layer redacts their text from anything it writes (errors echo headers
sometimes), so neither the store, nor logs, nor traces ever hold one.
"""

from __future__ import annotations

import os

from agents.models.settings import RoleSettings
from agents.models.spec import ModelSpec
from data.redaction import REDACTED as REDACTED
from data.redaction import known_secrets, register_key_env
from data.redaction import redact as redact_text

#: where each hosted provider's key is looked up unless a role names another variable
DEFAULT_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

#: sent to servers that need no key (vLLM, Ollama, llama.cpp): the OpenAI client requires one
NO_KEY_PLACEHOLDER = "not-needed"


class MissingCredentialsError(RuntimeError):
    """A bound model needs an API key and its environment variable is empty or unset."""

    def __init__(self, env_var: str, spec: ModelSpec, role: str | None = None) -> None:
        self.env_var = env_var
        self.spec = spec
        self.role = role
        who = f"role {role!r} is bound to {spec.label}" if role else f"{spec.label}"
        fix = f"--role {role}=local:smollm2" if role else "another model spec"
        super().__init__(
            f"{who}, which needs an API key in the environment variable {env_var}, and "
            f"{env_var} is not set. Set it (export {env_var}=...) or use {fix}."
        )


def key_env(spec: ModelSpec, settings: RoleSettings) -> str | None:
    """The variable holding the key for ``spec``, or None when it needs no key.

    ``openai-compatible`` endpoints (local servers) need no key unless ``api_key_env`` names
    one; in-process models never do.
    """
    if spec.provider in ("hf", "local"):
        return None
    return settings.api_key_env or DEFAULT_KEY_ENV.get(spec.provider)


def read_key(spec: ModelSpec, settings: RoleSettings, role: str | None = None) -> str | None:
    """The key for ``spec`` from the environment; raises :class:`MissingCredentialsError`."""
    name = key_env(spec, settings)
    if name is None:
        return None
    register_key_env(name)  # its value is redacted wherever text is stored or shown
    value = os.environ.get(name, "").strip()
    if not value:
        raise MissingCredentialsError(name, spec, role)
    return value


def redact(text: str | None, secrets: frozenset[str] | set[str]) -> str | None:
    """``text`` through the one redaction (``data.redaction.redact``) with the layer's own keys
    added to the environment's (servers may echo a key back)."""
    if not text:
        return text
    return redact_text(text, known_secrets(secrets))
