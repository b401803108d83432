"""The judge through the fake OpenAI server: statuses, repeats, position swap, self-preference,
and ``icm judge score`` / ``pairwise`` on a small generation run.

The fake server answers by what the request says (a marker in the candidate text), not by
arrival order, because a judge sends its items concurrently.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_closing
from fakes import FakeOpenAIServer
from fakes.base import Action, raw, refuse, reply
from typer.testing import CliRunner

from agents.judge import (
    LLMJudge,
    compare_pairs,
    disagreement_rate,
    generator_specs,
    make_judge,
    self_preference_warnings,
)
from data.store import Store, to_json, utcnow
from evaluators.judgments import (
    FreeItem,
    Judgment,
    MEQItem,
    PairItem,
    UnsupportedRubricError,
    judge_repeated,
    summarize_repeats,
)
from graphs.commands.judge import app
from graphs.judging import build_score_report

torch.set_num_threads(1)

GOOD = {
    "accuracy": 80,
    "preciseness": 70,
    "comprehensiveness": 60,
    "fluency": 90,
    "rationale": "ok",
}


def _user_text(body: dict[str, Any]) -> str:
    texts = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    return texts[-1] if texts and isinstance(texts[-1], str) else ""


def marker_responder(body: dict[str, Any]) -> Action:
    """Answer by the marker in the candidate: VALID-n, MALFORMED, RANGE, REFUSE."""
    text = _user_text(body)
    if "MALFORMED" in text:
        return raw(200, b"{not json")  # a broken HTTP body: no JSON object at all
    if "PROSE" in text:
        return reply("The candidate is quite good, I would say about eighty.")
    if "RANGE" in text:
        return reply({**GOOD, "accuracy": 150})
    if "REFUSE" in text:
        return refuse()
    n = int(re.search(r"VALID-(\d+)", text).group(1))
    return reply({**GOOD, "accuracy": 10 * n, "preciseness": 5 * n})


def _judge(server: FakeOpenAIServer, no_sleep: Any, store: Store | None = None) -> LLMJudge:
    judge = make_judge(
        f"openai:gpt-4o-mini?base_url={server.base_url}",
        store=store,
        run_id="judge-run",
        settings=("jitter=false", "parse_retries=0", "max_retries=0"),
        layer_options={"sleep": no_sleep},
    )
    assert isinstance(judge, LLMJudge)
    return judge


def _meq(marker: str) -> MEQItem:
    return MEQItem(item_id=marker, reference="A woman in a red dress.", candidate=f"{marker} text")


# --------------------------------------------------------------------------- statuses
def test_valid_malformed_refused_are_counted_not_zeroed(
    fake_keys: dict[str, str], no_sleep: Any, llm_store: Store
) -> None:
    items = [_meq(m) for m in ("VALID-9", "VALID-7", "VALID-5", "PROSE", "RANGE", "REFUSE")]
    with FakeOpenAIServer(responder=marker_responder) as server:

        async def go() -> list[Judgment]:
            judge = _judge(server, no_sleep, llm_store)
            try:
                return await judge.judge("meq", items)
            finally:
                await judge.aclose()

        judgments = asyncio.run(go())
    by_id = {j.item_id: j for j in judgments}
    assert [by_id[m].status for m in ("VALID-9", "PROSE", "RANGE", "REFUSE")] == [
        "scored", "unscored", "unscored", "refused",
    ]  # fmt: skip
    assert by_id["VALID-9"].scores == {
        "accuracy": 90.0, "preciseness": 45.0, "comprehensiveness": 60.0, "fluency": 90.0,
    }  # fmt: skip
    for bad in ("PROSE", "RANGE", "REFUSE"):
        assert by_id[bad].scores is None and by_id[bad].call_id
    # The out-of-range answer is kept as raw text in the trace, not clipped into a score.
    raw_out = llm_store.scalar(
        "SELECT raw_output FROM llm_calls WHERE call_id = ?", [by_id["RANGE"].call_id]
    )
    assert '"accuracy": 150' in raw_out

    report = build_score_report("gen", _StubJudge(), "meq", [[j] for j in judgments])
    assert (report.n_items, report.n_scored, report.n_unscored) == (6, 3, 3)
    assert report.status_counts == {"refused": 1, "scored": 3, "unscored": 2}
    assert report.criteria["accuracy"].n == 3
    assert report.criteria["accuracy"].mean == pytest.approx(70.0)  # (90+70+50)/3, not /6
    assert report.meq == pytest.approx(0.70)


def test_a_broken_http_body_is_failed_not_scored(fake_keys: dict[str, str], no_sleep: Any) -> None:
    with FakeOpenAIServer(responder=marker_responder) as server:
        judge = _judge(server, no_sleep)
        [judgment] = run_closing(judge, lambda: judge.judge("meq", [_meq("MALFORMED")]))
    assert judgment.status in ("failed", "unscored")
    assert judgment.scores is None and judgment.error


class _StubJudge:
    spec = "openai:gpt-4o-mini"
    kind = "llm"


# --------------------------------------------------------------------------- repeats
def test_repeats_report_mean_and_spread(fake_keys: dict[str, str], no_sleep: Any) -> None:
    seen: Counter[str] = Counter()
    sequence = {1: 80, 2: 90, 3: 70}

    def responder(body: dict[str, Any]) -> Action:
        marker = re.search(r"(ITEM-\d)", _user_text(body)).group(1)
        seen[marker] += 1
        return reply({**GOOD, "accuracy": sequence[seen[marker]]})

    items = [_meq("ITEM-1"), _meq("ITEM-2")]
    with FakeOpenAIServer(responder=responder) as server:
        judge = _judge(server, no_sleep)
        per_item = run_closing(judge, lambda: judge_repeated(judge, "meq", items, repeats=3))
    assert seen == {"ITEM-1": 3, "ITEM-2": 3}  # each repeat asked (the attempt is in the key)
    summary = summarize_repeats(per_item[0])
    assert (summary.n, summary.n_scored) == (3, 3)
    assert summary.mean["accuracy"] == pytest.approx(80.0)
    assert summary.std["accuracy"] == pytest.approx(10.0)
    assert summary.std["fluency"] == 0.0
    assert [j.repeat_index for j in per_item[0]] == [0, 1, 2]


def test_repeat_summary_ignores_unscored_repeats() -> None:
    def j(status: str, acc: float | None) -> Judgment:
        scores = {"accuracy": acc} if acc is not None else None
        return Judgment(item_id="x", rubric="meq", judge_spec="s", status=status, scores=scores)

    summary = summarize_repeats([j("scored", 60), j("unscored", None), j("scored", 80)])
    assert (summary.n, summary.n_scored, summary.mean) == (3, 2, {"accuracy": 70.0})
    lone = summarize_repeats([j("refused", None), j("scored", 50)])
    assert lone.mean == {"accuracy": 50.0} and lone.std is None


# --------------------------------------------------------------------------- pairwise
def _pairs() -> list[PairItem]:
    return [
        PairItem(item_id="p1", first="GOOD explanation one", second="weak explanation one"),
        PairItem(item_id="p2", first="weak explanation two", second="GOOD explanation two"),
    ]


def _winner_by_position(body: dict[str, Any]) -> Action:
    return reply({"winner": "A", "rationale": "the first one reads better"})


def _winner_by_content(body: dict[str, Any]) -> Action:
    text = _user_text(body)
    shown_a = text.split("Explanation A:", 1)[1].split("Explanation B:", 1)[0]
    return reply({"winner": "A" if "GOOD" in shown_a else "B", "rationale": "the GOOD one"})


@pytest.mark.parametrize(
    ("responder", "rate", "preferred"),
    [
        (_winner_by_position, 1.0, {"inconsistent": 2}),
        (_winner_by_content, 0.0, {"first": 1, "second": 1}),
    ],
)
def test_position_swap_disagreement(
    responder: Any, rate: float, preferred: dict[str, int], fake_keys: Any, no_sleep: Any
) -> None:
    with FakeOpenAIServer(responder=responder) as server:
        judge = _judge(server, no_sleep)
        outcomes = run_closing(judge, lambda: compare_pairs(judge, _pairs()))
        bodies = [_user_text(r.body or {}) for r in server.chat_requests()]
    # Each pair was shown in both orders.
    assert sum("A:\nGOOD explanation one" in b for b in bodies) == 1
    assert sum("A:\nweak explanation one" in b for b in bodies) == 1
    summary = disagreement_rate(outcomes)
    assert summary.n_pairs == summary.n_both_scored == 2
    assert summary.disagreement_rate == rate
    assert {k: v for k, v in summary.preferred.items() if v} == preferred
    if rate == 0.0:
        assert [o.preferred for o in outcomes] == ["first", "second"]
        assert outcomes[0].backward.swapped and outcomes[0].backward.preferred == "first"


def test_disagreement_leaves_unscored_pairs_out(fake_keys: Any, no_sleep: Any) -> None:
    def responder(body: dict[str, Any]) -> Action:
        if "two" in _user_text(body):
            return reply("no idea")
        return _winner_by_position(body)

    with FakeOpenAIServer(responder=responder) as server:
        judge = _judge(server, no_sleep)
        outcomes = run_closing(judge, lambda: compare_pairs(judge, _pairs()))
    summary = disagreement_rate(outcomes)
    assert (summary.n_both_scored, summary.disagreement_rate) == (1, 1.0)
    assert summary.preferred["unscored"] == 1


# --------------------------------------------------------------------------- self-preference
def test_self_preference_warning() -> None:
    bindings = to_json(
        {
            "describer": {"spec": "local:smollm2"},
            "explainer": {"spec": "openai:gpt-4o?temperature=0.2"},
            "critic": {"spec": "openai-compatible:http://127.0.0.1:8000/v1#gpt-4o"},
            "judge": {"spec": "openai:gpt-4o"},
        }
    )
    generators = generator_specs(bindings)
    assert "judge" not in generators
    [warning] = self_preference_warnings("openai:gpt-4o", generators)
    assert "critic, explainer" in warning and "self-preference" in warning
    assert self_preference_warnings("anthropic:claude-sonnet-4-5", generators) == []
    assert self_preference_warnings("metric:minilm", generators) == []
    assert self_preference_warnings("local:smollm2", generators)  # the describer's model


def test_metric_judge_refuses_reference_free_rubrics() -> None:
    judge = make_judge("metric:minilm")
    assert judge.kind == "metric" and judge.supports("meq") and not judge.supports("free")
    with pytest.raises(UnsupportedRubricError, match="reference"):
        asyncio.run(judge.judge("free", []))
    with pytest.raises(ValueError, match="unknown metric"):
        make_judge("metric:bleu")


# --------------------------------------------------------------------------- icm judge score
def _generation_store(path: Path, explainer_spec: str) -> None:
    now = utcnow()
    with Store.open(path) as store:
        store.insert(
            "runs",
            [
                {
                    "run_id": "gen-1", "name": "gen-1", "kind": "generate", "status": "finished",
                    "created_at": now,
                    "role_bindings_json": to_json(
                        {"explainer": {"spec": explainer_spec}, "judge": {"spec": "x:y"}}
                    ),
                },
                {
                    "run_id": "gen-2", "name": "gen-2", "kind": "generate", "status": "finished",
                    "created_at": now,
                    "role_bindings_json": to_json({"explainer": {"spec": "local:smollm2"}}),
                },
            ],
        )  # fmt: skip
        for run, sid in (("gen-1", "s1"), ("gen-2", "t1")):
            store.insert(
                "samples",
                [
                    {
                        "sample_id": sid, "run_id": run, "image_sha256": "img-1",
                        "image_path": "/data/beach.jpg", "policy_name": "icm_sexy",
                        "category": "middle_leg", "status": "accepted",
                        "description": "A woman in shorts on a beach.", "created_at": now,
                        "updated_at": now,
                    }
                ],
            )  # fmt: skip
            store.insert(
                "explanations",
                [
                    {
                        "sample_id": sid, "rule_variant": rule, "run_id": run,
                        "verdict": verdict, "expected_verdict": verdict,
                        "explanation": f"{run} {marker} Her bare thighs... The image is {verdict}.",
                        "created_at": now,
                    }
                    for rule, verdict, marker in (
                        ("R1", "sexy", "VALID-9"), ("R2", "not sexy", "REFUSE"),
                    )
                ],
            )  # fmt: skip
        store.insert(
            "perception_cache",
            [
                {
                    "image_sha256": "img-1", "tool": "exposure", "tool_version": "1",
                    "evidence_json": '{"BELLY_EXPOSED": 0.8}', "created_at": now,
                }
            ],
        )  # fmt: skip


def _free_responder(body: dict[str, Any]) -> Action:
    text = _user_text(body)
    if "REFUSE" in text:
        return refuse()
    return reply(
        {
            "verdict_correctness": 100,
            "rule_faithfulness": 60,
            "grounding": 70,
            "hallucination_free": 80,
            "rationale": "argues from the audience",
        }
    )


def test_score_command_reference_free(tmp_path: Path, fake_keys: Any) -> None:
    db = tmp_path / "icm.duckdb"
    with FakeOpenAIServer(responder=_free_responder) as server:
        spec = f"openai:gpt-4o?base_url={server.base_url}"
        _generation_store(db, "openai:gpt-4o")
        result = CliRunner().invoke(
            app,
            ["score", "--run", "gen-1", "--judge", spec, "--db", str(db), "--json",
             "--judge-setting", "jitter=false"],
        )  # fmt: skip
        prompts = [_user_text(r.body or {}) for r in server.chat_requests()]
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert (report["n_items"], report["n_scored"], report["n_unscored"]) == (2, 1, 1)
    assert report["status_counts"] == {"refused": 1, "scored": 1}
    assert report["criteria"]["rule_faithfulness"] == {"n": 1, "mean": 60.0, "std": None}
    assert report["warnings"] and "self-preference" in report["warnings"][0]
    r1 = next(p for p in prompts if "VALID-9" in p)
    # The judge sees the rule's audience, the rule table's verdict, description and evidence.
    assert "age under 13, conservative culture" in r1
    assert 'judged "sexy" because Bare thighs' in r1
    assert "A woman in shorts on a beach." in r1 and "BELLY_EXPOSED" in r1
    with Store.open(db, read_only=True) as store:
        rows = store.rows("SELECT status, scores_json, rule_variant FROM judgments ORDER BY 3")
        run = store.rows("SELECT kind, status, role_bindings_json FROM runs WHERE kind = 'judge'")
        calls = store.scalar("SELECT count(*) FROM llm_calls WHERE run_id LIKE 'judge-%'")
    assert [(r["status"], r["rule_variant"]) for r in rows] == [("scored", "R1"), ("refused", "R2")]
    assert (
        json.loads(rows[0]["scores_json"])["grounding"] == 70.0 and rows[1]["scores_json"] is None
    )
    assert run[0]["kind"] == "judge" and run[0]["status"] == "finished"
    assert json.loads(run[0]["role_bindings_json"]) == {"judge": {"spec": spec}}
    assert calls == 1 + 3  # R1 once; the always-refused R2 once plus its 2 refusal retries


def test_score_command_meq_against_references(tmp_path: Path, fake_keys: Any) -> None:
    db = tmp_path / "icm.duckdb"
    refs = tmp_path / "refs.jsonl"
    refs.write_text(
        json.dumps({"image": "beach.jpg", "reference": "A woman in shorts."})
        + "\n"
        + json.dumps({"sample_id": "nope", "reference": "unmatched"})
        + "\n"
    )
    _generation_store(db, "local:smollm2")
    with FakeOpenAIServer(responder=marker_responder) as server:
        spec = f"openai:gpt-4o-mini?base_url={server.base_url}"
        result = CliRunner().invoke(
            app,
            ["score", "--run", "gen-1", "--judge", spec, "--db", str(db), "--rubric", "meq",
             "--reference", str(refs), "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    # No rule variant given: the policy's base rule (R1) is the one compared.
    assert (report["n_items"], report["n_scored"], report["unmatched_references"]) == (1, 1, 1)
    assert report["meq"] == pytest.approx(0.9) and report["warnings"] == []


def test_score_command_meq_paper_prints_meq_both_ways(tmp_path: Path, fake_keys: Any) -> None:
    """``--preset paper`` picks the paper's MEQ rubric (its wording, temperature 0.2); a refused
    judgment is excluded from our MEQ and scored 0 in the paper's; ``--rubric`` still wins."""
    from test_calibration import _paper_table

    db = tmp_path / "icm.duckdb"
    refs = tmp_path / "refs.jsonl"
    refs.write_text(
        "".join(
            json.dumps({"image": "beach.jpg", "rule_variant": r, "reference": "A woman."}) + "\n"
            for r in ("R1", "R2")
        )
    )
    _generation_store(db, "local:smollm2")
    bodies: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> Action:
        bodies.append(body)
        if "REFUSE" in _user_text(body):
            return refuse()
        return reply({"table": _paper_table(dict.fromkeys(
            ("accuracy", "preciseness", "comprehensiveness", "fluency"), 90))})  # fmt: skip

    with FakeOpenAIServer(responder=responder) as server:
        spec = f"openai:gpt-4o-mini?base_url={server.base_url}"
        args = ["score", "--run", "gen-1", "--judge", spec, "--db", str(db), "--reference",
                str(refs), "--judge-setting", "refusal_retries=0", "--preset", "paper"]  # fmt: skip
        printed = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        as_json = CliRunner().invoke(app, [*args, "--json", "--no-cache"])
        paper_bodies = list(bodies)
        ours = CliRunner().invoke(app, [*args, "--json", "--rubric", "meq"])
    assert printed.exit_code == 0 and as_json.exit_code == 0, printed.output + as_json.output
    report = json.loads(as_json.stdout[as_json.stdout.index("{") :])
    assert report["rubric"] == "meq-paper" and (report["n_items"], report["n_scored"]) == (2, 1)
    assert report["meq"] == pytest.approx(0.9)
    assert report["meq_zero_unparseable"] == pytest.approx(0.45)
    line = next(x for x in printed.output.splitlines() if x.startswith("MEQ:"))
    assert "0.900 (unparseable excluded, ours)" in line
    assert "0.450 (unparseable = 0, the paper's)" in line
    assert all(b["temperature"] == pytest.approx(0.2) for b in paper_bodies)
    assert "do not only compare the lengths" in paper_bodies[0]["messages"][-1]["content"]
    assert ours.exit_code == 0, ours.output
    assert json.loads(ours.stdout[ours.stdout.index("{") :])["rubric"] == "meq"


