"""One redaction for every text that leaves a model call: stored, printed, exported or served.

Endpoints echo keys back (a 401 body saying ``Incorrect API key provided: sk-...``, a proxy's 500
page quoting the request's headers), and that text travels: into a sample's reasons, the
end-of-run summary, ``icm samples --json``, the viewer, ``report.html``. Redacting at each call
site misses one sooner or later, so redaction sits at the boundaries instead, and every boundary
calls :func:`redact`:

- the store: ``Store.insert``, ``update_by_key`` and ``execute`` redact every string they write;
- the terminal: ``graphs.cli`` wraps stdout and stderr (:class:`RedactingStream`);
- exports: each record's texts pass :func:`redact_value` when it is shaped;
- the viewer: every response body passes :func:`redact` before it is served or written.

What counts as a secret:

- the value of every environment variable that holds a key by name (``OPENAI_API_KEY``,
  ``ANTHROPIC_API_KEY``, any ``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``);
- the value of every variable a spec names with ``api_key_env`` (:func:`register_key_env`),
  whatever its name;
- any key-looking string, known or not: ``sk-...``, ``sk-ant-...``, ``hf_...``, GitHub and Slack
  tokens, AWS access key ids, the credential of a ``Bearer``/``Basic`` header, a URL's password
  and ``api_key=``/``token=``-like query values, since an endpoint may echo a key the
  environment does not hold (an old one, a colleague's).

Values shorter than 8 characters are not treated as secrets: replacing ``"1"`` everywhere would
destroy the text and protect nothing.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

REDACTED = "[REDACTED]"

#: the shortest value treated as a secret
MIN_SECRET_LENGTH = 8

#: environment variable names whose values are keys
KEY_ENV_SUFFIXES = ("_API_KEY", "_APIKEY", "_TOKEN", "_SECRET", "_SECRET_KEY", "_PASSWORD")
KEY_ENV_NAMES = frozenset({"OPENAI_API_KEY", "ANTHROPIC_API_KEY"})

#: strings that look like keys whatever their source (providers' documented key formats)
_KEY_LOOKING = re.compile(
    r"(?<![A-Za-z0-9+/])(?:"
    r"sk-[A-Za-z0-9_\-]{16,}"  # OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), many proxies
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API key
    # bounded on both sides by what base64 never holds next to a key, so an inlined image's
    # data: URI is never mistaken for one
    r")(?![A-Za-z0-9+/=])"
)
#: the credential of an HTTP authorization header
_AUTH_HEADER = re.compile(r"\b([Bb]earer|BEARER|Basic)\s+(?=[^\s]*[0-9])[A-Za-z0-9._~+/=\-]{12,}")
#: the password of a URL's user info (``scheme://user:password@host``)
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^/\s@]+(@)")
#: a key given as a URL query value or a ``name=value`` setting
_KEY_ASSIGNMENT = re.compile(
    r"(?i)(\b(?:api[_\-]?key|access[_\-]?token|auth[_\-]?token|token|secret|password|"
    r"x-api-key|authorization)\s*[=:]\s*)(?!\[REDACTED\])(?=[^\s&#\"'<>,;]*[0-9])[^\s&#\"'<>,;]{8,}"
)

#: substrings without which each pattern above cannot match
_KEY_MARKERS = ("sk-", "hf_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AKIA", "AIza")
_ASSIGNMENT_WORDS = ("key", "token", "secret", "password", "authorization")

_registered_lock = threading.Lock()
_registered_env: set[str] = set()


def register_key_env(name: str) -> None:
    """Treat the value of ``name`` as a secret too (a spec's ``api_key_env`` may name any
    variable, ``MY_PROXY_CREDENTIAL`` say)."""
    with _registered_lock:
        _registered_env.add(name)


def is_key_env(name: str) -> bool:
    """Whether an environment variable named ``name`` holds a key by its name."""
    upper = name.upper()
    return upper in KEY_ENV_NAMES or upper.endswith(KEY_ENV_SUFFIXES)


@dataclass(frozen=True)
class _EnvironmentSecrets:
    """The environment's secrets as computed from one state of the environment."""

    environ: dict[Any, Any]  # a copy of ``os.environ``'s underlying mapping at the time
    registered: frozenset[str]
    values: frozenset[str]
    #: :func:`known_secrets` for each ``extra`` asked for since (a layer's own keys)
    with_extra: dict[frozenset[str], tuple[str, ...]] = field(default_factory=dict)


_environment_secrets: _EnvironmentSecrets | None = None


def _environment_values() -> _EnvironmentSecrets:
    """The environment's secret values, recomputed only when the environment or the
    registered names changed since the last call.

    Every text the store writes and every trace field is redacted, so this is asked for
    several times per model call; reading every variable through ``os.environ`` (a decode
    per name and value) each time was about a tenth of a generation run's CPU. Comparing the
    environment's underlying mapping with a copy is one C-level dict comparison, and it sees
    every change made through ``os.environ`` (``monkeypatch.setenv`` included), so the
    answer is always that of the environment now.
    """
    global _environment_secrets
    data = getattr(os.environ, "_data", None)  # CPython's mapping behind os.environ
    with _registered_lock:
        registered = frozenset(_registered_env)
    cached = _environment_secrets
    if (
        cached is not None
        and data is not None
        and cached.registered == registered
        and cached.environ == data
    ):
        return cached
    snapshot = dict(data) if data is not None else {}
    values = frozenset(
        value.strip()
        for name, value in os.environ.items()
        if name in registered or is_key_env(name)
    )
    computed = _EnvironmentSecrets(snapshot, registered, values)
    if data is not None:
        _environment_secrets = computed
    return computed


