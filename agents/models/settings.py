"""Per-role model settings and the role -> model binding a run is configured with.

A researcher compares generator combinations by rebinding roles, never by editing code::

    --role all=openai:gpt-4o --role critic=anthropic:claude-sonnet-4-5
    --role-setting critic.temperature=0.3 --role-setting all.timeout_s=120

``all=SPEC`` is applied before the per-role bindings whatever their order, so a specific role
always wins over ``all``. Unbound roles use the default binding (``local:smollm2`` unless ``all``
says otherwise), so the tool runs offline with no arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.models.answer_bounds import DEFAULT_MAX_ANSWER_BYTES
from agents.models.key_refusal import refuse_key_setting, refuse_url_credentials
from agents.models.spec import ModelSpec, parse_spec
from agents.models.timeouts import DEFAULT_TIMEOUTS, Timeouts, endpoint_kind
from agents.stages import all_model_roles
from data.redaction import register_key_env


def model_roles() -> tuple[str, ...]:
    """Every role that asks a model for something: the registered generation stages (each
    declared once, in its role's module: agents/stages.py), the critic, the judge, the
    moderator, and the paper pipeline's stages (``--preset paper``).

    Computed on first use, not at import: the role modules import this package."""
    return all_model_roles()


def __getattr__(name: str) -> Any:
    if name == "ROLES":  # the role list, as ``ROLES`` (derived: see model_roles)
        return model_roles()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DEFAULT_SPEC = "local:smollm2"

#: the temperature of a refusal retry when the role's is 0 (low: the answer should stay close to
#: what the model would write deterministically, but not be the same refusal again)
REFUSAL_RETRY_TEMPERATURE = 0.3

Dialect = Literal["auto", "json_schema", "json_object_schema", "tools", "text"]
HttpTransport = Literal["aiohttp", "httpx"]
SendImages = bool | Literal["auto"]
ChatClient = Literal["langchain", "sdk", "raw"]
Delivery = Literal["sync", "batch"]


#: settings that change how requests are sent, never what a model is asked or writes: a run's
#: identity leaves them out, so tuning concurrency, retries or the client resumes the same run
DELIVERY_SETTINGS = frozenset(
    {
        "timeout_s",
        "call_deadline_s",
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "max_retries",
        "refusal_retries",  # more attempts after refusals: --retry-failed resumes the run
        "retry_after_cap_s",
        "backoff_base_s",
        "backoff_max_s",
        "jitter",
        "http_transport",
        "client",
        "api_key_env",
        "price_input_per_mtok",
        "price_output_per_mtok",
        "delivery",
        "batch_poll_s",
        "batch_timeout_s",
        "max_answer_bytes",
    }
)


class RoleSettings(BaseModel):
    """How one role talks to its model. Only the generation fields enter the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature; 0 makes reruns comparable."""
    max_tokens: int = Field(1024, ge=1)
    """Upper bound on the answer's length in tokens."""
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    """Ask for token log-probabilities with N alternatives per token (OpenAI-style APIs and
    servers: ``logprobs: true, top_logprobs: N``; 20 is OpenAI's maximum). APIs without them
    (Anthropic) answer as usual and the call has none. Such calls skip the cache (it keeps
    answers, not log-probabilities)."""
    max_answer_bytes: int = Field(DEFAULT_MAX_ANSWER_BYTES, ge=1024)
    """Largest answer (UTF-8 bytes) a call accepts; a larger one ends the call ``too_large``,
    stored cut at this size (agents/models/answer_bounds.py says why 1 MiB)."""
    timeout_s: float = Field(60.0, gt=0.0)
    """Per-request timeout; a timeout is retried with backoff. Unless set, the default of the
    endpoint's kind (agents/models/timeouts.py: hosted 60 s, self-hosted 90 s, in-process
    600 s)."""
    call_deadline_s: float = Field(120.0, gt=0.0)
    """Longest one call may take across its retries and re-asks; no request starts after it
    and none runs past it. Unless set, the default of the endpoint's kind (hosted and
    self-hosted 120 s, in-process 600 s)."""
    max_concurrency: int = Field(8, ge=1)
    """Requests of this role (per model) in flight at once."""
    requests_per_minute: float | None = Field(None, gt=0.0)
    tokens_per_minute: float | None = Field(None, gt=0.0)
    max_retries: int = Field(4, ge=0)
    """Retries after rate limits, 5xx, timeouts and connection errors (not parse failures)."""
    parse_retries: int = Field(2, ge=0)
    """Re-asks after an answer that does not validate against the schema."""
    retry_after_cap_s: float = Field(60.0, ge=0.0)
    """Longest wait honoured from a ``Retry-After`` header."""
    backoff_base_s: float = Field(1.0, ge=0.0)
    backoff_max_s: float = Field(30.0, ge=0.0)
    jitter: bool = True
    """Randomise backoff waits (full jitter); tests turn it off."""
    image_max_side: int = Field(1024, ge=16)
    """Images are resized so their longest side is at most this many pixels."""
    send_images: SendImages | None = None
    """Whether the model is sent the image. None = the provider's default: hosted APIs yes,
    in-process models when they have a vision tower, ``openai-compatible`` ``auto``. ``auto``
    sends the image and, when the endpoint answers that its model takes no images (vLLM,
    llama.cpp and Ollama each say so in their own words), asks again text-only and remembers
    that for the endpoint and model; ``true`` always sends it, ``false`` never does."""
    base_url: str | None = None
    """API URL of a hosted provider (a proxy, a regional endpoint, the tests' fake server)."""
    api_key_env: str | None = None
    """Environment variable holding the key; default OPENAI_API_KEY / ANTHROPIC_API_KEY."""
    dialect: Dialect | None = None
    """Structured-output dialect of an OpenAI-style endpoint (see providers/openai_chat.py)."""
    http_transport: HttpTransport = "aiohttp"
    """The SDK clients' HTTP transport. aiohttp (the SDKs' own ``DefaultAioHttpClient``) costs
    about 40 % less CPU per call than httpx's pool at high concurrency; httpx is the fallback."""
    client: ChatClient | None = None
    """How an OpenAI-style role sends its requests (the same body each way). ``langchain``:
    LangChain's ChatOpenAI (LangChain callbacks and LangSmith tracing see the calls). ``sdk``:
    the openai SDK's own ``post``, skipping LangChain's message conversion and the SDK's
    request transform. ``raw``: aiohttp directly, no SDK. Each step saves CPU per call (about 1
    and 0.5 ms), which decides throughput against a fast self-hosted server at high concurrency
    (benchmarks/bench_generate.py, docs/throughput.md). None: ``raw``, or ``langchain`` while
    LangSmith tracing or a LangChain callback hook is configured
    (agents/models/providers/langchain_watch.py)."""
    refusal_retries: int = Field(2, ge=0)
    """Times a refusal (or a content-filter stop) is asked again before the fallback model (if
    any) is asked and the call ends ``refused``. A retry sends the same request at the role's
    temperature, or at :data:`REFUSAL_RETRY_TEMPERATURE` when that is 0 (a deterministic
    model would refuse the same way again). Every attempt is a trace row; none is cached."""
    fallback: str | None = None
    """Spec to ask instead when this model still refuses after ``refusal_retries``."""
    price_input_per_mtok: float | None = Field(None, ge=0.0)
    price_output_per_mtok: float | None = Field(None, ge=0.0)
    delivery: Delivery = "sync"
    """``sync``: one HTTP request per call. ``batch``: the provider's batch API at half the
    price (OpenAI Batch, Anthropic Message Batches; vLLM's ``run-batch`` reads the same OpenAI
    file): the run advances all samples in flight one stage per round, each round one batch
    (agents/models/batching.py). Batch ids live in the store, so a rerun polls them. A batch
    role's requests are not paced (``max_concurrency`` and the per-minute limits apply to
    synchronous requests); a round holds at most ``--concurrency`` samples' calls."""
    batch_poll_s: float = Field(30.0, ge=0.0)
    """Seconds between two polls of a submitted batch (0 in tests)."""
    batch_timeout_s: float = Field(25 * 3600.0, gt=0.0)
    """Longest wait for one batch; then its requests fail as timeouts (retried next round,
    which polls the same batch again: it stays in the store)."""

    @field_validator("fallback")
    @classmethod
    def _fallback_is_spec(cls, value: str | None) -> str | None:
        if value is not None:
            parse_spec(value)
        return value

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        if value is not None:
            refuse_url_credentials("base_url", value)
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "").isalnum():
            raise ValueError(f"api_key_env must name an environment variable, got {value!r}")
        if value is not None:
            register_key_env(value)  # its value is redacted wherever text is stored or shown
        return value

    def merged(self, overrides: Mapping[str, Any]) -> RoleSettings:
        """A copy with ``overrides`` applied and validated (strings are coerced)."""
        if not overrides:
            return self
        for name, value in overrides.items():
            refuse_key_setting(str(name), value)
        data = self.model_dump(exclude_unset=True) | dict(overrides)
        try:
            return RoleSettings.model_validate(data)
        except ValidationError as exc:
            # Name the settings and what is wrong, never their values: a value may be a key
            # pasted in the wrong place (pydantic's own message quotes each input).
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or '?'}: {error['msg']}"
                for error in exc.errors()
            )
            fields = ", ".join(RoleSettings.model_fields)
            raise ValueError(
                f"bad role settings ({', '.join(map(str, overrides))}): {problems}\nknown: {fields}"
            ) from None


