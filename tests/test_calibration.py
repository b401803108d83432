"""Calibration against GPT-4o's MEQ scores: the statistics, the fixed split, the CLI and store
path on scripted judges with known scores, and the offline metric's measured agreement."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import FakeOpenAIServer
from fakes.base import Action, refuse, reply
from release_data import needs, release_file
from typer.testing import CliRunner

from data.store import Store
from evaluators.calibration import (
    calibration_warnings,
    criterion_stats,
    file_sha256,
    load_meq_set,
    select,
    split_of,
)
from evaluators.embedding_judge import (
    colour_conflicts,
    load_fit,
    stated_verdict,
    untie,
    verdict_conflict,
)
from graphs.commands.judge import app

torch.set_num_threads(1)

MEQ_DEV = release_file("meq_dev.jsonl")  # ICM_RELEASE_DATA (tests/release_data.py)
needs_dev = needs("meq_dev.jsonl")
CRITERIA = ("accuracy", "preciseness", "comprehensiveness", "fluency")


def _candidate(body: dict[str, Any]) -> str:
    user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    return user.split("Candidate (written by an algorithm):", 1)[1].strip()


def scripted(
    scores_by_candidate: dict[str, dict[str, float]], fail: dict[str, str] | None = None
) -> Any:
    """A responder that gives each candidate its listed scores, or fails it as ``fail`` says:
    ``refuse`` (a provider refusal) or ``prose`` (an answer with no JSON in it)."""

    def responder(body: dict[str, Any]) -> Action:
        candidate = _candidate(body)
        how = (fail or {}).get(candidate)
        if how == "refuse":
            return refuse()
        if how == "prose":
            return reply("I cannot score this one.")
        scores = {k: round(v) for k, v in scores_by_candidate[candidate].items()}
        return reply({**scores, "rationale": "scripted"})

    return responder


def _calibrate(db: Path, spec: str, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app,
        ["calibrate", "--judge", spec, "--db", str(db), "--json",
         "--judge-setting", "parse_retries=0", *args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") :])


# --------------------------------------------------------------------------- statistics
def test_criterion_stats_hand_computed() -> None:
    s = criterion_stats([1, 2, 3, 4], [1, 3, 2, 4])
    # ranks differ by 1 on two items: rho = 1 - 6*2/(4*15) = 0.8; 5 concordant, 1 discordant
    assert s.spearman == pytest.approx(0.8)
    assert s.kendall == pytest.approx(4 / 6)
    assert (s.mad, s.judge_mean, s.reference_mean, s.n) == (0.5, 2.5, 2.5, 4)
    flat = criterion_stats([50, 50, 50], [10, 20, 30])
    assert flat.spearman is None and flat.kendall is None and flat.mad == 30.0  # (40 + 30 + 20) / 3
    assert criterion_stats([], []).spearman is None


def test_split_is_fixed_by_image_name() -> None:
    assert split_of("bite_finger_20231122110742_1078.JPEG") == split_of(
        "bite_finger_20231122110742_1078.JPEG"
    )
    names = [f"img_{n}.jpg" for n in range(1000)]
    share = Counter(split_of(n) for n in names)["fit"] / len(names)
    assert 0.55 < share < 0.65


@needs_dev
def test_dev_set_split_counts() -> None:
    cases = load_meq_set(MEQ_DEV)
    assert len(cases) == 120
    fit, held = select(cases, "fit"), select(cases, "held_out")
    assert (len(fit), len(held)) == (64, 56)
    assert {c.image for c in fit}.isdisjoint(c.image for c in held)
    assert select(cases, "all", limit=5) == cases[:5]


def test_calibration_warnings() -> None:
    class Stub:
        def __init__(self, spec: str, kind: str) -> None:
            self.spec, self.kind = spec, kind

    assert calibration_warnings(Stub("metric:minilm", "metric"), "held_out", "gpt-4o") == []
    [in_sample] = calibration_warnings(Stub("metric:minilm", "metric"), "all", "gpt-4o")
    assert "in-sample" in in_sample
    assert calibration_warnings(Stub("anthropic:claude-sonnet-4-5", "llm"), "all", "gpt-4o") == []
    assert calibration_warnings(
        Stub("openai-compatible:http://h/v1#gpt-4o", "llm"), "fit", "gpt-4o"
    )


# --------------------------------------------------------------------------- scripted judges
def _tiny_set(path: Path) -> Path:
    """Four cases (all held out) whose GPT-4o scores are 1, 3, 2, 4 on every criterion."""
    lines = []
    n = 0
    for gpt in (1, 3, 2, 4):
        while split_of(f"case-{n}.jpg") != "held_out":
            n += 1
        scores = dict.fromkeys(CRITERIA, float(gpt))
        lines.append({"image": f"case-{n}.jpg", "reference": f"ref {n}",
                      "candidate": f"cand {gpt}", "judge_scores": scores})  # fmt: skip
        n += 1
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_calibration_pipeline_on_known_scores(tmp_path: Path, fake_keys: Any) -> None:
    meq = _tiny_set(tmp_path / "tiny.jsonl")
    # GPT-4o said 1, 3, 2, 4; the scripted judge says 1, 2, 3, 4 for the same candidates.
    pairs = zip((1, 3, 2, 4), (1, 2, 3, 4), strict=True)
    judge_says = {f"cand {g}": dict.fromkeys(CRITERIA, float(j)) for g, j in pairs}
    db = tmp_path / "icm.duckdb"
    with FakeOpenAIServer(responder=scripted(judge_says)) as server:
        report = _calibrate(db, f"openai:gpt-4o?base_url={server.base_url}", "--set", str(meq))
    for name in CRITERIA:
        s = report["criteria"][name]
        assert s["spearman"] == pytest.approx(0.8) and s["kendall"] == pytest.approx(4 / 6)
        assert (s["mad"], s["judge_mean"], s["reference_mean"], s["n"]) == (0.5, 2.5, 2.5, 4)
    assert (report["n_items"], report["n_unscored"], report["split"]) == (4, 0, "held_out")
    assert report["meq"]["judge"] == pytest.approx(0.025)
    with Store.open(db, read_only=True) as store:
        [row] = store.rows("SELECT * FROM calibrations")
        run = store.rows("SELECT kind, status FROM runs")
        n_judgments = store.scalar("SELECT count(*) FROM judgments WHERE status = 'scored'")
    stored = json.loads(row["report_json"])
    assert {k: v["spearman"] for k, v in stored["criteria"].items()} == pytest.approx(
        dict.fromkeys(CRITERIA, 0.8)
    )
    assert (row["split"], row["n_items"], row["n_unscored"]) == ("held_out", 4, 0)
    assert row["dataset_sha256"] == file_sha256(meq)
    assert run == [{"kind": "calibrate", "status": "finished"}] and n_judgments == 4


def test_repeats_give_mean_and_spread(tmp_path: Path, fake_keys: Any) -> None:
    meq = _tiny_set(tmp_path / "tiny.jsonl")
    calls: Counter[str] = Counter()

    def responder(body: dict[str, Any]) -> Action:
        candidate = _candidate(body)
        calls[candidate] += 1
        gpt = float(candidate.split()[1])
        value = gpt + (0 if calls[candidate] == 1 else 10)  # 1st repeat exact, 2nd +10
        return reply({**dict.fromkeys(CRITERIA, int(value)), "rationale": "r"})

    with FakeOpenAIServer(responder=responder) as server:
        report = _calibrate(
            tmp_path / "icm.duckdb", f"openai:gpt-4o?base_url={server.base_url}",
            "--set", str(meq), "--repeats", "2",
        )  # fmt: skip
    assert report["repeats"] == 2 and report["status_counts"] == {"scored": 8}
    accuracy = report["criteria"]["accuracy"]
    assert accuracy["mad"] == 5.0 and accuracy["spearman"] == pytest.approx(1.0)
    assert report["repeat_std"]["accuracy"] == pytest.approx(50**0.5)  # stdev of (g, g+10)


@needs_dev
def test_calibration_on_dev_set_with_exact_and_reversed_judges(
    tmp_path: Path, fake_keys: Any
) -> None:
    cases = select(load_meq_set(MEQ_DEV), "held_out", 12)
    exact = {c.candidate: c.judge_scores for c in cases}
    reverse = {c.candidate: {k: 100 - v for k, v in c.judge_scores.items()} for c in cases}
    fail = {cases[0].candidate: "refuse", cases[5].candidate: "prose"}
    with FakeOpenAIServer(responder=scripted(exact, fail)) as server:
        spec = f"openai:gpt-4o?base_url={server.base_url}"
        report = _calibrate(tmp_path / "a.duckdb", spec, "--set", str(MEQ_DEV), "--limit", "12")
    # Two pairs unscored (a refusal and a prose answer): counted, and left out of every statistic.
    assert (report["n_items"], report["n_scored"], report["n_unscored"]) == (12, 10, 2)
    assert report["status_counts"] == {"refused": 1, "scored": 10, "unscored": 1}
    assert "consistency with itself" in report["warnings"][0]  # GPT-4o judged against GPT-4o
    assert report["unscored_rate"] == pytest.approx(2 / 12)
    kept = [c for c in cases if c.candidate not in fail]
    for name in CRITERIA:
        s = report["criteria"][name]
        assert s["n"] == 10 and s["mad"] == 0.0 and s["judge_mean"] == s["reference_mean"]
        assert s["reference_mean"] == pytest.approx(sum(c.judge_scores[name] for c in kept) / 10)
        assert s["spearman"] == pytest.approx(1.0) and s["kendall"] == pytest.approx(1.0)

    with FakeOpenAIServer(responder=scripted(reverse)) as server:
        spec = f"openai:gpt-4o?base_url={server.base_url}"
        report = _calibrate(tmp_path / "b.duckdb", spec, "--set", str(MEQ_DEV), "--limit", "12")
    accuracy = report["criteria"]["accuracy"]
    assert accuracy["spearman"] == pytest.approx(-1.0) and accuracy["kendall"] == pytest.approx(-1)
    expected_mad = sum(abs(100 - 2 * c.judge_scores["accuracy"]) for c in cases) / 12
    assert accuracy["mad"] == pytest.approx(expected_mad)


# --------------------------------------------------------------------------- the offline metric
def test_metric_text_features() -> None:
    assert stated_verdict("The woman... The image is not sexy because it is modest.") == (
        "not_flagged"
    )
    assert stated_verdict("The image is sexy because of her pose.") == "flagged"
    assert stated_verdict("A woman stands on a beach.") is None
    assert verdict_conflict("The image is sexy.", "The picture is not sexy.")
    assert not verdict_conflict("The image is sexy.", "She stands.")
    ref = "She wears a white lace bra and a white thong, and blue jeans."
    assert colour_conflicts(ref, "She wears a white lace bra and a black thong.") == 1
    assert colour_conflicts(ref, "A white bra, a white thong.") == 0


def test_untie_keeps_order_within_half_a_point() -> None:
    knots = [20.0, 90.0, 90.0, 90.0, 100.0]
    spread = untie(knots)
    assert all(b > a for a, b in itertools.pairwise(spread))
    assert max(abs(a - b) for a, b in zip(spread, knots, strict=True)) <= 0.5


@needs_dev
def test_shipped_fit_matches_the_dev_set() -> None:
    fit = load_fit()
    assert fit.dataset_sha256 == file_sha256(MEQ_DEV), "refit: icm judge fit-metric --set ..."
    assert fit.n_fit == 64 and set(fit.criteria) == set(CRITERIA)


#: Measured with the shipped fit on the 56 held-out pairs (see the README): accuracy 0.501,
#: preciseness 0.467, comprehensiveness 0.411, fluency 0.366; plain cosine reaches 0.512 for
#: accuracy on the same pairs. The target of 0.6 is not reached.
MEASURED_HELD_OUT = {"accuracy": 0.501, "preciseness": 0.467, "comprehensiveness": 0.411,
                     "fluency": 0.366}  # fmt: skip


@needs_dev
@pytest.mark.slow
def test_metric_minilm_calibration_on_held_out(tmp_path: Path) -> None:
    db = tmp_path / "icm.duckdb"
    report = _calibrate_metric(db)
    assert (report["n_items"], report["n_unscored"], report["judge_kind"]) == (56, 0, "metric")
    for name, measured in MEASURED_HELD_OUT.items():
        s = report["criteria"][name]
        assert s["spearman"] == pytest.approx(measured, abs=0.02)
        assert s["kendall"] > 0.25 and s["mad"] < 12
        assert abs(s["judge_mean"] - s["reference_mean"]) < 3  # quantile-mapped onto GPT-4o's scale
    with Store.open(db, read_only=True) as store:
        [row] = store.rows("SELECT judge_spec, split, report_json FROM calibrations")
        rationale = store.scalar("SELECT rationale FROM judgments LIMIT 1")
    assert (row["judge_spec"], row["split"]) == ("metric:minilm", "held_out")
    stored = json.loads(row["report_json"])["criteria"]
    assert {k: round(v["spearman"], 3) for k, v in stored.items()} == pytest.approx(
        MEASURED_HELD_OUT, abs=0.02
    )
    assert "not an LLM judge" in rationale


def _calibrate_metric(db: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["calibrate", "--set", str(MEQ_DEV), "--judge", "metric:minilm", "--db", str(db),
              "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") :])


class _AngleEncoder:
    """Stands in for MiniLM: a candidate "cand Q ..." lies at cosine Q/100 from its reference."""

    def encode(self, texts: list[str]) -> list[Any]:
        import math

        import numpy as np

        from evaluators.embedding_judge import TextEncoding

        out = []
        for text in texts:
            q = float(text.split()[1]) if text.startswith("cand") else 100.0
            angle = math.acos(q / 100)
            v = np.array([math.cos(angle), math.sin(angle), 0.0])
            out.append(TextEncoding(whole=v, sentences=v[None, :], chars=len(text)))
        return out


def test_fit_recovers_a_monotone_relation(tmp_path: Path) -> None:
    from evaluators.embedding_judge import MiniLMJudge, fit_metric
    from evaluators.judgments import MEQItem

    lines = []
    for n in range(60):
        q = 20 + (n * 37) % 79  # 20..98, scattered
        lines.append({"image": f"syn-{n}.jpg", "reference": "The image is sexy.",
                      "candidate": f"cand {q} The image is sexy.",
                      "judge_scores": dict.fromkeys(CRITERIA, float(q))})  # fmt: skip
    lines.append({"image": "syn-conflict.jpg", "reference": "The image is sexy.",
                  "candidate": "cand 95 The image is not sexy.",
                  "judge_scores": dict.fromkeys(CRITERIA, 10.0)})  # fmt: skip
    while split_of(lines[-1]["image"]) != "fit":
        lines[-1]["image"] += "x"
    meq = tmp_path / "syn.jsonl"
    meq.write_text("".join(json.dumps(line) + "\n" for line in lines))
    fit = fit_metric(meq, encoder=_AngleEncoder())
    for name in CRITERIA:
        assert fit.held_out[name]["metric_spearman"] > 0.99
        assert fit.held_out[name]["cosine_spearman"] > 0.99
        assert fit.criteria[name].weights[0] >= 0 and fit.criteria[name].conflict_score == 10.0
    judge = MiniLMJudge(fit=fit, encoder=_AngleEncoder())
    high, low, flipped = judge.score_items(
        [
            MEQItem(item_id="h", reference="The image is sexy.", candidate="cand 95 fine"),
            MEQItem(item_id="l", reference="The image is sexy.", candidate="cand 25 fine"),
            MEQItem(
                item_id="f",
                reference="The image is sexy.",
                candidate="cand 95 The image is not sexy.",
            ),
        ]
    )
    assert high.scores["accuracy"] > 85 and low.scores["accuracy"] < 35
    assert flipped.scores == dict.fromkeys(CRITERIA, 10.0)  # opposite verdicts: the fit's score
    assert "verdicts contradict" in flipped.rationale


# --------------------------------------------------------------------------- meq-paper rubric
def _paper_table(scores: dict[str, int], after: str = "") -> str:
    """A judgment laid out as the paper's GPT-4o wrote them (eval_meq/*.txt): table first."""
    rows = [f"| {name:<14} | {scores[name.lower()]:<5} |" for name in
            ("Accuracy", "Preciseness", "Comprehensiveness", "Fluency")]  # fmt: skip
    return "\n".join(["| Criteria       | Score |", "|----------------|-------|", *rows]) + after


