"""Keys never travel inside a spec or a setting: they belong in the environment.

A spec is stored as typed (``runs.command``, ``config_json``, ``role_bindings_json``,
``llm_calls.endpoint``), printed by ``icm runs`` and shown in the report, so a key written into
one (``?api_key=sk-...``, ``http://user:sk-...@host/v1``, ``base_url=...?token=...``,
``headers=Authorization:...``) would be copied everywhere. Such specs and settings are refused
before anything is stored, with an error that names the setting and says where keys go, and
never repeats the value.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from data.redaction import redact

#: words of a setting's or a URL parameter's name (split at ``_``, ``-``, ``.``) that say it
#: carries a credential; whole words, so ``max_tokens`` is not one
CREDENTIAL_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "accesstoken",
        "secret",
        "password",
        "passwd",
        "pwd",
        "auth",
        "authorization",
        "header",
        "headers",
        "cookie",
        "credential",
        "credentials",
        "bearer",
        "session",
    }
)

#: the one setting whose name says "key" but holds a variable's name, not a key
KEY_ENV_SETTING = "api_key_env"

WHERE_KEYS_BELONG = (
    "keys belong in environment variables: OPENAI_API_KEY / ANTHROPIC_API_KEY are read by "
    "default, and api_key_env=VARIABLE names another (e.g. "
    "openai-compatible:http://host/v1#model?api_key_env=MY_KEY)"
)


class KeyInSpecError(ValueError):
    """A spec or setting carries a credential; the message never holds the value."""

    def __init__(self, setting: str, why: str) -> None:
        self.setting = setting
        super().__init__(
            f"setting {setting!r} {why}; it was not used or stored: {WHERE_KEYS_BELONG}"
        )


def credential_name(name: str) -> bool:
    """Whether a setting or query parameter named ``name`` would carry a credential."""
    lowered = name.lower()
    words = re.split(r"[_\-.\s]+", lowered)
    return lowered != KEY_ENV_SETTING and any(word in CREDENTIAL_WORDS for word in words)


def refuse_url_credentials(setting: str, url: str) -> None:
    """Raise :class:`KeyInSpecError` for a URL with user info or a credential parameter."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return  # not a URL: the caller's own validation says so
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise KeyInSpecError(setting, "holds a user name or password in its URL (user:pass@host)")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if credential_name(name):
            raise KeyInSpecError(setting, f"holds a credential in its URL parameter {name!r}")


def refuse_key_setting(setting: str, value: object) -> None:
    """Raise :class:`KeyInSpecError` when a setting (a spec option, a ``--role-setting``, a
    config entry) is named like a credential, holds a URL with one, or holds a value that looks
    like a key (or is one of the environment's keys)."""
    if credential_name(setting.rsplit(".", 1)[-1]):
        raise KeyInSpecError(setting, "is named like a credential")
    if not isinstance(value, str):
        return
    if "://" in value:
        refuse_url_credentials(setting, value)
    if redact(value) != value:
        raise KeyInSpecError(setting, "holds a value that looks like a key")
