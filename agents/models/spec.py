"""Model specs: the one string a researcher types to bind a role to a model.

Accepted forms (``?key=value&...`` options are allowed after the model in every form)::

    openai:<model>                          openai:gpt-4o
    anthropic:<model>                       anthropic:claude-sonnet-4-5
    openai-compatible:<base_url>#<model>    openai-compatible:http://127.0.0.1:8000/v1#qwen2.5-7b
    hf:<local path>                         hf:/models/llava-tiny
    local:<name>                            local:smollm2, local:qwen2.5-1.5b

Options are role settings written inline, so one CLI argument can say everything about an
endpoint, e.g. ``openai-compatible:http://127.0.0.1:8080/v1#smollm2?dialect=json_object_schema``
or ``openai:gpt-4o?api_key_env=MY_OPENAI_KEY&temperature=0.2``. Any :class:`RoleSettings` field
name is accepted; values are validated when the binding is resolved. Spec options win over the
role's other settings because they are the most specific thing the researcher wrote.

Specs never hold keys: ``api_key_env`` names an environment variable, it is not a key.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from agents.models.key_refusal import refuse_key_setting, refuse_url_credentials

PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "openai-compatible", "hf", "local")

#: names accepted after ``local:`` (models that ship inside PyPI packages)
LOCAL_MODELS: frozenset[str] = frozenset({"smollm2", "qwen2.5-1.5b"})

ACCEPTED_FORMS = (
    "openai:<model>, anthropic:<model>, openai-compatible:<base_url>#<model>, "
    "hf:<local path>, local:smollm2, local:qwen2.5-1.5b "
    "(options may follow the model as ?key=value&key=value)"
)


class ModelSpec(BaseModel):
    """A parsed spec. ``spec`` keeps the text as typed, for traces and run records."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    base_url: str | None = None
    options: dict[str, str] = Field(default_factory=dict)
    spec: str

    @property
    def endpoint(self) -> str | None:
        """Where requests go: the base URL for HTTP providers, the path for in-process models."""
        if self.provider == "hf":
            return self.model
        if self.provider == "local":
            return f"local:{self.model}"
        return self.base_url

    @property
    def label(self) -> str:
        """``provider:model`` without options, the short name shown in tables."""
        if self.provider == "openai-compatible":
            return f"openai-compatible:{self.base_url}#{self.model}"
        return f"{self.provider}:{self.model}"

    def __hash__(self) -> int:
        return hash(self.spec)


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"bad model spec {spec!r}: {why}. Accepted forms: {ACCEPTED_FORMS}")


def _split_options(spec: str, rest: str) -> tuple[str, dict[str, str]]:
    """Split ``model?k=v&k2=v2`` into the model part and its options."""
    if "?" not in rest:
        return rest, {}
    head, _, query = rest.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise _bad(spec, f"options {query!r} are not key=value pairs joined by '&'") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        # Before anything echoes the spec: it may hold the very key we refuse to take this way.
        refuse_key_setting(key, value)
        if not key or key in options:
            raise _bad(spec, f"option {key!r} is empty or repeated")
        options[key] = value
    return head, options


def parse_spec(spec: str) -> ModelSpec:
    """Parse and validate a spec string; raise ``ValueError`` naming the accepted forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise _bad(str(spec), "empty")
    text = spec.strip()
    provider, sep, rest = text.partition(":")
    if not sep:
        raise _bad(text, "no provider prefix")
    if provider not in PROVIDERS:
        raise _bad(text, f"unknown provider {provider!r}")

    if provider == "openai-compatible":
        base_url, hash_sep, model_part = rest.partition("#")
        if not hash_sep:
            raise _bad(text, "openai-compatible needs '#<model>' after the base URL")
        refuse_url_credentials("base_url", base_url)  # before an error could echo the URL
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _bad(text, f"base URL {base_url!r} is not an http(s) URL")
        model, options = _split_options(text, model_part)
        if not model:
            raise _bad(text, "missing model name after '#'")
        return ModelSpec(
            provider=provider,
            model=model,
            base_url=base_url.rstrip("/"),
            options=options,
            spec=text,
        )

    model, options = _split_options(text, rest)
    if not model:
        raise _bad(text, f"missing model after '{provider}:'")
    if provider == "local" and model not in LOCAL_MODELS:
        raise _bad(
            text, f"unknown local model {model!r} (known: {', '.join(sorted(LOCAL_MODELS))})"
        )
    if provider in ("openai", "anthropic") and "://" in model:
        raise _bad(text, f"{provider} takes a model name; use openai-compatible for a URL")
    return ModelSpec(provider=provider, model=model, options=options, spec=text)