def test_paper_table_is_read_as_the_paper_script_reads_it() -> None:
    from evaluators.judge_schemas import MEQPaperJudgment, parse_meq_table

    scores = {"accuracy": 90, "preciseness": 70, "comprehensiveness": 80, "fluency": 85}
    text = _paper_table(scores, after="\n\nThe description scores high in accuracy, ...")
    assert parse_meq_table(text) == scores
    judged = MEQPaperJudgment(table=text)
    assert (judged.accuracy, judged.comprehensiveness) == (90, 80)
    with pytest.raises(ValueError, match="no row for Fluency"):
        parse_meq_table(text.replace("| Fluency ", "| Style "))
    with pytest.raises(ValueError, match="outside 0-100"):
        parse_meq_table(_paper_table({**scores, "fluency": 120}))
    with pytest.raises(ValueError):  # a table without its |---| rule is not read, as in the paper
        parse_meq_table(text.replace("|----------------|-------|\n", ""))


def test_calibrate_meq_paper_prints_meq_both_ways(tmp_path: Path, fake_keys: Any) -> None:
    """The paper's wording and temperature go to the judge; one unreadable answer is excluded
    in our MEQ and scored 0 in the paper's, printed side by side."""
    meq = _tiny_set(tmp_path / "tiny.jsonl")
    bodies: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> Action:
        bodies.append(body)
        user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        candidate = user.rsplit("Algorithm's description: ", 1)[1].strip()
        if candidate == "cand 3":
            return reply("I would rather describe the image than fill in a table.")
        value = 20 * int(candidate.split()[1])  # cand 1 -> 20, cand 2 -> 40, cand 4 -> 80
        return reply({"table": _paper_table(dict.fromkeys(CRITERIA, value))})

    spec = "openai:gpt-4o-mini?base_url={}"
    with FakeOpenAIServer(responder=responder) as server:
        result = CliRunner().invoke(
            app,
            ["calibrate", "--judge", spec.format(server.base_url), "--db",
             str(tmp_path / "icm.duckdb"), "--set", str(meq), "--rubric", "meq-paper",
             "--judge-setting", "parse_retries=0"],
            env={"COLUMNS": "200"},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        report = _calibrate(
            tmp_path / "j.duckdb", spec.format(server.base_url), "--set", str(meq),
            "--rubric", "meq-paper",
        )  # fmt: skip
    assert all(b["temperature"] == pytest.approx(0.2) for b in bodies)
    first = bodies[0]["messages"]
    assert "precise assistant for checking the quality of the answer" in first[0]["content"]
    assert "do not only compare the lengths of two descriptions" in first[-1]["content"]
    assert first[-1]["content"].startswith("Task: You will receive two descriptions")
    # Scored: 20, 40, 80 (mean 46.67); the unreadable one is excluded, or 0 over all four.
    excluded, zeroed = (20 + 40 + 80) / 3 / 100, (20 + 40 + 80 + 0) / 4 / 100
    assert report["rubric"] == "meq-paper" and report["n_unscored"] == 1
    assert report["meq"]["judge"] == pytest.approx(excluded)
    assert report["meq"]["judge_zero_unparseable"] == pytest.approx(zeroed)
    assert report["zero_unparseable_means"]["fluency"] == pytest.approx(35.0)
    line = next(x for x in result.output.splitlines() if x.startswith("MEQ:"))
    assert f"judge {excluded:.3f} (unparseable excluded, ours)" in line
    assert f"{zeroed:.3f} (unparseable = 0, the paper's)" in line
