"""What ``--executor ray`` rests on, without Ray: samples run away from the store and come back
as rows (``graphs/sample_worker.py``, ``data/store/batch.SampleWrites``), and the driver's
cache replay keeps cached calls from being paid again. Runs where Ray is not installed."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from rich.console import Console
from test_generate import FAST, assert_complete_without_duplicates, make_manifest, run_pipeline
from test_workers import CATEGORIES

from data.images import ImageLoadError
from data.store import Store
from data.store.batch import SampleWrites, replay
from graphs.config import load_config
from graphs.runner import GenerationRun
from graphs.sample_worker import Dispatch, SampleWorker, apply_result

SAMPLES = CATEGORIES[:6]
#: each table's content that two runs of the same samples must share (no random ids, no times)
COMPARED = {
    "samples": "sample_id, status, category, attempts, reasons_json",
    "stage_outputs": "output_id, stage, rule_variant, attempt, status, output_json, feedback",
    "critiques": "critique_id, stage, attempt, check_name, source, passed, message",
    "explanations": "sample_id, rule_variant, verdict, explanation",
    "qa_items": "qa_id, qa_type, question, options_json, answer",
    "llm_calls": "sample_id, stage, role, attempt, status, cache_hit, parsed_json",
}


def rows_of(db: Path, tables: dict[str, str] = COMPARED) -> dict[str, set[tuple]]:
    with Store.open(db, read_only=True) as store:
        return {
            table: {tuple(r.values()) for r in store.rows(f"SELECT {columns} FROM {table}")}
            for table, columns in tables.items()
        }


class InProcess:
    """The Ray driver's loop without Ray: replay against the cache, run what missed on a
    collecting worker, apply each result through the driver's writer."""

    def __init__(self) -> None:
        self.dispatched: list[Dispatch] = []

    def loads_models_here(self) -> bool:
        return True

    async def drive(self, run, store, policies, todo, summary, on_sample) -> None:
        worker = SampleWorker(run, policies)  # no store: like an actor
        await worker.start()
        replayer = SampleWorker(run, policies, store=store, cache_only=True)
        for sample in todo:
            got = await replayer.replay(sample)
            if isinstance(got, Dispatch):
                self.dispatched.append(got)
                got = await worker.run_one(got)
            apply_result(run.writer, got, run, summary, on_sample)
        await worker.close()
        await replayer.close()


def _run(manifest: Path, db: Path, server: FakeOpenAIServer, run: str, executor: InProcess):
    spec = f"openai-compatible:{server.base_url}#fake-model"
    options = {"manifest": manifest, "db": db, "rules": ["R1", "R2"], "roles": {"all": spec},
               "role_settings": FAST, "perception": False, "run": run}  # fmt: skip
    console = Console(file=io.StringIO())
    return asyncio.run(GenerationRun(load_config(None, options), console, executor).run())


def test_rows_shipped_back_and_applied_equal_the_single_process_run(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "in", SAMPLES)
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        run_pipeline(manifest, tmp_path / "ref.duckdb", server, run="r")
        executor = InProcess()
        summary = _run(manifest, tmp_path / "shipped.duckdb", server, "r", executor)
    assert summary.processed == len(SAMPLES) and summary.calls > 0
    assert len(executor.dispatched) == len(SAMPLES)  # nothing cached: every sample went out
    assert_complete_without_duplicates(tmp_path / "shipped.duckdb", len(SAMPLES))
    ours, theirs = rows_of(tmp_path / "shipped.duckdb"), rows_of(tmp_path / "ref.duckdb")
    for table in COMPARED:
        assert ours[table] == theirs[table], table
    cache = {"llm_cache": "cache_key, schema_name, parsed_json"}
    assert rows_of(tmp_path / "shipped.duckdb", cache) == rows_of(tmp_path / "ref.duckdb", cache)


