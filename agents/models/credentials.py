"""API keys: read only from the environment, checked before any work starts, never recorded.

A run that would fail on its hundredth sample because the critic's key is missing should fail
before the first one, saying which variable to set. Keys live in memory only for as long as a
client needs them; the layer redacts their text from anything it writes (errors echo headers
sometimes), so neither the store, nor logs, nor traces ever hold one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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
    """A bound model needs an API key and its environment variable is empty or unset.

    ``uses`` names every (role, model) that needs the variable, so the message lists them all
    and its suggested fix rebinds every one of them (``--role all=...`` when that is all of
    them), not only the first role found.
    """

    def __init__(
        self,
        env_var: str,
        spec: ModelSpec,
        role: str | None = None,
        *,
        uses: Sequence[tuple[str, str]] = (),
        every_role: bool = False,
    ) -> None:
        self.env_var = env_var
        self.spec = spec
        self.uses = tuple(uses) or (((role, spec.label),) if role else ())
        self.roles = tuple(dict.fromkeys(r for r, _ in self.uses))
        self.role = role if role is not None else (self.roles[0] if self.roles else None)
        super().__init__(
            f"{_who(self.uses, spec)}, which needs an API key in the environment variable "
            f"{env_var}, and {env_var} is not set. Set it (export {env_var}=...) or use "
            f"{_fix(self.roles, every_role)}."
        )


def _who(uses: Sequence[tuple[str, str]], spec: ModelSpec) -> str:
    """``role 'critic' is bound to X`` / ``roles 'a', 'b' are bound to X, and 'c' to Y``."""
    if not uses:
        return spec.label
    by_model: dict[str, list[str]] = {}
    for role, label in uses:
        if role not in by_model.setdefault(label, []):
            by_model[label].append(role)
    parts = []
    for n, (label, roles) in enumerate(by_model.items()):
        names = ", ".join(repr(r) for r in roles)
        if n == 0:
            noun, verb = ("role", "is") if len(roles) == 1 else ("roles", "are")
            parts.append(f"{noun} {names} {verb} bound to {label}")
        else:
            parts.append(f"{names} to {label}")
    return ", and ".join(parts)


def _fix(roles: Sequence[str], every_role: bool) -> str:
    """A model that needs no key for every role named (all of them at once when it is all)."""
    if not roles:
        return "another model spec"
    if every_role:
        return "--role all=local:smollm2 (or another model that needs no key)"
    return " ".join(f"--role {r}=local:smollm2" for r in roles) + " (or another model spec)"


def check_keys(
    uses: Sequence[tuple[str, ModelSpec, RoleSettings]], every_role: set[str]
) -> set[str]:
    """The keys of every (role, model, settings) in ``uses``; for the first unset variable,
    :class:`MissingCredentialsError` naming every role that needs it.

    ``every_role``: the roles of the whole binding, so the fix says ``--role all=`` when each
    of them needs the missing key.
    """
    keys: set[str] = set()
    missing: dict[str, list[tuple[str, ModelSpec]]] = {}
    for role, spec, settings in uses:
        name = key_env(spec, settings)
        if name is None:
            continue
        value = os.environ.get(name, "").strip()
        if value:
            keys.add(value)
        else:
            missing.setdefault(name, []).append((role, spec))
    if missing:
        env_var, needing = next(iter(missing.items()))
        roles = {role for role, _ in needing}
        raise MissingCredentialsError(
            env_var,
            needing[0][1],
            uses=[(role, spec.label) for role, spec in needing],
            every_role=bool(every_role) and roles >= every_role,
        )
    return keys


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
