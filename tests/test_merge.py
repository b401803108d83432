"""``icm merge``: shard stores of one run come together as if the run had not been sharded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from test_generate import make_manifest, run_pipeline
from typer.testing import CliRunner

from data.store import Store
from data.store.merge import MergeError, merge_store
from graphs.cli import app

SAMPLE_TABLES = ("samples", "stage_outputs", "explanations", "qa_items", "critiques", "llm_calls")


def _snapshot(db: Path) -> dict[str, object]:
    """What a run produced, in a form two stores can be compared by."""
    with Store.open(db, read_only=True) as store:
        counts = {t: store.scalar(f"SELECT count(*) FROM {t}") for t in SAMPLE_TABLES}
        statuses = {r["sample_id"]: r["status"] for r in store.rows("SELECT * FROM samples")}
        explanations = {
            (r["sample_id"], r["rule_variant"]): r["verdict"]
            for r in store.rows("SELECT sample_id, rule_variant, verdict FROM explanations")
        }
        runs = store.rows("SELECT run_id, status FROM runs")
    return {"counts": counts, "statuses": statuses, "explanations": explanations, "runs": runs}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    manifest = make_manifest(root / "in")
    paths = {name: root / f"{name}.duckdb" for name in ("whole", "shard0", "shard1")}
    # One server and one run name for all three: the name fixes the sample ids, hence the split
    # (an id derived from the server's port would split the six samples differently each time,
    # now and then all into one shard); a responder without scripted faults answers every run
    # alike.
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        for name, shard in (("whole", None), ("shard0", "0/2"), ("shard1", "1/2")):
            run_pipeline(
                manifest, paths[name], server, shard=shard, max_stage_retries=1, run="sharded"
            )
    return paths


def _finished(db: Path) -> int:
    with Store.open(db, read_only=True) as store:
        return int(store.scalar("SELECT count(*) FROM samples WHERE status <> 'pending'"))


def test_merged_shards_equal_the_unsharded_run(shards: dict[str, Path], tmp_path: Path) -> None:
    halves = [_snapshot(shards["shard0"]), _snapshot(shards["shard1"])]
    for half in halves:  # each shard registered every sample but finished only its own
        assert "pending" in half["statuses"].values()
    merged = tmp_path / "merged.duckdb"
    with Store.open(merged) as target:
        first = merge_store(target, shards["shard0"])
        second = merge_store(target, shards["shard1"])
    assert first.samples_taken == _finished(shards["shard0"]) > 0
    assert second.samples_taken == _finished(shards["shard1"]) > 0
    assert first.samples_taken + second.samples_taken == 6
    whole, combined = _snapshot(shards["whole"]), _snapshot(merged)
    assert combined["statuses"] == whole["statuses"]
    assert "pending" not in combined["statuses"].values()
    assert combined["explanations"] == whole["explanations"]
    assert combined["counts"] == whole["counts"]
    assert combined["runs"] == whole["runs"] and whole["runs"][0]["status"] == "finished"


def test_merging_again_changes_nothing(shards: dict[str, Path], tmp_path: Path) -> None:
    merged = tmp_path / "merged.duckdb"
    with Store.open(merged) as target:
        for source in (shards["shard0"], shards["shard1"]):
            merge_store(target, source)
    before = _snapshot(merged)
    with Store.open(merged) as target:
        again = [merge_store(target, s) for s in (shards["shard0"], shards["shard1"])]
    assert _snapshot(merged) == before
    assert [r.samples_kept for r in again] == [_finished(shards[s]) for s in ("shard0", "shard1")]
    assert all(r.samples_taken == 0 for r in again)
    assert all(n == 0 for r in again for n in r.rows_added.values())


def test_a_shard_merges_into_another_shards_store(shards: dict[str, Path], tmp_path) -> None:
    """The target can be one of the shards (a copy here): its pending samples are filled in."""
    target_path = tmp_path / "copy.duckdb"
    target_path.write_bytes(shards["shard0"].read_bytes())
    with Store.open(target_path) as target:
        report = merge_store(target, shards["shard1"])
    assert report.samples_taken == _finished(shards["shard1"])
    assert _snapshot(target_path)["statuses"] == _snapshot(shards["whole"])["statuses"]


def test_bad_sources_are_refused_by_name_and_leave_the_target_alone(
    shards: dict[str, Path], tmp_path: Path
) -> None:
    target_path = tmp_path / "t.duckdb"
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database")
    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as conn:
        conn.execute("CREATE TABLE samples (x INTEGER)")
    newer = tmp_path / "newer.duckdb"
    newer.write_bytes(shards["shard0"].read_bytes())
    with duckdb.connect(str(newer)) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
    with Store.open(target_path) as target:
        cases = {
            tmp_path / "missing.duckdb": "no such database file",
            text: "cannot open as a DuckDB store",
            foreign: "not an icm store",
            newer: "schema version 99",
            target_path: "is the target store itself",
        }
        for path, why in cases.items():
            with pytest.raises(MergeError, match=why) as caught:
                merge_store(target, path)
            assert str(path) in str(caught.value)
        assert target.scalar("SELECT count(*) FROM samples") == 0
        # The target is still usable after the refusals.
        assert merge_store(target, shards["shard0"]).samples_taken == _finished(shards["shard0"])


def test_a_shard_still_being_written_is_refused(shards: dict[str, Path], tmp_path: Path) -> None:
    busy = tmp_path / "busy.duckdb"
    busy.write_bytes(shards["shard1"].read_bytes())
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(busy)!r}); print('held', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            Store.open(tmp_path / "t.duckdb") as target,
            pytest.raises(MergeError, match="held by another process"),
        ):
            merge_store(target, busy)
    finally:
        holder.kill()
        holder.wait()


def test_cli_merges_reports_and_fails_clearly(shards: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "cli.duckdb"
    ok = runner.invoke(
        app, ["merge", str(shards["shard0"]), str(shards["shard1"]), "--db", str(db), "--json"]
    )
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.stdout)
    expected = [_finished(shards["shard0"]), _finished(shards["shard1"])]
    assert [r["samples_taken"] for r in out["reports"]] == expected
    [run] = out["runs"]
    assert run["samples"] == 6 and run["pending"] == 0 and run["status"] == "finished"
    text = runner.invoke(app, ["merge", str(shards["shard0"]), "--db", str(db)])
    assert text.exit_code == 0
    assert f"0 finished samples taken, {expected[0]} already finished here kept" in text.stdout
    missing = runner.invoke(
        app, ["merge", str(shards["shard0"]), str(tmp_path / "nope.duckdb"), "--db", str(db)]
    )
    assert missing.exit_code == 1
    assert "nope.duckdb: no such database file" in missing.output
    assert "merged before it: " + str(shards["shard0"]) in missing.output


def test_a_later_result_replaces_an_earlier_finished_one(tmp_path: Path) -> None:
    """A ``--retry-failed`` rerun in a copy of the store (a shard, a worker) finishes later than
    the rejection it retried: merging brings its result in; merging the old store back changes
    nothing."""
    import shutil

    manifest = make_manifest(tmp_path / "in", ["upper_bust", "upper_normal"])
    first, retried = tmp_path / "first.duckdb", tmp_path / "retried.duckdb"
    always_wrong = ICMResponder(faults={"upper_bust": {"explainer": 99}})
    with FakeOpenAIServer(responder=always_wrong) as server:
        run_pipeline(manifest, first, server, max_stage_retries=0)
        shutil.copy(first, retried)
        server.responder = ICMResponder()  # the same endpoint now answers correctly
        run_pipeline(
            manifest, retried, server, max_stage_retries=0, retry_failed=True, use_cache=False
        )

    def statuses(db: Path) -> list[str]:
        with Store.open(db, read_only=True) as store:
            return [r["status"] for r in store.rows("SELECT status FROM samples ORDER BY 1")]

    assert statuses(first) == ["accepted", "rejected"]
    assert statuses(retried) == ["accepted", "accepted"]
    with Store.open(first) as target:
        report = merge_store(target, retried)
    assert report.samples_taken == 1 and report.samples_kept == 1
    assert statuses(first) == ["accepted", "accepted"]
    with Store.open(retried) as target:  # the older store has nothing newer to give
        assert merge_store(target, tmp_path / "first.duckdb").samples_taken == 0
    assert _snapshot(first)["explanations"] == _snapshot(retried)["explanations"]