class RoleBinding(BaseModel):
    """One role's model: the parsed spec and the settings with the spec's options applied."""

    model_config = ConfigDict(frozen=True)

    spec: ModelSpec
    settings: RoleSettings

    @classmethod
    def create(cls, spec: str | ModelSpec, settings: RoleSettings | None = None) -> RoleBinding:
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        base = settings or RoleSettings()
        return cls(spec=parsed, settings=base.merged(parsed.options))

    def timeouts(self) -> Timeouts:
        """(per request, per call) seconds: those set for the role, else the defaults of the
        spec's kind of endpoint (agents/models/timeouts.py). Resolved here, at use, so a
        refusal fallback of another kind gets its own kind's defaults."""
        defaults = DEFAULT_TIMEOUTS[endpoint_kind(self.spec.provider)]
        chosen = self.settings.model_fields_set
        request = self.settings.timeout_s if "timeout_s" in chosen else defaults.request_s
        if "call_deadline_s" in chosen:
            return Timeouts(request, self.settings.call_deadline_s)
        # a default deadline never cuts one request below the timeout the role set for it
        return Timeouts(request, max(defaults.call_s, request))

    def record(self) -> dict[str, Any]:
        """What a run stores about this binding (names of key variables, never keys)."""
        return {"spec": self.spec.spec, "settings": self.settings.model_dump(exclude_defaults=True)}


