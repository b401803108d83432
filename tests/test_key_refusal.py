"""Issue 23 (leaks): keys in spec URLs and settings are refused, naming the setting and where keys
belong, never echoing the value; nothing is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.models.key_refusal import KeyInSpecError
from agents.models.settings import ModelConfig, RoleSettings
from agents.models.spec import parse_spec

KEY = "sk-refusaltest0123456789abcdefXYZ"
PLAIN = "hunter2hunter2hunter2"  # no key shape: only the place it is written in says "key"


@pytest.mark.parametrize(
    ("spec", "setting"),
    [
        (f"openai-compatible:http://127.0.0.1:8000/v1?api_key={KEY}#m", "base_url"),
        (f"openai-compatible:http://127.0.0.1:8000/v1?token={PLAIN}#m", "base_url"),
        (f"openai-compatible:http://user:{PLAIN}@127.0.0.1:8000/v1#m", "base_url"),
        (f"openai-compatible:http://{KEY}@127.0.0.1:8000/v1#m", "base_url"),
        (f"openai:gpt-4o?api_key={KEY}", "api_key"),
        (f"openai:gpt-4o?base_url=http://127.0.0.1:9/v1%3Ftoken%3D{PLAIN}", "base_url"),
        (f"openai:gpt-4o?headers=Authorization:{PLAIN}", "headers"),
        (f"openai:gpt-4o?fallback={KEY}", "fallback"),
    ],
)
def test_a_key_in_a_spec_is_refused_without_echo(spec: str, setting: str) -> None:
    with pytest.raises(KeyInSpecError) as caught:
        parse_spec(spec)
    message = str(caught.value)
    assert repr(setting) in message and "api_key_env" in message and "environment" in message
    assert KEY not in message and PLAIN not in message


@pytest.mark.parametrize(
    "assignment",
    [
        f"all.headers=Authorization:Bearer {PLAIN}",
        f"critic.base_url=http://u:{PLAIN}@127.0.0.1/v1",
        f"all.base_url=http://127.0.0.1/v1?access_token={PLAIN}",
        f"all.api_key={KEY}",
        f"all.temperatur={KEY}",  # a misspelt setting holding a key: refused, not quoted
    ],
)
def test_a_key_in_a_role_setting_is_refused_without_echo(assignment: str) -> None:
    with pytest.raises(ValueError) as caught:
        ModelConfig.from_args(["all=openai:gpt-4o"], [assignment])
    assert KEY not in str(caught.value) and PLAIN not in str(caught.value)
    assert "api_key_env" in str(caught.value)


def test_an_invalid_setting_names_it_without_quoting_its_value() -> None:
    with pytest.raises(ValueError) as caught:
        RoleSettings().merged({"http_transport": PLAIN, "colour": PLAIN})
    message = str(caught.value)
    assert "http_transport" in message and "colour" in message
    assert PLAIN not in message


def test_ordinary_specs_and_settings_still_pass() -> None:
    spec = parse_spec("openai-compatible:http://127.0.0.1:8000/v1#m?api_key_env=MY_KEY")
    assert spec.options == {"api_key_env": "MY_KEY"}
    config = ModelConfig.from_args(
        ["all=openai:gpt-4o"], ["all.max_tokens=400", "all.base_url=http://127.0.0.1:9/v1"]
    )
    assert config.for_role("critic").settings.max_tokens == 400


def test_generate_refuses_the_spec_and_stores_nothing(tmp_path: Path) -> None:
    from graphs.cli import app

    db = tmp_path / "icm.duckdb"
    spec = f"openai-compatible:http://127.0.0.1:9/v1?api_key={KEY}#m"
    result = CliRunner().invoke(app, ["generate", "--role", f"all={spec}", "--db", str(db)])
    assert result.exit_code != 0
    assert "base_url" in result.output and "api_key_env" in result.output
    assert KEY not in result.output
    assert not db.exists() or KEY.encode() not in db.read_bytes()