def known_secrets(extra: Iterable[str] = ()) -> list[str]:
    """The secret values of the environment now, longest first (so a key containing another
    is replaced whole)."""
    environment = _environment_values()
    extra = frozenset(extra)
    ordered = environment.with_extra.get(extra)
    if ordered is None:
        values = environment.values | extra
        ordered = tuple(
            sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=lambda v: (-len(v), v))
        )
        if len(environment.with_extra) < 64:  # a few sets of layer keys per process
            environment.with_extra[extra] = ordered
    return list(ordered)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret and key-looking string replaced by ``[REDACTED]``.

    ``secrets``: the values to remove (:func:`known_secrets` when None; a caller redacting many
    strings computes it once).
    """
    if not text:
        return text
    ordered = tuple(known_secrets() if secrets is None else secrets)
    # Most texts are redacted more than once (a trace field when the call ends, then again by
    # the store that writes it; a run id, a check's name or message in every row): after the
    # first time it is a lookup. The memo is of a pure function of (text, secrets), so it
    # changes no answer.
    memo = _memo_for(ordered)
    done = memo.get(text)
    if done is None:
        done = _redact(text, ordered)
        memo.put(text, done)
    return done


def redactor(secrets: Iterable[str] | None = None) -> Callable[[str], str]:
    """:func:`redact` with ``secrets`` (:func:`known_secrets` when None) looked up once: for a
    caller that redacts many texts (the store, every string of every row it writes)."""
    ordered = tuple(known_secrets() if secrets is None else secrets)
    memo = _memo_for(ordered)

    def redact_one(text: str) -> str:
        if not text:
            return text
        done = memo.get(text)
        if done is None:
            done = _redact(text, ordered)
            memo.put(text, done)
        return done

    return redact_one


#: the most characters of text, and the most texts, a memo holds before it starts over
_MEMO_MAX_CHARS = 8_000_000
_MEMO_MAX_TEXTS = 50_000


class _RedactionMemo:
    """Redacted texts by text, for one list of secrets; forgets everything when full."""

    def __init__(self) -> None:
        self._done: dict[str, str] = {}
        self._chars = 0

    def get(self, text: str) -> str | None:
        return self._done.get(text)

    def put(self, text: str, done: str) -> None:
        if self._chars + len(text) > _MEMO_MAX_CHARS or len(self._done) >= _MEMO_MAX_TEXTS:
            self._done = {}
            self._chars = 0
        self._done[text] = done
        self._chars += len(text)


_memos: dict[tuple[str, ...], _RedactionMemo] = {}


def _memo_for(secrets: tuple[str, ...]) -> _RedactionMemo:
    memo = _memos.get(secrets)
    if memo is None:
        if len(_memos) >= 8:  # the secrets changed often (tests that set keys): start over
            _memos.clear()
        memo = _memos.setdefault(secrets, _RedactionMemo())
    return memo


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    # Each pattern runs only where a cheap substring test says it could match: most texts
    # (model answers, prompts) hold none of these, and the store redacts every text it writes.
    if _has_key_marker(text):
        text = _KEY_LOOKING.sub(REDACTED, text)
    if "earer" in text or "EARER" in text or "Basic" in text:
        text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(2)}", text)
    if _has_assignment_word(text.lower()):
        text = _KEY_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return text


# The two tests below are ``any(word in text for word in ...)`` written out: without a
# generator per call they cost a third as much on a short text, and the store redacts every
# string of every row it writes. tests/test_redaction_cache.py holds them to the tuples.
def _has_key_marker(text: str) -> bool:
    """Whether ``text`` holds one of :data:`_KEY_MARKERS`."""
    return (
        "sk-" in text
        or "hf_" in text
        or "ghp_" in text
        or "gho_" in text
        or "ghu_" in text
        or "ghs_" in text
        or "ghr_" in text
        or "xox" in text
        or "AKIA" in text
        or "AIza" in text
    )


def _has_assignment_word(lowered: str) -> bool:
    """Whether ``lowered`` holds one of :data:`_ASSIGNMENT_WORDS`."""
    return (
        "key" in lowered
        or "token" in lowered
        or "secret" in lowered
        or "password" in lowered
        or "authorization" in lowered
    )


def redact_value(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """``value`` with :func:`redact` applied to every string inside it (dicts, lists, tuples)."""
    found = list(known_secrets() if secrets is None else secrets)
    return _redact_value(value, found)


def _redact_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(v, secrets) for v in value)
    return value


class RedactingStream(io.TextIOBase):
    """A text stream that writes through :func:`redact` (stdout and stderr of every command).

    Everything else (``isatty``, ``fileno``, ``encoding``) is the wrapped stream's, so rich still
    sees a terminal where there is one.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    @property
    def wrapped(self) -> TextIO:
        return self._stream


def install_redacting_streams() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` once (idempotent), at a command's entry point."""
    import sys

    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)
