"""Shared pytest fixtures. Keep each fixture small and documented; add new ones by topic below."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAnthropicServer, FakeOpenAIServer
from release_data import FILES, RELEASE_DIR, SETTING, setting_problem

from data.store import Store


# ----------------------------------------------------------------------------- release data
def pytest_configure(config: pytest.Config) -> None:
    """An explicit ``ICM_RELEASE_DATA`` that lacks a file stops the run at once (one line):
    its tests would otherwise skip, which is what the setting was given to prevent."""
    problem = setting_problem()
    if problem:
        raise pytest.UsageError(problem)


def pytest_report_header(config: pytest.Config) -> str:
    """Say where the paper's released data was looked for, and whether it is there."""
    found = all((RELEASE_DIR / name).is_file() for name in FILES)
    state = "found" if found else f"absent: its tests skip; set {SETTING}"
    return f"paper release data ({SETTING}): {RELEASE_DIR} ({state})"


# ----------------------------------------------------------------------------- model layer
#: distinctive fake keys: tests grep the database file for them
FAKE_OPENAI_KEY = "sk-test-SECRET-openai-0123456789abcdef"
FAKE_ANTHROPIC_KEY = "fake-anthropic-test-SECRET-0123456789abcdef"  # not a real key shape


@pytest.fixture
def fake_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """OPENAI_API_KEY and ANTHROPIC_API_KEY set to fake values for the test."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_ANTHROPIC_KEY)
    return {"OPENAI_API_KEY": FAKE_OPENAI_KEY, "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY}


@pytest.fixture(params=["langchain", "sdk", "raw"])
def openai_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per way of sending OpenAI requests (ChatOpenAI, the SDK's own post,
    aiohttp directly):
    every behaviour the test asserts must hold for both (``client`` setting)."""
    from agents.models.providers import openai_chat

    monkeypatch.setattr(openai_chat, "DEFAULT_CLIENT", request.param)
    return str(request.param)


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fresh fake OpenAI server on loopback (empty script: schema-valid default answers)."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    """A fresh fake Anthropic server on loopback."""
    with FakeAnthropicServer() as server:
        yield server


class SleepRecorder:
    """Stands in for ``asyncio.sleep``: records each requested wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def no_sleep() -> SleepRecorder:
    """Backoff without waiting; the waits asked for are in ``.waits``."""
    return SleepRecorder()


@pytest.fixture
def llm_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store file for model-layer tests, in the test's temporary folder."""
    with Store.open(tmp_path / "icm.duckdb") as opened:
        yield opened


def run_closing(owner: Any, make: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``make()`` in a fresh event loop, then ``owner.aclose()`` (a layer or a judge).

    Each ``asyncio.run`` gets its own HTTP clients; closing them here keeps aiohttp from
    warning about unclosed sessions when they are collected.
    """

    async def go() -> Any:
        try:
            return await make()
        finally:
            await owner.aclose()

    return asyncio.run(go())


def run_call(layer: Any, **kwargs: Any) -> Any:
    """One ``layer.call`` in a fresh event loop, then close that loop's HTTP clients."""
    return run_closing(layer, lambda: layer.call(**kwargs))
