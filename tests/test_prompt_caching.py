"""Provider prompt caching: the stable prefix is marked (Anthropic) or laid out first (OpenAI),
the fakes report cached tokens as the real APIs do, and cached tokens are stored per call,
priced at the cached rate and shown by ``icm runs`` and ``icm compare``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import typer
from conftest import run_call
from fakes import FakeAnthropicServer, FakeOpenAIServer, reply
from fakes.icm_responder import ICMResponder
from fakes.prompt_cache import PrefixCache
from PIL import Image
from pydantic import BaseModel
from typer.testing import CliRunner

from agents.models import ModelLayer
from agents.models.base import Message
from agents.models.pricing import Price, lookup_price, resolve_price
from agents.models.settings import ModelConfig
from data.store import Store
from graphs.commands.evaluate import compare_command
from graphs.commands.runs import runs_command
from graphs.config import load_config
from graphs.runner import GenerationRun

runner = CliRunner()

#: a system prompt long enough (> 1,024 rough tokens) for the providers' prompt caches
LONG_SYSTEM = "You judge images under the policy below.\n" + "Rule text of the policy. " * 300


class Verdict(BaseModel):
    label: str
    score: int


def _messages(question: str) -> list[Message]:
    return [Message(role="system", text=LONG_SYSTEM), Message(role="user", text=question)]


# --------------------------------------------------------------------------- Anthropic
def test_anthropic_marks_the_stable_prefix_and_prices_cached_reads(
    fake_keys, anthropic_server: FakeAnthropicServer, llm_store: Store, no_sleep
) -> None:
    spec = f"anthropic:claude-haiku-4-5?base_url={anthropic_server.base_url}"
    layer = ModelLayer(ModelConfig.from_args([f"all={spec}"], ["all.jitter=false"]),
                       llm_store, run_id="run-a", sleep=no_sleep)  # fmt: skip
    first = run_call(layer, role="critic", schema=Verdict, messages=_messages("Image one?"))
    second = run_call(layer, role="critic", schema=Verdict, messages=_messages("Image two?"))
    layer.flush()

    # the system prompt (after the tools) ends the prefix: the breakpoint is on its last block
    for request in anthropic_server.chat_requests():
        assert request.body["system"] == [
            {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}
        ]
        assert all("cache_control" not in json.dumps(m) for m in request.body["messages"])
    # the first call writes the prefix, the second reads it; input_tokens stays the whole prompt
    assert first.ok and second.ok
    assert first.cache_write_tokens > 1024 and first.cached_input_tokens == 0
    assert second.cached_input_tokens == first.cache_write_tokens > 1024
    assert second.cache_write_tokens == 0
    assert second.input_tokens > second.cached_input_tokens
    price = lookup_price("anthropic", "claude-haiku-4-5")
    assert price is not None and price.cached_input_per_mtok == pytest.approx(0.10)
    assert price.cache_write_per_mtok == pytest.approx(1.25)
    plain = second.input_tokens - second.cached_input_tokens
    expected = plain * 1.00 + second.cached_input_tokens * 0.10 + second.output_tokens * 5.0
    assert second.cost_usd == pytest.approx(expected / 1e6)
    written = first.input_tokens - first.cache_write_tokens
    assert first.cost_usd == pytest.approx(
        (written * 1.00 + first.cache_write_tokens * 1.25 + first.output_tokens * 5.0) / 1e6
    )
    assert second.cost_usd < first.cost_usd
    rows = llm_store.rows(
        "SELECT cached_input_tokens, cache_write_tokens, cost_usd FROM llm_calls "
        "ORDER BY started_at"
    )
    assert [(r["cached_input_tokens"], r["cache_write_tokens"]) for r in rows] == [
        (0, first.cache_write_tokens),
        (second.cached_input_tokens, 0),
    ]
    assert rows[1]["cost_usd"] == pytest.approx(second.cost_usd)


def test_a_short_prefix_is_not_cached(fake_keys, anthropic_server, llm_store, no_sleep) -> None:
    """Below the provider's minimum (1,024 tokens) nothing is written or read."""
    spec = f"anthropic:claude-haiku-4-5?base_url={anthropic_server.base_url}"
    layer = ModelLayer(ModelConfig.from_args([f"all={spec}"], ["all.jitter=false"]),
                       llm_store, sleep=no_sleep)  # fmt: skip

    def short(question: str) -> list[Message]:
        return [Message(role="system", text="Judge."), Message(role="user", text=question)]

    anthropic_server.push(reply({"label": "a", "score": 1}, usage=(500, 10)))
    anthropic_server.push(reply({"label": "a", "score": 1}, usage=(500, 10)))
    run_call(layer, role="critic", schema=Verdict, messages=short("One?"))
    again = run_call(layer, role="critic", schema=Verdict, messages=short("Two?"))
    assert (again.input_tokens, again.cached_input_tokens, again.cache_write_tokens) == (500, 0, 0)
    assert again.cost_usd == pytest.approx((500 * 1.0 + 10 * 5.0) / 1e6)


