"""The client a role gets when its settings name none: ``raw`` (the fastest), or LangChain's
ChatOpenAI while LangSmith tracing or a LangChain callback hook is configured, so every call
stays visible there; an explicit ``client`` setting always wins."""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeOpenAIServer
from langchain_core.tracers.context import collect_runs
from pydantic import BaseModel

from agents.models import ModelLayer
from agents.models.base import Message
from agents.models.providers import openai_chat
from agents.models.providers.langchain_watch import TRACING_VARIABLES, choose_client
from agents.models.settings import ModelConfig


class Verdict(BaseModel):
    label: str


MESSAGES = [Message(role="system", text="Judge."), Message(role="user", text="Ok?")]


@pytest.fixture(autouse=True)
def no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TRACING_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _layer(server: FakeOpenAIServer, *settings: str) -> ModelLayer:
    spec = f"openai-compatible:{server.base_url}#m"
    return ModelLayer(ModelConfig.from_args([f"all={spec}"], list(settings)), None)


async def _ask(layer: ModelLayer) -> tuple[str, str]:
    """(the client the role got, the call's status), in one event loop."""
    result = await layer.call(role="critic", schema=Verdict, messages=MESSAGES)
    provider = next(iter(layer._loop_state().providers.values()))
    await layer.aclose()
    return str(getattr(provider, "client", None)), result.status


def test_the_default_is_raw_when_nothing_watches_langchain() -> None:
    assert openai_chat.DEFAULT_CLIENT == "raw"
    with FakeOpenAIServer() as server:
        client, status = asyncio.run(_ask(_layer(server)))
        assert (client, status) == ("raw", "ok")
        # aiohttp's own user agent: no SDK (and no LangChain) carried the request
        assert server.chat_requests()[0].headers["user-agent"].startswith("icm-assistant")


@pytest.mark.parametrize("variable", TRACING_VARIABLES)
def test_langsmith_tracing_in_the_environment_picks_langchain(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "true")
    assert choose_client(None, "raw") == "langchain"
    assert choose_client("sdk", "raw") == "sdk"  # an explicit setting wins
    monkeypatch.setenv(variable, "false")
    assert choose_client(None, "raw") == "raw"


def test_a_langchain_callback_hook_sees_every_call() -> None:
    """Inside ``collect_runs`` (a LangChain configure hook) the role goes through ChatOpenAI and
    each call is a traced run; outside, the same role sends raw and nothing is traced."""

    async def traced() -> tuple[str, str, int]:
        with collect_runs() as collector:
            client, status = await _ask(_layer(server))
        return client, status, len(collector.traced_runs)

    with FakeOpenAIServer() as server:
        client, status, runs = asyncio.run(traced())
        assert (client, status, runs) == ("langchain", "ok", 1)
        assert server.chat_requests()[0].headers["user-agent"].startswith("AsyncOpenAI")

        # the role's explicit setting still wins over the hook
        async def explicit() -> str:
            with collect_runs():
                return (await _ask(_layer(server, "all.client=raw")))[0]

        assert asyncio.run(explicit()) == "raw"


def test_the_raw_client_honours_the_environments_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """As httpx and the SDKs do: ``HTTPS_PROXY``/``HTTP_PROXY`` unless ``NO_PROXY`` exempts."""
    from agents.models.providers.openai_wire import RawChatClient

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert RawChatClient("https://api.example.com/v1", "k", 5)._proxy is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert RawChatClient("https://api.example.com/v1", "k", 5)._proxy == (
        "http://proxy.internal:3128"
    )
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert RawChatClient("https://api.example.com/v1", "k", 5)._proxy is None
