"""The generation pipeline end to end, every role on an openai-compatible fake server."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import ChaosResponder, GatedResponder, ICMResponder
from PIL import Image

from data.export import export_run
from data.policy import load_policy
from data.store import Store
from graphs.config import load_config
from graphs.runner import GenerationRun, RunConfigError

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = ["upper_normal", "middle_leg", "upper_bust", "whole_normal", "lower_hips", "tongue"]
FAST = {"all": {"jitter": "false", "backoff_base_s": "0", "max_retries": "6"}}


def make_manifest(folder: Path, categories: list[str] = CATEGORIES) -> Path:
    """Small distinct images (distinct bytes = distinct samples) and a JSONL manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, category in enumerate(categories):
        Image.new("RGB", (40 + n, 30), (n * 30 % 256, 90, 160)).save(folder / f"{n}.png")
        rows.append({"image": f"{n}.png", "policy": "icm_sexy", "category": category})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run_pipeline(manifest: Path, db: Path, server: FakeOpenAIServer, **overrides: object):
    spec = f"openai-compatible:{server.base_url}#fake-model"
    options = {
        "manifest": manifest,
        "db": db,
        "rules": ["R1", "R2"],
        "roles": {"all": spec},
        "role_settings": FAST,
        "perception": False,
        **overrides,
    }
    return asyncio.run(GenerationRun(load_config(None, options)).run())


@pytest.fixture
def responder() -> ICMResponder:
    # middle_leg: one wrong verdict, then right (critic rejection + successful retry);
    # upper_bust: always wrong (rejected after the retry budget);
    # tongue: the LLM critic objects once to the Q-A (an llm-sourced retry).
    return ICMResponder(
        faults={"middle_leg": {"explainer": 1}, "upper_bust": {"explainer": 99}},
        critic_objects={"tongue": 1},
    )


@pytest.fixture
def server(responder: ICMResponder) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=responder) as fake:
        yield fake