def _split_assignment(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ValueError(f"bad {what} {text!r}: expected NAME=VALUE")
    return name.strip(), value.strip()


def _check_role(role: str) -> None:
    if role != "all" and role not in model_roles():
        raise ValueError(f"unknown role {role!r} (roles: all, {', '.join(model_roles())})")


class ModelConfig(BaseModel):
    """The role -> binding map of a run."""

    model_config = ConfigDict(frozen=True)

    bindings: dict[str, RoleBinding] = Field(default_factory=dict)
    default: RoleBinding = Field(default_factory=lambda: RoleBinding.create(DEFAULT_SPEC))

    def for_role(self, role: str) -> RoleBinding:
        """The binding of ``role``; unbound roles get the default."""
        return self.bindings.get(role) or self.default

    def resolved(self) -> dict[str, RoleBinding]:
        """Every known role with the binding it will use."""
        return {role: self.for_role(role) for role in model_roles()} | dict(self.bindings)

    def record(self) -> dict[str, Any]:
        """The binding as stored with a run (``runs.role_bindings_json``)."""
        return {role: b.record() for role, b in self.resolved().items()}

    @classmethod
    def from_args(
        cls,
        roles: Iterable[str] = (),
        settings: Iterable[str] = (),
        *,
        base: RoleSettings | None = None,
    ) -> ModelConfig:
        """Build from ``--role ROLE=SPEC`` and ``--role-setting ROLE.KEY=VALUE`` strings."""
        specs: dict[str, str] = {}
        for text in roles:
            role, spec = _split_assignment(text, "--role")
            _check_role(role)
            specs[role] = spec
        overrides: dict[str, dict[str, str]] = {}
        for text in settings:
            target, value = _split_assignment(text, "--role-setting")
            role, dot, key = target.partition(".")
            if not dot or not key:
                raise ValueError(f"bad --role-setting {text!r}: expected ROLE.KEY=VALUE")
            _check_role(role)
            overrides.setdefault(role, {})[key] = value
        return cls.from_mapping(
            {"roles": specs, "settings": overrides}, base=base or RoleSettings()
        )

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base: RoleSettings | None = None
    ) -> ModelConfig:
        """Build from a mapping (YAML): ``{"roles": {role: spec}, "settings": {role: {...}}}``.

        A role's settings are: ``base`` <- ``settings.all`` <- ``settings.<role>`` <- spec options.
        """
        roles: Mapping[str, str] = data.get("roles") or {}
        per_role: Mapping[str, Mapping[str, Any]] = data.get("settings") or {}
        for role in [*roles, *per_role]:
            _check_role(role)
        common = (base or RoleSettings()).merged(per_role.get("all", {}))
        default_spec = roles.get("all", DEFAULT_SPEC)
        default = RoleBinding.create(default_spec, common)
        bindings: dict[str, RoleBinding] = {}
        for role in model_roles():
            if role in roles or role in per_role or "all" in roles:
                role_settings = common.merged(per_role.get(role, {}))
                bindings[role] = RoleBinding.create(roles.get(role, default_spec), role_settings)
        return cls(bindings=bindings, default=default)


def default_config() -> ModelConfig:
    """Every role on ``local:smollm2``: the offline demo needs no keys and no server."""
    return ModelConfig()
