"""A small store shaped like what a generation run leaves, built row by row for the export and
runs/traces tests.

Run ``run-a`` ("offline-demo"): two accepted samples, one rejected after a critic-driven retry of
its R2 explanation, two failed in the describer, one pending. Run ``run-b`` ("gpt4o-trial"): one
accepted sample, so exports can be checked for not mixing runs. Numbers the tests assert on (tokens,
costs, counts) are written out here literally.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from data.store import Store, to_json

BASE = datetime(2025, 3, 1, 9, 0, 0)
IMAGE_DIR = "/data/icm/images"

RULE_TEXT = {
    "R1": "audience: adults; open culture",
    "R2": "audience: 13 and older; open culture",
}

FEEDBACK = (
    "verdict_matches_rule failed: rule R2 maps 'sexy' to Yes for an audience of 13 and older, "
    "the explanation concluded No. Revise the verdict and the explanation."
)
REJECT_REASON = "explainer[R2]: verdict No does not match the rule table (Yes) after 2 attempts"
FAIL_REASON = "describer: parse_failed 3 times (output was not valid JSON)"


def t(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def _question(rule: str, category: str) -> str:
    return f"Under rule {rule} ({RULE_TEXT[rule]}), is the image {category}? Explain why."


def _run(run_id: str, name: str, created: float, bindings: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "name": name,
        "kind": "generate",
        "status": "finished",
        "created_at": t(created),
        "finished_at": t(created + 300),
        "command": "python graphs/generate.py",
        "config_json": to_json({"concurrency": 4, "max_attempts": 2}),
        "role_bindings_json": to_json(bindings),
        "policy_name": "icm-default",
        "rule_variants": "R1,R2",
        "git_revision": "4c3094b",
        "package_versions_json": to_json({"duckdb": "2.0.1"}),
        "prompt_hashes_json": to_json({"explainer.user": "9f1c2ab0"}),
    }


def _sample(
    sid: str,
    run_id: str,
    created: float,
    image: str,
    category: str,
    status: str,
    reasons: list[str],
    attempts: int,
) -> dict[str, Any]:
    return {
        "sample_id": sid,
        "run_id": run_id,
        "image_sha256": f"sha-{sid}",
        "image_path": f"{IMAGE_DIR}/{image}",
        "policy_name": "icm-default",
        "category": category,
        "category_source": "annotation",
        "rule_variants": "R1,R2",
        "source": "bundled",
        "split": "train",
        "status": status,
        "reasons_json": to_json(reasons),
        "description": f"A photo ({image}).",
        "context": "A public place, daytime.",
        "attempts": attempts,
        "created_at": t(created),
        "updated_at": t(created + 60),
    }


def _expl(sid: str, run_id: str, rule: str, category: str, verdict: str, expected: str) -> dict:
    return {
        "sample_id": sid,
        "rule_variant": rule,
        "run_id": run_id,
        "question": _question(rule, category),
        "verdict": verdict,
        "expected_verdict": expected,
        "explanation": f"{verdict}. Under {rule} the image is judged as follows: ... ({sid}).",
        "created_at": t(100),
    }


def _qa(
    qa_id: str,
    sid: str,
    rule: str | None,
    qa_type: str,
    question: str,
    answer: str,
    position: int,
    options: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "qa_id": qa_id,
        "sample_id": sid,
        "run_id": "run-a" if sid.startswith("smp-a") else "run-b",
        "rule_variant": rule,
        "qa_type": qa_type,
        "question": question,
        "options_json": to_json(options) if options is not None else None,
        "answer": answer,
        "position": position,
        "created_at": t(110),
    }


def _call(
    call_id: str,
    sid: str,
    run_id: str,
    stage: str,
    model: str,
    start: float,
    *,
    status: str = "ok",
    attempt: int = 1,
    cache_hit: bool = False,
    tokens: tuple[int, int] = (0, 0),
    cost: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    provider, name = model.split(":", 1)
    return {
        "call_id": call_id,
        "run_id": run_id,
        "sample_id": sid,
        "stage": stage,
        "role": stage,
        "provider": provider,
        "model": name,
        "prompt_id": f"{stage}.user",
        "prompt_hash": "9f1c2ab0d4e5f6a7",
        "cache_hit": cache_hit,
        "raw_output": None if error else f'{{"stage": "{stage}", "call": "{call_id}"}}',
        "parsed_json": None if error else to_json({"stage": stage, "call": call_id}),
        "status": status,
        "error": error,
        "attempt": attempt,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "latency_ms": 850.0,
        "cost_usd": cost,
        "started_at": t(start),
        "finished_at": t(start + 0.85),
    }


def _stage(
    sid: str,
    stage: str,
    rule: str | None,
    attempt: int,
    status: str,
    at: float,
    call_id: str | None,
    feedback: str | None = None,
) -> dict[str, Any]:
    return {
        "output_id": f"out-{sid}-{stage}-{rule}-{attempt}",
        "sample_id": sid,
        "run_id": "run-a",
        "stage": stage,
        "rule_variant": rule,
        "attempt": attempt,
        "status": status,
        "output_json": to_json({"stage": stage, "attempt": attempt}),
        "raw_text": f"raw {stage} attempt {attempt}",
        "feedback": feedback,
        "call_id": call_id,
        "created_at": t(at),
    }


def build_store(path: Path) -> Path:
    """Write the two runs to a new store at ``path`` and close it; returns ``path``."""
    offline = "offline:smollm2-135m"
    gpt = "openai:gpt-4o"
    claude = "anthropic:claude-sonnet-4-5"
    runs = [
        _run(
            "run-a",
            "offline-demo",
            0,
            # The shape ModelConfig.record() stores: role -> {"spec", "settings"}.
            {
                "describer": {"spec": offline, "settings": {}},
                "context_interpreter": {"spec": offline, "settings": {}},
                "explainer": {"spec": gpt, "settings": {"temperature": 0.2}},
                "qa_writer": {"spec": gpt, "settings": {}},
                "critic": {"spec": claude, "settings": {}},
            },
        ),
        _run("run-b", "gpt4o-trial", 1000, {"describer": gpt, "explainer": gpt}),
    ]
    samples = [
        _sample("smp-a-acc1", "run-a", 1, "beach.jpg", "sexy", "accepted", [], 1),
        _sample("smp-a-acc2", "run-a", 2, "museum.jpg", "artistic nude", "accepted", [], 1),
        _sample("smp-a-rej1", "run-a", 3, "party.jpg", "sexy", "rejected", [REJECT_REASON], 2),
        _sample("smp-a-fail1", "run-a", 4, "broken.png", "sexy", "failed", [FAIL_REASON], 3),
        _sample("smp-a-fail2", "run-a", 4.5, "tiny.gif", "sexy", "failed", [FAIL_REASON], 3),
        _sample("smp-a-pend1", "run-a", 5, "queue.jpg", "sexy", "pending", [], 0),
        _sample("smp-b-acc1", "run-b", 1001, "street.jpg", "sexy", "accepted", [], 1),
    ]
    explanations = [
        _expl("smp-a-acc1", "run-a", "R1", "sexy", "No", "No"),
        _expl("smp-a-acc1", "run-a", "R2", "sexy", "Yes", "Yes"),
        _expl("smp-a-acc2", "run-a", "R1", "artistic nude", "No", "No"),
        _expl("smp-a-acc2", "run-a", "R2", "artistic nude", "Yes", "Yes"),
        _expl("smp-a-rej1", "run-a", "R1", "sexy", "No", "No"),
        _expl("smp-a-rej1", "run-a", "R2", "sexy", "No", "Yes"),
        _expl("smp-b-acc1", "run-b", "R1", "sexy", "No", "No"),
    ]
    mc_options = ["A. Violence", "B. Revealing clothing", "C. Drug use", "D. Nothing sensitive"]
    qa_items = [
        # Stored out of order on purpose: position decides the order of the turns.
        _qa("qa-1", "smp-a-acc1", None, "how", "How could the image be made suitable for "
            "every audience?", "By covering the revealing swimwear.", 4),
        _qa("qa-2", "smp-a-acc1", "R1", "yes_no", "Is the image acceptable for adults under "
            "R1?", "Yes.", 0),
        _qa("qa-3", "smp-a-acc1", "R1", "multiple_choice", "Which element makes the image "
            "sensitive?", "B", 1, mc_options),
        _qa("qa-4", "smp-a-acc1", "R2", "yes_no", "Should the image be flagged for viewers aged "
            "13 under R2?", "Yes.", 2),
        _qa("qa-5", "smp-a-acc1", "R2", "what", "What leads to the R2 verdict?",
            "Revealing swimwear in a suggestive pose.", 3),
        _qa("qa-6", "smp-a-acc2", "R1", "yes_no", "Is the image acceptable under R1?", "Yes.", 0),
        _qa("qa-7", "smp-a-rej1", "R1", "yes_no", "Is the image acceptable under R1?", "Yes.", 0),
    ]  # fmt: skip
    rej = "smp-a-rej1"
    calls = [
        # smp-a-rej1: describer, context, R1, R2 (a rate-limited try, then its retry), critic,
        # R2 again with the critic's feedback, critic again.
        _call("c-01", rej, "run-a", "describer", offline, 10, tokens=(300, 80)),
        _call("c-02", rej, "run-a", "context_interpreter", offline, 12, tokens=(200, 40)),
        _call("c-03", rej, "run-a", "explainer", gpt, 14, tokens=(500, 120), cost=0.0025),
        _call("c-04", rej, "run-a", "explainer", gpt, 15, status="failed",
              error="RateLimitError: 429 Too Many Requests"),
        _call("c-05", rej, "run-a", "explainer", gpt, 15.5, attempt=2, tokens=(500, 110),
              cost=0.0024),
        _call("c-06", rej, "run-a", "critic", claude, 17, tokens=(700, 90), cost=0.0035),
        _call("c-07", rej, "run-a", "explainer", gpt, 19, tokens=(650, 130), cost=0.0030),
        _call("c-08", rej, "run-a", "critic", claude, 21, tokens=(700, 60), cost=0.0030),
        # smp-a-acc1: one call served from the cache.
        _call("c-09", "smp-a-acc1", "run-a", "describer", offline, 30, cache_hit=True,
              tokens=(300, 80)),
        _call("c-10", "smp-a-acc1", "run-a", "explainer", gpt, 32, tokens=(500, 100),
              cost=0.0020),
        # run-b
        _call("c-11", "smp-b-acc1", "run-b", "explainer", gpt, 1010, tokens=(400, 100),
              cost=0.0015),
    ]  # fmt: skip
    stages = [
        # Inserted out of time order on purpose: the trace sorts by time.
        _stage(rej, "explainer", "R2", 2, "ok", 20, "c-07", feedback=FEEDBACK),
        _stage(rej, "critic", None, 2, "rejected", 22, "c-08"),
        _stage(rej, "describer", None, 1, "ok", 11, "c-01"),
        _stage(rej, "context_interpreter", None, 1, "ok", 13, "c-02"),
        _stage(rej, "explainer", "R1", 1, "ok", 14.9, "c-03"),
        _stage(rej, "explainer", "R2", 1, "ok", 16.5, "c-05"),
        _stage(rej, "critic", None, 1, "rejected", 18, "c-06"),
        _stage("smp-a-acc1", "describer", None, 1, "ok", 31, "c-09"),
    ]
    critiques = [
        {
            "critique_id": f"cr-{i}",
            "sample_id": rej,
            "run_id": "run-a",
            "stage": "explainer",
            "attempt": attempt,
            "check_name": check,
            "source": source,
            "passed": passed,
            "message": message,
            "created_at": t(at),
        }
        for i, (attempt, check, source, passed, message, at) in enumerate(
            [
                (1, "verdict_matches_rule", "deterministic", False, "R2: No, table: Yes", 17.9),
                (1, "no_refusal", "deterministic", True, None, 17.9),
                (2, "verdict_matches_rule", "deterministic", False, "R2: No, table: Yes", 21.9),
            ]
        )
    ]
    with Store.open(path) as store:
        store.insert("runs", runs)
        store.insert("samples", samples)
        store.insert("explanations", explanations)
        store.insert("qa_items", qa_items)
        store.insert("llm_calls", calls)
        store.insert("stage_outputs", stages)
        store.insert("critiques", critiques)
    return path