def test_the_replay_keeps_cached_samples_and_ships_only_the_hits(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "in", SAMPLES)
    db = tmp_path / "x.duckdb"
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        _run(manifest, db, server, "first", InProcess())
        asked = len(server.chat_requests())
        # Every call of a second run of the same requests is cached: nothing leaves the driver.
        cached = InProcess()
        second = _run(manifest, db, server, "second", cached)
        assert cached.dispatched == [] and len(server.chat_requests()) == asked
        assert second.calls == second.cached_calls > 0
        # Without the critic's entries, each sample goes out with the entries that hit and
        # the worker asks the model only for the critique.
        with Store.open(db) as store:
            store.execute("DELETE FROM llm_cache WHERE schema_name LIKE 'Critique%'")
        partial = InProcess()
        _run(manifest, db, server, "third", partial)
        asked_now = [r.body for r in server.chat_requests()[asked:]]
    assert len(partial.dispatched) == len(SAMPLES)
    assert all(d.seeds for d in partial.dispatched)
    assert len(asked_now) == len(SAMPLES)  # one critique per sample, nothing else
    third = rows_of(db, {"llm_calls": "sample_id, role, cache_hit"})["llm_calls"]
    with Store.open(db, read_only=True) as store:
        third_ids = store.rows("SELECT sample_id FROM samples WHERE run_id = 'third'")
    ids = {r["sample_id"] for r in third_ids}
    mine = [row for row in third if row[0] in ids]
    assert {(role, hit) for _, role, hit in mine} == {
        ("describer", True), ("context_interpreter", True), ("explainer", True),
        ("qa_writer", True), ("critic", False),
    }  # fmt: skip


def test_perception_failing_in_the_replay_fails_only_its_sample(tmp_path, monkeypatch) -> None:
    # The driver's replay runs perception outside any sample's guard; an image that cannot be
    # read there must fail that sample (on the worker, inside outcome_of), not end the run.
    manifest = make_manifest(tmp_path / "in", SAMPLES)
    unreadable = "2.png"

    def evidence_for(self, store, sample):
        if sample.image_path.endswith(unreadable):
            raise ImageLoadError(sample.image_path, "truncated")
        return None, None

    monkeypatch.setattr(GenerationRun, "evidence_for", evidence_for)
    spec = "openai-compatible:{}#fake-model"
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        options = {"manifest": manifest, "db": tmp_path / "x.duckdb", "rules": ["R1", "R2"],
                   "roles": {"all": spec.format(server.base_url)}, "role_settings": FAST,
                   "perception": True, "run": "p"}  # fmt: skip
        console = Console(file=io.StringIO())
        summary = asyncio.run(GenerationRun(load_config(None, options), console, InProcess()).run())
    assert summary.processed == len(SAMPLES)
    assert summary.counts["failed"] == 1 and summary.counts["accepted"] == len(SAMPLES) - 1
    with Store.open(tmp_path / "x.duckdb", read_only=True) as store:
        reasons = store.scalar("SELECT reasons_json FROM samples WHERE status = 'failed'")
    assert "truncated" in reasons


def test_sample_writes_keep_each_sample_apart_and_replay_in_order() -> None:
    writes = SampleWrites()
    writes.add("explanations", [{"sample_id": "a", "rule_variant": "R1"},
                                {"sample_id": "b", "rule_variant": "R1"}])  # fmt: skip
    writes.delete("qa_items", "sample_id", "a")
    writes.update("samples", "sample_id", {"sample_id": "a", "status": "accepted"})
    with pytest.raises(ValueError, match="per-sample"):
        writes.delete("runs", "run_id", "r")
    with pytest.raises(ValueError, match="sample_id"):
        writes.add("policies", [{"name": "p"}])
    taken = writes.take("a")
    assert [w[0] for w in taken] == ["add", "delete", "update"]
    assert writes.take("a") == []
    writes.drop("b")
    writes.add("explanations", [{"sample_id": "b", "rule_variant": "R2"}])
    assert writes.take("b") == []  # a dropped sample's late writes are ignored

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def add(self, table, rows, *, on_conflict="error", key=None) -> None:
            self.calls.append(("add", table, list(rows)))

        def delete(self, table, column, value) -> None:
            self.calls.append(("delete", table, value))

        def update(self, table, key, row) -> None:
            self.calls.append(("update", table, row["status"]))

    recorder = Recorder()
    replay(taken, recorder)
    assert recorder.calls == [
        ("add", "explanations", [{"sample_id": "a", "rule_variant": "R1"}]),
        ("delete", "qa_items", "a"),
        ("update", "samples", "accepted"),
    ]
    with pytest.raises(ValueError, match="not a queued write"):
        replay([("flush", (), {})], recorder)