def test_accepts_retries_and_rejects_with_traces(tmp_path: Path, server, responder) -> None:
    db = tmp_path / "icm.duckdb"
    summary = run_pipeline(make_manifest(tmp_path / "in"), db, server, max_stage_retries=2)
    assert summary.counts == {"accepted": 5, "rejected": 1, "failed": 0, "pending": 0}
    with Store.open(db, read_only=True) as store:
        status = {
            r["category"]: r["status"] for r in store.rows("SELECT category, status FROM samples")
        }
        assert status["upper_bust"] == "rejected"
        assert status["middle_leg"] == "accepted"
        # The retried explainer got the critic's feedback in its prompt. The two rule variants
        # run concurrently, so whichever asked first got the one bad answer.
        retried = store.rows(
            "SELECT o.rule_variant, o.attempt, o.feedback FROM stage_outputs o JOIN samples s "
            "USING (sample_id) WHERE s.category = 'middle_leg' AND o.stage = 'explainer' "
            "ORDER BY o.rule_variant, o.attempt"
        )
        by_rule: dict[str, list[dict]] = {}
        for row in retried:
            by_rule.setdefault(row["rule_variant"], []).append(row)
        assert sorted(len(v) for v in by_rule.values()) == [1, 2]
        bad_rule = next(rule for rule, rows in by_rule.items() if len(rows) == 2)
        first, second = by_rule[bad_rule]
        assert first["feedback"] is None
        expected = "sexy" if bad_rule == "R1" else "not sexy"
        assert f"verdict must be '{expected}'" in second["feedback"]
        sent = [
            m
            for r in store.rows(
                "SELECT c.messages_json FROM llm_calls c JOIN samples s USING (sample_id) "
                "WHERE s.category = 'middle_leg' AND c.stage = ? ORDER BY c.started_at",
                [f"explainer:{bad_rule}"],
            )
            for m in json.loads(r["messages_json"])
        ]
        assert any("Problems to avoid this time:" in m["text"] for m in sent)
        # The rejected sample: 1 + max_stage_retries attempts, then rejected with reasons.
        rejected = store.rows("SELECT reasons_json, attempts FROM samples WHERE status='rejected'")
        reasons = json.loads(rejected[0]["reasons_json"])
        assert any("verdict must be 'sexy'" in r for r in reasons)
        attempts = store.scalar(
            "SELECT max(attempt) FROM stage_outputs o JOIN samples s USING (sample_id) "
            "WHERE s.category = 'upper_bust' AND o.stage = 'explainer'"
        )
        assert attempts == 3
        # The LLM critic's objection sent the Q-A writer back once, with its words.
        llm = store.rows(
            "SELECT c.passed, c.message FROM critiques c JOIN samples s USING (sample_id) "
            "WHERE s.category = 'tongue' AND c.source = 'llm' ORDER BY c.attempt"
        )
        assert [r["passed"] for r in llm] == [False, True]
        qa_attempts = store.scalar(
            "SELECT max(attempt) FROM stage_outputs o JOIN samples s USING (sample_id) "
            "WHERE s.category = 'tongue' AND o.stage = 'qa_writer'"
        )
        assert qa_attempts == 2
        # Accepted samples: one explanation per rule, verdicts equal the rule table.
        rows = store.rows(
            "SELECT s.category, e.rule_variant, e.verdict, e.expected_verdict FROM explanations e "
            "JOIN samples s USING (sample_id) WHERE s.status = 'accepted'"
        )
        assert len(rows) == 10
        assert all(r["verdict"] == r["expected_verdict"] for r in rows)
        flips = {r["rule_variant"]: r["verdict"] for r in rows if r["category"] == "middle_leg"}
        assert flips == {"R1": "sexy", "R2": "not sexy"}
        # Q-A: the 3/3/2/2 of the paper plus one rule-table verdict question per rule.
        per_type = store.rows(
            "SELECT qa_type, count(*) AS n FROM qa_items q JOIN samples s USING (sample_id) "
            "WHERE s.category = 'upper_normal' GROUP BY qa_type"
        )
        assert {r["qa_type"]: r["n"] for r in per_type} == {
            "yes_no": 5, "multiple_choice": 3, "what": 2, "how": 2,
        }  # fmt: skip
        # Every call has a trace row with prompt ids and hashes.
        calls = store.rows("SELECT prompt_id, prompt_hash, status, role FROM llm_calls")
        assert calls and all(c["prompt_id"] and c["prompt_hash"] for c in calls)
        run = store.rows("SELECT * FROM runs")[0]
        assert run["status"] == "finished"
        bindings = json.loads(run["role_bindings_json"])
        assert bindings["explainer"]["spec"].startswith("openai-compatible:")
        # Only the roles the run asks are recorded, not every role `all=` binds.
        assert set(bindings) == {
            "describer", "context_interpreter", "explainer", "qa_writer", "critic",
        }  # fmt: skip
        assert json.loads(run["package_versions_json"])["langgraph"]
        assert "explainer.user" in json.loads(run["prompt_hashes_json"])


def test_rerun_skips_finished_and_retry_failed_redoes_rejected(tmp_path, server) -> None:
    db = tmp_path / "icm.duckdb"
    manifest = make_manifest(tmp_path / "in")
    run_pipeline(manifest, db, server)
    before = len(server.chat_requests())
    again = run_pipeline(manifest, db, server)
    assert again.processed == 0 and again.skipped == 6
    assert len(server.chat_requests()) == before
    retried = run_pipeline(manifest, db, server, retry_failed=True)
    assert retried.processed == 1  # only the rejected sample
    assert retried.counts["rejected"] == 1


def test_reusing_a_run_name_with_another_config_is_refused(tmp_path, server) -> None:
    db = tmp_path / "icm.duckdb"
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:1])
    run_pipeline(manifest, db, server, run="exp1")
    with pytest.raises(ValueError, match="another configuration"):
        run_pipeline(manifest, db, server, run="exp1", rules=["R1"])


