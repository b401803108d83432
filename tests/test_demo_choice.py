"""``python graphs/generate.py`` with no arguments: the qwen profile when the ``qwen`` extra is
installed, else SmolLM2's, and one line saying which (issue 15). No weights are loaded: the run
itself is replaced by one that records the configuration it was given."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import graphs.demo
import graphs.runner
from agents.models.llamacpp_loading import QWEN_KEY
from graphs.config import GenerateConfig, load_config
from graphs.demo import QWEN_DEMO, SMOLLM2_DEMO, choose_demo
from graphs.generate import app


def test_qwen_profile_when_the_extra_is_installed() -> None:
    choice = choose_demo(lambda: True)
    assert choice.config == QWEN_DEMO and choice.model == QWEN_KEY
    cfg = load_config(choice.config, {})
    assert cfg.roles == {"all": QWEN_KEY}
    # what the 1-of-14 demo profile lacked: bounds long enough for qwen's texts, and a retry
    assert cfg.text_length == "medium" and cfg.max_stage_retries >= 1


def test_smollm2_profile_otherwise_and_the_line_says_how_to_get_qwen() -> None:
    choice = choose_demo(lambda: False)
    assert choice.config == SMOLLM2_DEMO and choice.model == "local:smollm2"
    assert load_config(choice.config, {}).roles == {}  # unbound roles default to local:smollm2
    assert QWEN_KEY in choice.line and "pip install" in choice.line and "[qwen]" in choice.line


class _Recorded(Exception):
    pass


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[GenerateConfig]:
    """The configurations ``generate`` starts runs with; the run itself stops at once."""
    configs: list[GenerateConfig] = []

    class RecordingRun:
        def __init__(self, config: GenerateConfig, console: Any = None) -> None:
            configs.append(config)

        async def run(self) -> Any:
            raise _Recorded

    monkeypatch.setattr(graphs.runner, "GenerationRun", RecordingRun)
    return configs


@pytest.mark.parametrize("installed", [True, False])
def test_generate_without_arguments_runs_the_chosen_profile(
    installed: bool, seen: list[GenerateConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graphs.demo, "qwen_available", lambda: installed)
    result = CliRunner().invoke(app, [], env={"COLUMNS": "300"})
    assert isinstance(result.exception, _Recorded)
    (cfg,) = seen
    first_line = result.output.splitlines()[0]
    if installed:
        assert cfg.roles == {"all": QWEN_KEY} and cfg.max_stage_retries == 1
        assert first_line.startswith(f"offline demo: bundled samples, every role on {QWEN_KEY}")
    else:
        assert cfg.roles == {} and cfg.max_stage_retries == 0 and cfg.text_length == "short"
        assert first_line.startswith("offline demo: bundled samples, every role on local:smollm2")
        assert "[qwen]" in result.output


def test_a_role_on_the_command_line_is_not_the_demo(
    seen: list[GenerateConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graphs.demo, "qwen_available", lambda: True)
    result = CliRunner().invoke(app, ["--role", "all=local:smollm2"])
    assert isinstance(result.exception, _Recorded)
    assert seen[0].roles == {"all": "local:smollm2"} and seen[0].text_length == "full"
    assert "offline demo" not in result.output