# --------------------------------------------------------------------------- OpenAI
@pytest.mark.usefixtures("openai_client")
def test_openai_cached_tokens_are_read_and_priced_by_every_client(
    fake_keys, llm_store: Store, no_sleep
) -> None:
    with FakeOpenAIServer() as server:
        spec = f"openai:gpt-4.1-mini?base_url={server.base_url}"
        layer = ModelLayer(ModelConfig.from_args([f"all={spec}"], ["all.jitter=false"]),
                           llm_store, sleep=no_sleep)  # fmt: skip
        first = run_call(layer, role="critic", schema=Verdict, messages=_messages("One?"))
        second = run_call(layer, role="critic", schema=Verdict, messages=_messages("Two?"))
    assert first.cached_input_tokens == 0
    # the schema and the system message repeat: cached in whole 128-token blocks
    assert second.cached_input_tokens >= 1024 and second.cached_input_tokens % 128 == 0
    plain = second.input_tokens - second.cached_input_tokens
    expected = plain * 0.40 + second.cached_input_tokens * 0.10 + second.output_tokens * 1.60
    assert second.cost_usd == pytest.approx(expected / 1e6)


def test_the_fake_caches_whole_repeated_prefixes_only() -> None:
    cache = PrefixCache(min_tokens=0)
    schema = {"type": "json_schema", "json_schema": {"name": "V", "schema": {}}}
    system = {"role": "system", "content": "s" * 400}
    body = {"response_format": schema, "messages": [system, {"role": "user", "content": "a"}]}
    assert cache.openai_cached(body) == 0
    other_user = {**body, "messages": [system, {"role": "user", "content": "b"}]}
    repeated = cache.openai_cached(other_user)
    assert repeated == len(json.dumps(schema)) // 4 + len(json.dumps(system)) // 4
    other_system = {**body, "messages": [{"role": "system", "content": "t" * 400}]}
    assert cache.openai_cached(other_system) == len(json.dumps(schema)) // 4


def test_cost_with_cached_and_written_tokens() -> None:
    price = Price(2.0, 8.0, cached_input_per_mtok=0.5, cache_write_per_mtok=2.5)
    assert price.cost(1000, 100, 600, 200) == pytest.approx(
        (200 * 2.0 + 600 * 0.5 + 200 * 2.5 + 100 * 8.0) / 1e6
    )
    # no cached rate known: cached tokens pay the input rate (unknown is not free)
    assert Price(2.0, 8.0).cost(1000, 100, 600) == pytest.approx((1000 * 2 + 100 * 8) / 1e6)
    batch = lookup_price("openai", "gpt-4.1").for_delivery("batch")  # type: ignore[union-attr]
    assert batch is not None and batch.cached_input_per_mtok == pytest.approx(0.25)
    # an input-rate override leaves the cache's rate unknown: charged at the override
    overridden = resolve_price("openai", "gpt-4.1", 1.0, None)
    assert overridden is not None and overridden.cached_input_per_mtok is None
    kept = resolve_price("openai", "gpt-4.1", None, 4.0)
    assert kept is not None and kept.cached_input_per_mtok == pytest.approx(0.5)