def test_unannotated_images_get_a_proposed_category(tmp_path, server) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (30, 30), "white").save(folder / "a.png")
    manifest = folder / "m.csv"
    manifest.write_text("image,policy\na.png,icm_sexy\n")
    run_pipeline(manifest, tmp_path / "icm.duckdb", server)
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        row = store.rows("SELECT category, category_source, status FROM samples")[0]
    assert row["category_source"] == "proposed"
    assert row["category"] is not None


def test_text_only_rows_take_their_own_chain_with_retries(tmp_path, server) -> None:
    # A row with a given description runs in the graph of its own chain (explainer, Q-A
    # writer, critic): no image stage runs, and the critic's redo of the explainer (middle_leg
    # is answered wrongly once) and its rejection (upper_bust always) happen inside it.
    folder = tmp_path / "in"
    make_manifest(folder, CATEGORIES[:1])
    rows = [{"image": "0.png", "policy": "icm_sexy", "category": CATEGORIES[0]}] + [
        {"image": f"gone-{c}.png", "policy": "icm_sexy", "category": c,
         "description": f"A person on a beach; the {c.replace('_', ' ')} is visible."}
        for c in ("middle_leg", "upper_bust")
    ]  # fmt: skip
    manifest = folder / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run_pipeline(manifest, tmp_path / "icm.duckdb", server)
    assert (summary.counts["accepted"], summary.counts["rejected"]) == (2, 1)
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        stages = store.rows(
            "SELECT s.category, o.stage, max(o.attempt) AS attempts FROM stage_outputs o "
            "JOIN samples s USING (sample_id) GROUP BY s.category, o.stage"
        )
        status = {r["category"]: r["status"] for r in store.rows("SELECT * FROM samples")}
    ran = {(r["category"], r["stage"]): r["attempts"] for r in stages}
    assert ("middle_leg", "describer") not in ran and (
        "upper_bust",
        "context_interpreter",
    ) not in ran
    assert (CATEGORIES[0], "describer") in ran  # the image row took the image chain
    assert ran[("middle_leg", "explainer")] == 2 and status["middle_leg"] == "accepted"
    assert ran[("upper_bust", "explainer")] > 2 and status["upper_bust"] == "rejected"


def test_bad_manifest_names_file_and_line(tmp_path, server) -> None:
    folder = tmp_path / "in"
    make_manifest(folder, CATEGORIES[:1])
    bad = folder / "bad.jsonl"
    bad.write_text('{"image": "0.png", "policy": "icm_sexy", "category": "uper_leg"}\n{oops\n')
    with pytest.raises(ValueError) as info:
        run_pipeline(bad, tmp_path / "icm.duckdb", server)
    assert f"{bad}:2: not valid JSON" in str(info.value)


def test_missing_image_with_skip_bad_rows_fails_its_sample_and_the_batch_carries_on(
    tmp_path, server
) -> None:
    # Behaviour change (issue 15.5): without --skip-bad-rows a missing image now stops the run
    # before any model loads (tests/test_manifest_checks.py); with it, the row fails as before.
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:2])
    (tmp_path / "in" / "1.png").unlink()
    summary = run_pipeline(manifest, tmp_path / "icm.duckdb", server, skip_bad_rows=True)
    assert summary.counts["accepted"] == 1 and summary.counts["failed"] == 1
    assert summary.bad_rows == [f"{manifest}:2: image '1.png': image not found"]
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        reasons = store.scalar("SELECT reasons_json FROM samples WHERE status = 'failed'")
    assert "image not found" in reasons and f"{manifest}:2" in reasons


