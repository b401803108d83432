"""Model specs, role settings and bindings, credentials, and the provider registry."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from agents.models import (
    MissingCredentialsError,
    ModelConfig,
    ModelLayer,
    RoleBinding,
    RoleSettings,
    parse_spec,
)
from agents.models.providers import FACTORIES, get_factory
from agents.models.settings import ROLES


class Out(BaseModel):
    label: str


@pytest.mark.parametrize(
    ("text", "provider", "model", "base_url"),
    [
        ("openai:gpt-4o", "openai", "gpt-4o", None),
        ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", None),
        (
            "openai-compatible:http://127.0.0.1:8000/v1#qwen2.5-7b",
            "openai-compatible",
            "qwen2.5-7b",
            "http://127.0.0.1:8000/v1",
        ),
        (
            "openai-compatible:https://host/v1/#org/model:7b",
            "openai-compatible",
            "org/model:7b",
            "https://host/v1",
        ),
        ("hf:/models/tiny-llava", "hf", "/models/tiny-llava", None),
        ("local:smollm2", "local", "smollm2", None),
    ],
)
def test_specs_of_every_kind_parse(text: str, provider: str, model: str, base_url: str | None):
    spec = parse_spec(text)
    assert (spec.provider, spec.model, spec.base_url) == (provider, model, base_url)
    assert spec.spec == text
    assert spec.options == {}


def test_spec_options_become_role_settings():
    spec = parse_spec(
        "openai-compatible:http://127.0.0.1:8080/v1#smollm2?dialect=json_object_schema"
        "&api_key_env=MY_KEY&temperature=0.3"
    )
    assert spec.model == "smollm2"
    assert spec.options == {
        "dialect": "json_object_schema",
        "api_key_env": "MY_KEY",
        "temperature": "0.3",
    }
    binding = RoleBinding.create(spec, RoleSettings(max_tokens=77))
    assert binding.settings.dialect == "json_object_schema"
    assert binding.settings.api_key_env == "MY_KEY"
    assert binding.settings.temperature == 0.3
    assert binding.settings.max_tokens == 77


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("gpt-4o", "no provider prefix"),
        ("azure:gpt-4o", "unknown provider 'azure'"),
        ("openai:", "missing model"),
        ("openai-compatible:http://127.0.0.1:8000/v1", "needs '#<model>'"),
        ("openai-compatible:127.0.0.1:8000#m", "not an http(s) URL"),
        ("openai-compatible:http://127.0.0.1:8000/v1#", "missing model name"),
        ("local:llama3", "unknown local model 'llama3'"),
        ("openai:gpt-4o?temperature", "not key=value"),
        ("openai:http://127.0.0.1/v1", "use openai-compatible"),
    ],
)
def test_bad_specs_name_the_accepted_forms(text: str, why: str):
    with pytest.raises(ValueError) as info:
        parse_spec(text)
    message = str(info.value)
    assert why in message
    assert "openai-compatible:<base_url>#<model>" in message
    assert "local:smollm2" in message


def test_unknown_spec_option_is_rejected_with_the_known_settings():
    with pytest.raises(ValueError, match="temprature") as info:
        RoleBinding.create("openai:gpt-4o?temprature=1")
    assert "temperature" in str(info.value)


def test_bad_fallback_spec_is_rejected_at_configuration():
    with pytest.raises(ValueError, match="bad model spec"):
        RoleSettings(fallback="gpt-4o")


def test_role_args_bind_all_then_specific_roles_win_whatever_the_order():
    config = ModelConfig.from_args(
        [
            "critic=anthropic:claude-sonnet-4-5",
            "all=openai:gpt-4o",
        ],
        ["all.timeout_s=12", "critic.temperature=0.4"],
    )
    assert config.for_role("critic").spec.spec == "anthropic:claude-sonnet-4-5"
    assert config.for_role("critic").settings.temperature == 0.4
    assert config.for_role("critic").settings.timeout_s == 12
    for role in set(ROLES) - {"critic"}:
        assert config.for_role(role).spec.spec == "openai:gpt-4o"
        assert config.for_role(role).settings.timeout_s == 12
        assert config.for_role(role).settings.temperature == 0.0


def test_default_binding_puts_every_role_on_smollm2():
    config = ModelConfig()
    assert {config.for_role(r).spec.spec for r in ROLES} == {"local:smollm2"}
    record = config.record()
    assert set(record) == set(ROLES)


@pytest.mark.parametrize("arg", ["describr=openai:gpt-4o", "describer", "describer="])
def test_bad_role_args(arg: str):
    with pytest.raises(ValueError):
        ModelConfig.from_args([arg])


def test_missing_key_names_the_variable_before_any_call(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-present-123456")
    config = ModelConfig.from_args(["critic=anthropic:claude-sonnet-4-5", "all=openai:gpt-4o"])
    layer = ModelLayer(config, None)
    with pytest.raises(MissingCredentialsError) as info:
        layer.check_credentials()
    assert info.value.env_var == "ANTHROPIC_API_KEY"
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert "critic" in str(info.value)


def test_a_missing_key_names_every_role_bound_to_it_and_a_fix_for_all(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    everyone = ModelLayer(ModelConfig.from_args(["all=openai:gpt-4o"]), None)
    with pytest.raises(MissingCredentialsError) as info:
        everyone.check_credentials()
    message = str(info.value)
    for role in ("describer", "context_interpreter", "explainer", "qa_writer", "critic"):
        assert repr(role) in message and role in info.value.roles
    assert "roles 'describer', " in message and "are bound to openai:gpt-4o" in message
    # every role needs the key: one option rebinds them all, not the first role found
    assert "--role all=local:smollm2" in message
    assert "--role describer=" not in message

    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-anthropic-key-123456")
    some = ModelLayer(
        ModelConfig.from_args(
            ["all=anthropic:claude-haiku-4-5", "critic=openai:gpt-4o", "judge=openai:gpt-4o-mini"]
        ),
        None,
    )
    with pytest.raises(MissingCredentialsError) as info:
        some.check_credentials()
    message = str(info.value)
    assert info.value.roles == ("critic", "judge")
    assert "role 'critic' is bound to openai:gpt-4o, and 'judge' to openai:gpt-4o-mini" in message
    assert "--role critic=local:smollm2 --role judge=local:smollm2" in message
    assert "describer" not in message and "all=" not in message


def test_per_spec_key_variable_and_keyless_local_servers(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MY_VLLM_KEY", raising=False)
    keyless = ModelConfig.from_args(["all=openai-compatible:http://127.0.0.1:9/v1#m"])
    ModelLayer(keyless, None).check_credentials()  # local servers need no key
    keyed = ModelConfig.from_args(
        ["all=openai-compatible:http://127.0.0.1:9/v1#m?api_key_env=MY_VLLM_KEY"]
    )
    with pytest.raises(MissingCredentialsError, match="MY_VLLM_KEY"):
        ModelLayer(keyed, None).check_credentials()


def test_fallback_models_are_checked_too(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-present-123456")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = ModelConfig.from_args(
        ["all=openai:gpt-4o"], ["all.fallback=anthropic:claude-haiku-4-5"]
    )
    with pytest.raises(MissingCredentialsError, match="ANTHROPIC_API_KEY"):
        ModelLayer(config, None).check_credentials()


def test_a_call_with_a_missing_key_raises_rather_than_returning_a_result(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    layer = ModelLayer(ModelConfig.from_args(["all=openai:gpt-4o"]), None)
    with pytest.raises(MissingCredentialsError, match="OPENAI_API_KEY"):
        asyncio.run(layer.call(role="judge", schema=Out, messages=[]))


def test_registry_names_every_spec_kind_including_in_process_ones():
    assert set(FACTORIES) == {"openai", "openai-compatible", "anthropic", "hf", "local"}
    assert FACTORIES["hf"] == "agents.models.providers.local_transformers:make_hf_provider"
    # local: dispatches per model (smollm2 on transformers, qwen2.5-1.5b on llama.cpp)
    assert FACTORIES["local"] == "agents.models.providers.local:make_local_provider"
    assert callable(get_factory("openai"))
    with pytest.raises(ValueError, match="registered"):
        get_factory("azure")


def test_specs_refuse_inline_keys_without_echoing_them():
    with pytest.raises(ValueError, match="api_key_env") as info:
        parse_spec("openai:gpt-4o?api_key=sk-live-DO-NOT-ECHO")
    assert "DO-NOT-ECHO" not in str(info.value)


def test_delivery_settings_leave_the_run_identity_unchanged():
    """Tuning how requests are sent (concurrency, retries, client, transport) resumes the same
    run; a setting that changes what a model writes starts another."""
    from graphs.config import load_config

    base = load_config(None, {"roles": {"all": "openai:gpt-4o"}})
    tuned = load_config(
        None,
        {
            "roles": {"all": "openai:gpt-4o"},
            "role_settings": {
                "all": {"client": "sdk", "max_concurrency": "64", "jitter": "false"},
                "critic": {"timeout_s": "5", "http_transport": "httpx"},
            },
        },
    )
    hotter = load_config(
        None,
        {"roles": {"all": "openai:gpt-4o"}, "role_settings": {"all": {"temperature": "0.7"}}},
    )
    assert tuned.run_id() == base.run_id()
    assert hotter.run_id() != base.run_id()
