"""``delivery=batch``: the pipeline through the fake OpenAI Files + Batches endpoints.

Each round is one batch; a batch line is answered by the same responder as a live chat
request. Covered: a full run equals the synchronous run, a run killed between submit and
results resumes by polling the same batch, expired and partially failed batches redo their
items in the next round, item errors and refusals keep their statuses, the cost is halved.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAnthropicServer, FakeOpenAIServer, error, refuse
from fakes.icm_responder import ICMResponder
from pydantic import BaseModel
from test_generate import (
    REPO,
    _accepted,
    assert_complete_without_duplicates,
    make_manifest,
    run_pipeline,
)
from typer.testing import CliRunner

from agents.models import Message, ModelConfig, ModelLayer
from data.store import Store
from data.store import batches as stored
from evaluators.compare import compare_runs
from graphs.cli import app

CATEGORIES = ["upper_normal", "middle_leg", "upper_bust", "whole_normal"]
FAST = {"jitter": "false", "backoff_base_s": "0", "max_retries": "6"}
BATCH = {**FAST, "delivery": "batch", "batch_poll_s": "0"}


def _statuses(db: Path) -> dict[str, str]:
    with Store.open(db, read_only=True) as store:
        rows = store.rows("SELECT category, status FROM samples")
    return {r["category"]: r["status"] for r in rows}


def _batch_lines(server: FakeOpenAIServer) -> dict[str, list[str]]:
    """batch id -> the custom_ids it was submitted with."""
    return {
        batch_id: [line["custom_id"] for line in entry["lines"]]
        for batch_id, entry in server.batches.items()
    }


def test_a_batch_run_completes_every_stage_like_the_sync_run(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "in", CATEGORIES)
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        run_pipeline(manifest, tmp_path / "sync.duckdb", server, role_settings={"all": FAST})
        sync_chats = len(server.chat_requests())
        server.reset()
        summary = run_pipeline(
            manifest, tmp_path / "batch.duckdb", server, role_settings={"all": BATCH}
        )
        assert server.chat_requests() == []  # every request went through a batch
        lines = _batch_lines(server)
    assert summary.counts["accepted"] == len(CATEGORIES)
    assert _accepted(tmp_path / "batch.duckdb") == _accepted(tmp_path / "sync.duckdb")
    assert_complete_without_duplicates(tmp_path / "batch.duckdb", len(CATEGORIES))
    # Rounds, not one batch per call: each stage of all samples rides in one batch (the
    # per-rule explainers of a sample share the round), and every request was sent once.
    assert sum(len(ids) for ids in lines.values()) == sync_chats
    assert len(lines) < sync_chats / 2
    assert len(lines[next(iter(lines))]) == len(CATEGORIES)  # round 1: every describer
    with Store.open(tmp_path / "batch.duckdb", read_only=True) as store:
        rows = stored.batches(store)
        traced = store.scalar("SELECT count(*) FROM llm_calls WHERE status = 'ok'")
        params = [json.loads(r["p"]) for r in store.rows("SELECT params_json AS p FROM llm_calls")]
    assert [r.batch_id for r in rows] == list(lines)
    # each trace row names the batch that answered it
    assert {p["batch_id"] for p in params} == set(lines)
    assert {r.status for r in rows} == {"completed"}
    assert traced == sync_chats  # the same trace rows as synchronous calls


def test_critic_retries_go_into_the_next_round(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "in", CATEGORIES)
    faults = {"middle_leg": {"explainer": 1}, "upper_bust": {"explainer": 99}}
    with FakeOpenAIServer(responder=ICMResponder(faults=faults)) as server:
        run_pipeline(manifest, tmp_path / "sync.duckdb", server, role_settings={"all": FAST})
    with FakeOpenAIServer(responder=ICMResponder(faults=faults)) as server:
        run_pipeline(manifest, tmp_path / "batch.duckdb", server, role_settings={"all": BATCH})
        assert server.chat_requests() == []
    assert _statuses(tmp_path / "batch.duckdb") == _statuses(tmp_path / "sync.duckdb")
    assert _statuses(tmp_path / "batch.duckdb")["upper_bust"] == "rejected"
    assert _statuses(tmp_path / "batch.duckdb")["middle_leg"] == "accepted"


def _generate_cmd(manifest: Path, db: Path, url: str) -> list[str]:
    return [
        sys.executable, str(REPO / "graphs" / "generate.py"), str(manifest), "--db", str(db),
        "--rules", "R1,R2", "--role", f"all=openai-compatible:{url}#fake-model?delivery=batch",
        "--role-setting", "all.jitter=false", "--role-setting", "all.backoff_base_s=0",
        "--role-setting", "all.batch_poll_s=0.02",
        "--no-perception", "--concurrency", "8", "--run", "killed",
    ]  # fmt: skip


def test_killed_between_submit_and_results_the_rerun_polls_the_same_batch(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "in", CATEGORIES)
    db = tmp_path / "killed.duckdb"
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        reference = tmp_path / "ref.duckdb"
        run_pipeline(manifest, reference, server, role_settings={"all": BATCH})
        server.reset()
        server.reset_batches()
        server.gate.clear()  # every batch stays in_progress until the test releases it
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ICM_SNAPSHOT_INTERVAL_S": "0"}
        child = subprocess.Popen(_generate_cmd(manifest, db, server.base_url), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            # The batcher polls a batch only after its row is committed: the first poll
            # means the store holds the batch id.
            assert server.polled_event.wait(120), child.stderr and child.stderr.read()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            if child.stderr:
                child.stderr.close()
        assert server.batch_submissions == 1
        with Store.open(db, read_only=True) as store:
            rows = stored.batches(store)
            done = store.scalar("SELECT count(*) FROM samples WHERE status != 'pending'")
        assert [r.batch_id for r in rows] == ["batch_000001"]
        assert rows[0].status in ("validating", "in_progress")  # submitted, not ended
        assert done == 0
        first = _batch_lines(server)["batch_000001"]
        assert len(first) == len(CATEGORIES)
        server.gate.set()
        subprocess.run(_generate_cmd(manifest, db, server.base_url), check=True,
                       capture_output=True, timeout=300)  # fmt: skip
        lines = _batch_lines(server)
    # The rerun submitted the first round again? No: it polled batch_000001.
    submitted = [cid for ids in lines.values() for cid in ids]
    assert len(submitted) == len(set(submitted))
    assert not set(first) & {cid for b, ids in lines.items() if b != "batch_000001" for cid in ids}
    assert _accepted(db) == _accepted(reference)
    assert_complete_without_duplicates(db, len(CATEGORIES))
    with Store.open(db, read_only=True) as store:
        assert {r.status for r in stored.batches(store)} == {"completed"}


# --------------------------------------------------------------------------- the layer alone
class Verdict(BaseModel):
    label: str
    score: int


def _layer(server: FakeOpenAIServer, store: Store | None, *extra: str) -> ModelLayer:
    settings = [f"all.{k}={v}" for k, v in BATCH.items()] + [f"all.{s}" for s in extra]
    spec = f"all=openai-compatible:{server.base_url}#fake-model"
    return ModelLayer(ModelConfig.from_args([spec], settings), store)


def _ask(layer: ModelLayer, n: int) -> list[Any]:
    async def main() -> list[Any]:
        async def one(k: int) -> Any:
            with layer.batch_participant():
                messages = [Message("user", f"question {k}")]
                return await layer.call(role="describer", schema=Verdict, messages=messages)

        try:
            return await asyncio.gather(*(one(k) for k in range(n)))
        finally:
            await layer.aclose()

    return asyncio.run(main())


def test_an_expired_batch_redoes_its_unanswered_items_next_round(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server, Store.open(tmp_path / "s.duckdb") as store:
        server.expire_next, server.expired_answers = 1, 1
        results = _ask(_layer(server, store), 3)
        lines = _batch_lines(server)
        rows = stored.batches(store)
    assert [r.status for r in results] == ["ok"] * 3
    assert [len(ids) for ids in lines.values()] == [3, 2]  # the two unanswered, again
    assert sorted(r.requests for r in results) == [1, 2, 2]
    assert [r.status for r in rows] == ["expired", "completed"]


def test_a_partially_failed_batch_redoes_the_failed_items_and_keeps_errors_apart(
    tmp_path: Path,
) -> None:
    with FakeOpenAIServer() as server, Store.open(tmp_path / "s.duckdb") as store:
        server.fail_next_items = 1  # one line answers HTTP 500: retried in round 2
        server.push(error(400, "unknown parameter: foo"), refuse("I can't help with that."))
        results = _ask(_layer(server, store, "refusal_retries=0"), 4)
        lines = _batch_lines(server)
    statuses = sorted(r.status for r in results)
    # 400: fails fast with its message; the refusal is `refused`; none is a default value.
    assert statuses == ["failed", "ok", "ok", "refused"]
    failed = next(r for r in results if r.status == "failed")
    assert failed.value is None and "unknown parameter: foo" in (failed.error or "")
    assert [len(ids) for ids in lines.values()] == [4, 1]


def test_results_fetched_but_not_used_are_handed_out_once(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server, Store.open(tmp_path / "s.duckdb") as store:
        _ask(_layer(server, store, "max_retries=0"), 2)
        endpoint = stored.batches(store)[0].endpoint
        ids = _batch_lines(server)["batch_000001"]
        # every line was used: nothing is handed out again (a retry is a new submission)
        assert stored.stored_results(store, endpoint, ids) == {}
        assert stored.open_requests(store, endpoint, ids) == {}


# --------------------------------------------------------------------------- cost
def test_a_batch_run_costs_half_and_compare_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-batch-0123456789")
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:2])
    db = tmp_path / "cost.duckdb"
    # no prompt caching: the second run would read the prefixes the first one wrote (a Q-A
    # schema with its question patterns passes the 1,024-token minimum)
    with FakeOpenAIServer(responder=ICMResponder(), prompt_cache_min_tokens=10**9) as server:
        # the same body both ways (the SDK's post sends what the batch line carries), so the
        # fake counts the same tokens: only the price differs
        for name, settings in (("sync", {**FAST, "client": "sdk"}), ("batch", BATCH)):
            run_pipeline(
                manifest, db, server, run=name, use_cache=False,
                roles={"all": "openai:gpt-4o-mini"},
                role_settings={"all": {**settings, "base_url": server.base_url}},
            )  # fmt: skip
    with Store.open(db, read_only=True) as store:
        runs = {r["name"]: r for r in compare_runs(store, ["sync", "batch"]).runs}
    assert runs["sync"]["tokens"] == runs["batch"]["tokens"] > 0
    assert runs["batch"]["cost_usd"] == pytest.approx(runs["sync"]["cost_usd"] / 2, rel=1e-9)
    shown = CliRunner().invoke(app, ["compare", "sync", "batch", "--db", str(db), "--json",
                                     "--no-plots"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    costs = {r["name"]: r["cost_usd"] for r in json.loads(shown.output)["runs"]}
    assert costs["batch"] == pytest.approx(costs["sync"] / 2, rel=1e-9)


# --------------------------------------------------------------------------- Anthropic
def _anthropic_layer(server: FakeAnthropicServer, store: Store | None, *extra: str) -> ModelLayer:
    settings = [f"all.{k}={v}" for k, v in BATCH.items()] + [f"all.{s}" for s in extra]
    settings.append(f"all.base_url={server.base_url}")
    return ModelLayer(ModelConfig.from_args(["all=anthropic:claude-haiku-4-5"], settings), store)


@pytest.fixture
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-anthropic-batch-test-key")


@pytest.mark.usefixtures("anthropic_key")
def test_anthropic_message_batches_rounds_expiry_and_errors(tmp_path: Path) -> None:
    with FakeAnthropicServer() as server, Store.open(tmp_path / "s.duckdb") as store:
        server.expire_next, server.expired_answers = 1, 2  # round 1: two answered, two expired
        server.fail_next_items = 1  # ... and one of those two errored (api_error): retried
        results = _ask(_anthropic_layer(server, store), 4)
        sizes = [len(b["requests"]) for b in server.batches.values()]
        rows = stored.batches(store)
        assert server.chat_requests() == []
    assert [r.status for r in results] == ["ok"] * 4
    assert sizes == [4, 3]  # the errored and the two expired, in the next round
    assert [r.status for r in rows] == ["ended", "ended"]
    assert all(r.value is not None and r.input_tokens for r in results)


@pytest.mark.usefixtures("anthropic_key")
def test_anthropic_batch_item_errors_and_refusals_keep_their_statuses(tmp_path: Path) -> None:
    with FakeAnthropicServer() as server:
        server.push(error(400, "messages: bad input"), refuse("I can't help with that."))
        results = _ask(_anthropic_layer(server, None, "refusal_retries=0"), 3)
    assert sorted(r.status for r in results) == ["failed", "ok", "refused"]
    failed = next(r for r in results if r.status == "failed")
    assert failed.value is None and "messages: bad input" in (failed.error or "")


@pytest.mark.usefixtures("anthropic_key")
def test_anthropic_batch_calls_cost_half() -> None:
    def costs(*extra: str) -> list[float]:
        with FakeAnthropicServer() as server:
            settings = [f"all.{k}={v}" for k, v in FAST.items()] + [*extra]
            settings.append(f"all.base_url={server.base_url}")
            config = ModelConfig.from_args(["all=anthropic:claude-haiku-4-5"], settings)
            return [r.cost_usd for r in _ask(ModelLayer(config, None), 2)]

    sync = costs()
    batch = costs("all.delivery=batch", "all.batch_poll_s=0")
    assert all(c > 0 for c in sync)
    assert batch == pytest.approx([c / 2 for c in sync], rel=1e-9)