def test_chaos_every_sample_ends_with_a_reason(tmp_path: Path) -> None:
    """429s, 500s, malformed JSON and refusals at random: the run completes, nothing vanishes."""
    chaos = ChaosResponder(ICMResponder(), p=0.35, seed=7)
    categories = CATEGORIES * 2
    with FakeOpenAIServer(responder=chaos) as server:
        summary = run_pipeline(make_manifest(tmp_path / "in", categories), tmp_path / "c.duckdb",
                               server, role_settings={"all": {**FAST["all"], "max_retries": "2",
                               "parse_retries": "1"}})  # fmt: skip
    assert set(chaos.injected) == {"429", "500", "malformed", "refusal"}
    assert sum(summary.counts.values()) == len(categories)
    assert summary.counts["pending"] == 0
    with Store.open(tmp_path / "c.duckdb", read_only=True) as store:
        rows = store.rows("SELECT status, reasons_json FROM samples")
        statuses = store.rows("SELECT DISTINCT status FROM llm_calls")
    assert len(rows) == len(categories)
    for row in rows:
        if row["status"] != "accepted":
            assert json.loads(row["reasons_json"]), row
    seen = {r["status"] for r in statuses}
    assert "ok" in seen and ({"refused", "parse_failed", "failed"} & seen)


def test_exports_of_a_generated_run(tmp_path: Path, server) -> None:
    import datasets

    db = tmp_path / "icm.duckdb"
    summary = run_pipeline(make_manifest(tmp_path / "in"), db, server)
    with Store.open(db, read_only=True) as store:
        llava = export_run(store, summary.run_id, "llava", tmp_path / "x.llava.json")
        export_run(store, summary.run_id, "parquet", tmp_path / "x.parquet")
        export_run(store, summary.run_id, "hf", tmp_path / "x.hf")
    records = json.loads((tmp_path / "x.llava.json").read_text())
    assert len(records) == llava.records == 10  # 5 accepted samples x 2 rules
    for record in records:
        assert Path(record["image"]).is_file()
        roles = [turn["from"] for turn in record["conversations"]]
        assert roles[0] == "human" and len(roles) % 2 == 0
        assert all(a != b for a, b in itertools.pairwise(roles))
        assert record["conversations"][0]["value"].startswith("<image>\n")
    frame = pd.read_parquet(tmp_path / "x.parquet")
    assert len(frame) == 10
    assert len(datasets.load_from_disk(str(tmp_path / "x.hf"))) == 10


def test_export_all_shows_what_a_rejected_sample_said(tmp_path: Path, server) -> None:
    """Rejected samples keep their last explanations and Q-A: --all exports them, with status.
    (Without stage checks: with them a sample whose explanation is rejected never reaches the
    Q-A writer, see tests/test_stage_checks.py.)"""
    db = tmp_path / "icm.duckdb"
    summary = run_pipeline(
        make_manifest(tmp_path / "in"), db, server, max_stage_retries=1, stage_checks=False
    )
    with Store.open(db, read_only=True) as store:
        export_run(store, summary.run_id, "llava", tmp_path / "a.llava.json", include_all=True)
        export_run(store, summary.run_id, "parquet", tmp_path / "a.parquet", include_all=True)
        accepted_only = export_run(store, summary.run_id, "llava", tmp_path / "x.llava.json")
        last = store.rows(
            "SELECT o.rule_variant, o.output_json FROM stage_outputs o JOIN samples s "
            "USING (sample_id) WHERE s.category = 'upper_bust' AND o.stage = 'explainer' "
            "QUALIFY o.attempt = max(o.attempt) OVER (PARTITION BY o.rule_variant)"
        )
    assert accepted_only.records == 10  # rejected samples stay out of a plain export
    frame = pd.read_parquet(tmp_path / "a.parquet")
    assert len(frame) == 12  # 5 accepted + 1 rejected sample, x 2 rules
    bust = frame[frame["category"] == "upper_bust"].sort_values("rule")
    assert list(bust["status"]) == ["rejected", "rejected"]
    assert list(bust["rule"]) == ["R1", "R2"]
    # Exactly what the explainer's last attempt argued (for the wrong label), then the
    # conclusion code writes from the rule table (issue 15: the verdict is the table's).
    said = {r["rule_variant"]: json.loads(r["output_json"]) for r in last}
    for row in bust.itertuples():
        conclusion = f"Conclusion: The picture is {row.expected_verdict}."
        assert row.explanation == f"{said[row.rule]['explanation']} {conclusion}"
        assert row.verdict == row.expected_verdict
        assert "verdict" not in said[row.rule]  # the explainer no longer states one
        # The Q-A writer writes for the first rule; no synthesised verdict question is added.
        assert (len(row.qa) > 0) == (row.rule == "R1")
        assert not any(q["question"].startswith("Under rule") for q in row.qa)
    meta = [json.loads(line) for line in (tmp_path / "a.llava.meta.jsonl").read_text().splitlines()]
    assert sorted(m["status"] for m in meta if m["category"] == "upper_bust") == ["rejected"] * 2