def test_score_command_errors(tmp_path: Path) -> None:
    db = tmp_path / "icm.duckdb"
    _generation_store(db, "local:smollm2")
    runner = CliRunner()
    missing = runner.invoke(app, ["score", "--run", "nope", "--judge", "metric:minilm",
                                  "--rubric", "meq", "--db", str(db)])  # fmt: skip
    assert missing.exit_code == 1 and "--reference" in missing.output
    metric = runner.invoke(app, ["score", "--run", "gen-1", "--judge", "metric:minilm",
                                 "--db", str(db)])  # fmt: skip
    assert metric.exit_code == 1 and "cannot apply the free rubric" in metric.output


def test_pairwise_command(tmp_path: Path, fake_keys: Any) -> None:
    db = tmp_path / "icm.duckdb"
    _generation_store(db, "local:smollm2")
    with FakeOpenAIServer(responder=_winner_by_position) as server:
        spec = f"openai:gpt-4o-mini?base_url={server.base_url}"
        result = CliRunner().invoke(
            app,
            ["pairwise", "--run-a", "gen-1", "--run-b", "gen-2", "--judge", spec,
             "--db", str(db), "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["summary"]["n_pairs"] == 2  # R1 and R2 of the same image
    assert report["summary"]["disagreement_rate"] == 1.0
    with Store.open(db, read_only=True) as store:
        swapped = store.rows("SELECT swapped, count(*) AS n FROM judgments GROUP BY 1 ORDER BY 1")
    assert [(r["swapped"], r["n"]) for r in swapped] == [(False, 2), (True, 2)]


def test_free_items_need_free_rubric_items(fake_keys: Any, no_sleep: Any) -> None:
    item = FreeItem(
        item_id="x", explanation="e", verdict="sexy", term="sexy", rule_id="R1",
        rule_description="d", audience_age="under 13", audience_culture="conservative",
    )  # fmt: skip
    with FakeOpenAIServer() as server:
        judge = _judge(server, no_sleep)
        with pytest.raises(TypeError, match="MEQItem"):
            run_closing(judge, lambda: judge.judge("meq", [item]))
        [free] = run_closing(judge, lambda: judge.judge("free", [item]))  # schema-valid answer
    assert free.status == "scored" and set(free.scores) == {
        "verdict_correctness", "rule_faithfulness", "grounding", "hallucination_free",
    }  # fmt: skip