# --------------------------------------------------------------------------- runs and compare
def _manifest(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for n, category in enumerate(["upper_normal", "middle_leg", "upper_bust", "tongue"]):
        Image.new("RGB", (40 + n, 30), (n * 40, 90, 160)).save(folder / f"{n}.png")
        rows.append({"image": f"{n}.png", "policy": "icm_sexy", "category": category})
    (folder / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder / "manifest.jsonl"


def _generate(manifest: Path, db: Path, run: str, server: FakeOpenAIServer) -> None:
    options = {
        "manifest": manifest,
        "db": db,
        "run": run,
        "rules": ["R1", "R2"],
        "roles": {"all": f"openai:gpt-4.1-mini?base_url={server.base_url}"},
        "role_settings": {"all": {"jitter": "false"}},
        "perception": False,
        "concurrency": 1,  # in order: every later sample finds the earlier samples' prefixes
    }
    asyncio.run(GenerationRun(load_config(None, options)).run())


def _app(name: str, command) -> typer.Typer:
    app = typer.Typer()
    app.command(name)(command)
    app.command("other")(lambda: None)  # two commands: Typer keeps the sub-command name
    return app


def test_a_run_with_cached_tokens_costs_less_in_icm_runs_and_compare(
    fake_keys, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path / "in")
    db = tmp_path / "icm.duckdb"
    # the same run twice: one server's usage reports cached prefixes (here from 64 tokens: the
    # roles' prefixes are short), the other's never does
    with (
        FakeOpenAIServer(responder=ICMResponder(), prompt_cache_min_tokens=64) as caching,
        FakeOpenAIServer(responder=ICMResponder(), prompt_cache_min_tokens=10**9) as plain,
    ):
        _generate(manifest, db, "cached", caching)
        _generate(manifest, db, "uncached", plain)
    listed = runner.invoke(_app("runs", runs_command), ["runs", "--db", str(db), "--json"])
    assert listed.exit_code == 0, listed.output
    runs = {r["name"]: r for r in json.loads(listed.stdout)}
    cached, uncached = runs["cached"], runs["uncached"]
    assert cached["accepted"] == uncached["accepted"] == 4
    assert cached["input_tokens"] == uncached["input_tokens"]  # the same prompts
    assert cached["cached_input_tokens"] > 0 and uncached["cached_input_tokens"] == 0
    saved = cached["cached_input_tokens"] * (0.40 - 0.10) / 1e6  # gpt-4.1-mini's two rates
    assert cached["cost_usd"] == pytest.approx(uncached["cost_usd"] - saved)
    table = runner.invoke(_app("runs", runs_command), ["runs", "--db", str(db)])
    assert f"{cached['cached_input_tokens']:,} input cached" in table.stdout

    compared = runner.invoke(
        _app("compare", compare_command),
        ["compare", "cached", "uncached", "--db", str(db), "--no-plots"],
    )
    assert compared.exit_code == 0, compared.output
    lines = compared.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "cost per accepted" in line)
    # the value, then its bootstrap interval on the next line, for each run
    assert lines[start].count("USD") == 2 and lines[start + 1].count("[") == 2
    assert "input read from prompt cache" in compared.stdout
    as_json = runner.invoke(
        _app("compare", compare_command),
        ["compare", "cached", "uncached", "--db", str(db), "--no-plots", "--json"],
    )
    figures = {r["name"]: r["per_accepted"] for r in json.loads(as_json.stdout)["runs"]}
    for name, run in (("cached", cached), ("uncached", uncached)):
        usd = figures[name]["usd"]
        assert usd["value"] == pytest.approx(run["cost_usd"] / 4)
        assert usd["ci_low"] <= usd["value"] <= usd["ci_high"]
    assert figures["cached"]["usd"]["value"] < figures["uncached"]["usd"]["value"]

    # the viewer: the run page, a call on a sample's trace, the compare page
    from fastapi.testclient import TestClient

    from graphs.viewer.app import create_app

    web = TestClient(create_app(db), base_url="http://127.0.0.1")
    run_page = web.get(f"/runs/{cached['run_id']}").text
    assert f"{cached['cached_input_tokens']:,} input read from the provider" in run_page
    assert "prompt cache" not in web.get(f"/runs/{uncached['run_id']}").text
    with Store.open(db, read_only=True) as store:
        call = store.rows(
            "SELECT sample_id, cached_input_tokens FROM llm_calls "
            "WHERE run_id = ? AND cached_input_tokens > 0 LIMIT 1",
            [cached["run_id"]],
        )[0]
    sample_page = web.get(f"/samples/{call['sample_id']}").text
    assert "in from prompt cache" in sample_page
    compare_page = web.get(
        "/compare", params=[("run", cached["run_id"]), ("run", uncached["run_id"])]
    ).text
    assert "input read from prompt cache" in compare_page and "tokens per accepted" in compare_page
    assert compare_page.count(" USD [") == 2  # cost per accepted with its interval, per run