def _generate_cmd(manifest: Path, db: Path, url: str) -> list[str]:
    return [
        sys.executable, str(REPO / "graphs" / "generate.py"), str(manifest), "--db", str(db),
        "--rules", "R1,R2", "--role", f"all=openai-compatible:{url}#fake-model",
        "--role-setting", "all.jitter=false", "--role-setting", "all.backoff_base_s=0",
        "--no-perception", "--concurrency", "2", "--run", "killed",
    ]  # fmt: skip


def _accepted(db: Path) -> list[tuple]:
    with Store.open(db, read_only=True) as store:
        return [
            tuple(r.values())
            for r in store.rows(
                "SELECT s.image_sha256, e.rule_variant, e.verdict, e.explanation FROM samples s "
                "JOIN explanations e USING (sample_id) WHERE s.status = 'accepted' ORDER BY 1, 2"
            )
        ]


#: each table with the key no two of its rows may share
UNIQUE_KEYS = (
    ("samples", "sample_id"),
    ("explanations", "sample_id, rule_variant"),
    ("qa_items", "qa_id"),
    ("stage_outputs", "output_id"),
    ("llm_calls", "call_id"),
)


def assert_complete_without_duplicates(db: Path, samples: int) -> None:
    """Every sample finished, none twice, no row of a sample repeated."""
    with Store.open(db, read_only=True) as store:
        for table, key in UNIQUE_KEYS:
            dupes = store.scalar(
                f"SELECT count(*) FROM (SELECT {key} FROM {table} "
                f"GROUP BY {key} HAVING count(*) > 1)"
            )
            assert dupes == 0, table
        assert store.scalar("SELECT count(*) FROM samples") == samples
        assert store.scalar("SELECT count(*) FROM samples WHERE status = 'pending'") == 0


def finished_in_snapshot(db: Path) -> int:
    """Finished samples in the snapshot a running generation published (0 before the first)."""
    from data.store.snapshot import open_snapshot, snapshot_path

    if not snapshot_path(db).exists():
        return 0
    with open_snapshot(snapshot_path(db)) as store:
        return int(store.scalar("SELECT count(*) FROM samples WHERE status != 'pending'"))


