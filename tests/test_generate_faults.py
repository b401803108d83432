"""Whole runs against a faulty OpenAI-compatible fake (issue 16): a single refusal never ends a
sample, a model that always refuses ends every sample ``failed`` with ``refused`` after the
configured attempts, and a text-only vLLM endpoint gets the image once, then text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer, refuse
from fakes.icm_responder import ISSUE_16_FAULTS, ChaosResponder, ICMResponder
from fakes.openai_server import has_image
from test_generate import FAST, make_manifest, run_pipeline

from agents.models.providers.openai_chat import forget_learned_dialects
from data.policy import load_policy
from data.store import Store
from data.store.outcomes import failure_kind
from graphs.commands.runs import run_overview, sample_listing

#: eight distinct categories (distinct images and prompts: no cache hits between samples)
CATEGORIES = list(load_policy("icm_sexy").categories)[:8]


@pytest.fixture(autouse=True)
def _fresh_probe():
    forget_learned_dialects()  # what send_images=auto learned is keyed by (reused) ports
    yield
    forget_learned_dialects()


def _samples(db: Path) -> list[dict]:
    with Store.open(db, read_only=True) as store:
        return store.rows("SELECT sample_id, status, reasons_json FROM samples ORDER BY 1")


def test_issue_16_fault_mix_no_sample_fails_for_a_single_refusal(tmp_path: Path) -> None:
    # 10 % 429, 10 % 500, 10 % truncated JSON, 5 % refusals; drawn per request (not in arrival
    # order), so the same requests are faulted on every machine however loaded it is
    chaos = ChaosResponder(ICMResponder(), faults=ISSUE_16_FAULTS, seed=3, by_request=True)
    db = tmp_path / "chaos.duckdb"
    with FakeOpenAIServer(responder=chaos) as server:
        summary = run_pipeline(make_manifest(tmp_path / "in", CATEGORIES), db, server)
    # every kind of fault was injected, refusals several times (which requests get one depends
    # only on their bodies, so the count changes only when a prompt template does)
    assert chaos.injected["refusal"] >= 2 and set(chaos.injected) == set(ISSUE_16_FAULTS)
    samples = _samples(db)
    assert len(samples) == 8 and summary.counts["pending"] == 0
    # no sample fails for a refusal (each is asked again); a sample may fail only where another
    # fault hit a call and its every re-ask (truncated JSON twice in a row: ~1 % of calls, drawn
    # by request body, so which one depends on the prompt templates)
    failed = [s for s in samples if s["status"] == "failed"]
    assert not [s for s in failed if "refus" in s["reasons_json"]], failed
    assert all("cut off at max_tokens" in s["reasons_json"] for s in failed), failed
    assert len(failed) <= 1, failed
    with Store.open(db, read_only=True) as store:
        # every refused attempt was asked again (a retry may be refused too: then again)
        retried = store.rows(
            "SELECT DISTINCT r.call_id FROM llm_calls r JOIN llm_calls a "
            "ON json_extract_string(a.params_json, '$.retry_of') = r.call_id "
            "WHERE r.status = 'refused'"
        )
        refused = store.scalar("SELECT count(*) FROM llm_calls WHERE status = 'refused'")
    assert refused == chaos.injected["refusal"] and len(retried) == refused


def test_without_refusal_retries_the_same_faults_fail_samples_as_refused(tmp_path: Path) -> None:
    """The contrast (the behaviour issue 16 measured): one refusal used to end its sample."""
    chaos = ChaosResponder(ICMResponder(), faults=ISSUE_16_FAULTS, seed=3, by_request=True)
    db = tmp_path / "chaos0.duckdb"
    settings = {"all": {**FAST["all"], "refusal_retries": "0"}}
    with FakeOpenAIServer(responder=chaos) as server:
        run_pipeline(make_manifest(tmp_path / "in", CATEGORIES), db, server, role_settings=settings)
    kinds = [failure_kind(s["status"], s["reasons_json"]) for s in _samples(db)]
    assert kinds.count("refused") >= 1


@pytest.mark.parametrize("retries", [2, 1])
def test_a_model_that_always_refuses_fails_every_sample_as_refused(tmp_path, retries) -> None:
    db = tmp_path / "refused.duckdb"
    settings = {"all": {**FAST["all"], "refusal_retries": str(retries)}}
    with FakeOpenAIServer(responder=lambda body: refuse()) as server:
        summary = run_pipeline(
            make_manifest(tmp_path / "in", CATEGORIES), db, server, role_settings=settings
        )
        requests = len(server.chat_requests())
    assert summary.counts["failed"] == 8
    assert requests == 8 * (1 + retries)  # the describer of each sample, each attempt counted
    for sample in _samples(db):
        assert sample["status"] == "failed"
        assert failure_kind(sample["status"], sample["reasons_json"]) == "refused"
        [reason] = json.loads(sample["reasons_json"])
        assert reason.startswith("describer: refused:")
        assert f"refused {retries + 1} times" in reason
    with Store.open(db, read_only=True) as store:
        [run] = run_overview(store)
        assert store.scalar("SELECT count(*) FROM llm_calls WHERE status = 'refused'") == requests
        listed = sample_listing(store, run["run_id"], status="refused")["samples"]
        failed = sample_listing(store, run["run_id"], status="failed")["samples"]
    assert (run["failed"], run["refused"]) == (8, 8)
    # icm samples: a refused sample is listed as "failed (refused)", and --status refused
    # selects exactly the failed samples whose model declined
    assert len(listed) == len(failed) == 8
    assert {(s["status"], s["failure"], s["shown_status"]) for s in listed} == {
        ("failed", "refused", "failed (refused)")
    }


def test_a_text_only_vllm_describer_gets_the_image_once_then_text(tmp_path: Path) -> None:
    db = tmp_path / "vllm.duckdb"
    with FakeOpenAIServer(responder=ICMResponder(), text_only="vllm") as server:
        summary = run_pipeline(
            make_manifest(tmp_path / "in", CATEGORIES[:3]), db, server, concurrency=1
        )
        describer = [
            r.body
            for r in server.chat_requests()
            if "You are the describer" in r.body["messages"][0]["content"]
        ]
    assert summary.counts["accepted"] == 3
    assert [has_image(b) for b in describer] == [True, False, False, False]
    blind = [b["messages"][1]["content"] for b in describer[1:]]
    assert all(text.startswith("You cannot see the image") for text in blind)
    with Store.open(db, read_only=True) as store:
        modes = store.rows(
            "SELECT image_mode, status FROM llm_calls WHERE role = 'describer' ORDER BY started_at"
        )
    assert [m["image_mode"] for m in modes] == [
        "native",
        "text-only retry (endpoint takes no images)",
        "none (text-only model)",
        "none (text-only model)",
    ]
    assert modes[0]["status"] == "failed"