def wait_for(condition, what: str, timeout_s: float = 300.0) -> None:
    """Until ``condition()`` holds (an event in another process: a row committed); the timeout
    only bounds a hang, it never paces the test."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # 18 distinct categories: text-only requests of equal categories would be cache hits.
    categories = list(load_policy("icm_sexy").categories)[:18]
    manifest = make_manifest(tmp_path / "in", categories)
    gate = GatedResponder(ICMResponder())
    with FakeOpenAIServer(responder=gate) as server:
        reference = tmp_path / "ref.duckdb"
        subprocess.run(_generate_cmd(manifest, reference, server.base_url), check=True,
                       capture_output=True, timeout=600)  # fmt: skip
        server.reset()
        db = tmp_path / "killed.duckdb"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ICM_SNAPSHOT_INTERVAL_S": "0.2"}
        gate.arm(open_for=70)  # then no sample can finish: the kill lands mid-run
        child = subprocess.Popen(_generate_cmd(manifest, db, server.base_url), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            assert gate.holding.wait(300), "the run never reached the held requests"
            wait_for(lambda: finished_in_snapshot(db) > 0, "a finished sample to be committed")
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        finally:
            gate.release()
        with Store.open(db, read_only=True) as store:
            done = store.scalar("SELECT count(*) FROM samples WHERE status != 'pending'")
        assert 0 < done < len(categories), "kill should land mid-run"
        subprocess.run(_generate_cmd(manifest, db, server.base_url), check=True,
                       capture_output=True, timeout=600)  # fmt: skip
    assert _accepted(db) == _accepted(reference)
    assert_complete_without_duplicates(db, len(categories))


@pytest.mark.parametrize("send_images", [False, True])
def test_describer_is_told_whether_it_sees_the_image(tmp_path, server, send_images) -> None:
    settings = {"all": {**FAST["all"], "send_images": str(send_images).lower()}}
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:1])
    run_pipeline(manifest, tmp_path / "icm.duckdb", server, role_settings=settings)
    describer = [r for r in server.chat_requests() if "You are the describer" in json.dumps(r.body)]
    user = describer[0].body["messages"][-1]["content"]
    text = json.dumps(user)
    has_image_block = isinstance(user, list) and any(p.get("type") == "image_url" for p in user)
    assert has_image_block is send_images
    assert ("Describe the attached image." in text) is send_images
    assert ("You cannot see the image" in text) is (not send_images)


def test_a_model_that_cannot_start_stops_the_run_before_any_sample(tmp_path: Path) -> None:
    """A bad binding fails once, naming the role and spec, instead of failing every sample."""
    options = {
        "manifest": make_manifest(tmp_path / "in"),
        "db": tmp_path / "icm.duckdb",
        "roles": {"all": "openai-compatible:http://127.0.0.1:9/v1#m", "critic": "hf:/no/model"},
        "perception": False,
    }
    with pytest.raises(RunConfigError, match=r"role critic: hf:/no/model: no config.json"):
        asyncio.run(GenerationRun(load_config(None, options)).run())
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM llm_calls") == 0
        assert store.scalar("SELECT status FROM runs") == "interrupted"


def test_a_run_keeps_no_images_and_restores_the_collector(tmp_path: Path, server) -> None:
    """Decoded images live only while their sample is in flight (a long run would otherwise
    hold every image it has seen), and the run's collector tuning does not outlive it."""
    import gc

    before = gc.get_threshold()
    manifest = make_manifest(tmp_path / "in", CATEGORIES[:3])
    spec = f"openai-compatible:{server.base_url}#fake-model"
    config = load_config(
        None,
        {"manifest": manifest, "db": tmp_path / "x.duckdb", "rules": ["R1"],
         "roles": {"all": spec}, "role_settings": FAST, "perception": False},
    )  # fmt: skip
    job = GenerationRun(config)
    summary = asyncio.run(job.run())
    assert summary.processed == 3
    assert job._images == {}
    assert gc.get_threshold() == before
    assert not gc.get_freeze_count()


def test_an_option_the_model_already_lettered_keeps_one_letter() -> None:
    """qwen2.5-1.5b writes options as "A. Yes": the stored item must not read "A. A. Yes"."""
    from types import SimpleNamespace

    from data.policy import load_policy
    from graphs.runner import GenerationRun

    sample = SimpleNamespace(sample_id="s1", run_id="r1", rules=("R1",))
    out = {"qa": {"multiple_choice": [{"question": "Is the image horrifying?",
                                       "options": ["A. Yes", "B) No", "Maybe", "D. Not sure"],
                                       "answer": "B"}]}, "qa_rule": "R1"}  # fmt: skip
    policy = load_policy("horrifying")
    [row] = GenerationRun._qa_rows(sample, policy, out, None, add_verdict_questions=False)
    assert json.loads(row["options_json"]) == ["A. Yes", "B. No", "C. Maybe", "D. Not sure"]
