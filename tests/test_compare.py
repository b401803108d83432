"""``icm compare``: two real generation runs with different role bindings (fake servers, one
with injected explainer faults), judge scores inserted by hand, the table's numbers and the
PNG plots; and every number pinned on the hand-built store of ``run_store``."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from PIL import Image
from run_store import build_store
from typer.testing import CliRunner

from data.store import Store, to_json, utcnow
from evaluators.compare import Comparison, RunLookupError, compare_runs
from evaluators.plots import write_plots
from graphs.commands.evaluate import compare_command
from graphs.config import load_config
from graphs.runner import GenerationRun

CATEGORIES = ["upper_normal", "middle_leg", "upper_bust", "tongue"]
PRICE = {"price_input_per_mtok": "2", "price_output_per_mtok": "8"}
FAST = {"jitter": "false", "backoff_base_s": "0", "max_retries": "6"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def _manifest(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for n, category in enumerate(CATEGORIES):
        Image.new("RGB", (40 + n, 30), (n * 40, 90, 160)).save(folder / f"{n}.png")
        rows.append({"image": f"{n}.png", "policy": "icm_sexy", "category": category})
    (folder / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder / "manifest.jsonl"


def _generate(manifest: Path, db: Path, run: str, roles: dict[str, str]) -> None:
    options = {
        "manifest": manifest,
        "db": db,
        "run": run,
        "rules": ["R1", "R2"],
        "roles": roles,
        "role_settings": {"all": {**FAST, **PRICE}},
        "perception": False,
        "max_stage_retries": 1,
    }
    asyncio.run(GenerationRun(load_config(None, options)).run())


# Judge scores by hand. "clean": 4 accepted samples x R1, R2 = 8 items, every criterion at 80
# except accuracy: 90 on the R1 items and 70 on the R2 items (mean 80); one item is judged
# twice (90 and 70: averaged to 80 first, so the mean becomes (3*90 + 80 + 4*70) / 8 = 78.75).
# "faulty": 3 accepted samples x 2 = 6 items at 60 (accuracy 50), one unscored judgment.
# A second judge judged one clean item only: the default reads the judge with most items.
def _judge(db: Path) -> None:
    rows = []
    with Store.open(db) as store:
        samples = store.rows(
            "SELECT sample_id, run_id FROM samples WHERE status = 'accepted' ORDER BY sample_id"
        )
        first_clean = next(s["sample_id"] for s in samples if s["run_id"] == "clean")
        for s in samples:
            first = s["sample_id"] == first_clean
            for rule in ("R1", "R2"):
                clean = s["run_id"] == "clean"
                accuracy = (90 if rule == "R1" else 70) if clean else 50
                other = 80 if clean else 60
                scores = {"accuracy": accuracy, "preciseness": other, "comprehensiveness": other,
                          "fluency": other}  # fmt: skip
                rows.append(_judgment(f"{s['sample_id']}-{rule}", s["sample_id"], rule, scores))
                if first and rule == "R1":
                    again = {**scores, "accuracy": 70}
                    rows.append(_judgment(f"{s['sample_id']}-again", s["sample_id"], rule, again))
                if first and rule == "R2":
                    rows.append(
                        _judgment("other", s["sample_id"], rule, {"accuracy": 1}, "anthropic:x")
                    )
        faulty = next(s for s in samples if s["run_id"] == "faulty")
        rows.append(_judgment("refused", faulty["sample_id"], "R1", None, status="refused"))
        store.insert("judgments", rows)


def _judgment(
    jid: str,
    sample_id: str,
    rule: str,
    scores: dict | None,
    judge: str = "openai:gpt-4o",
    status: str = "scored",
) -> dict:
    return {"judgment_id": jid, "run_id": "judge-run", "judge_spec": judge, "rubric": "meq",
            "item_id": f"{sample_id}:{rule}", "sample_id": sample_id, "rule_variant": rule,
            "status": status, "scores_json": None if scores is None else to_json(scores),
            "created_at": utcnow()}  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run "clean" binds every role to model-a; run "faulty" binds them to model-b on a server
    whose explainer gets middle_leg wrong once and upper_bust wrong always, with the critic on
    model-a. Both priced, so cost is known."""
    folder = tmp_path_factory.mktemp("compare")
    manifest = _manifest(folder / "in")
    db = folder / "icm.duckdb"
    faults = {"middle_leg": {"explainer": 1}, "upper_bust": {"explainer": 99}}
    with (
        FakeOpenAIServer(responder=ICMResponder()) as good,
        FakeOpenAIServer(responder=ICMResponder(faults=faults)) as bad,
    ):
        model_a = f"openai-compatible:{good.base_url}#model-a"
        model_b = f"openai-compatible:{bad.base_url}#model-b"
        _generate(manifest, db, "clean", {"all": model_a})
        _generate(manifest, db, "faulty", {"all": model_b, "critic": model_a})
    _judge(db)
    yield db


def test_two_bindings_compared(generated: Path) -> None:
    with Store.open(generated, read_only=True) as store:
        comparison = compare_runs(store, ["clean", "faulty"])
    clean, faulty = comparison.runs
    assert "#model-a" in clean["roles_compact"] and "#model-b" not in clean["roles_compact"]
    assert "#model-b" in faulty["roles_compact"] and "critic=" in faulty["roles_compact"]
    assert (clean["samples"], clean["accepted"], clean["acceptance_rate"]) == (4, 4, 1.0)
    assert (faulty["accepted"], faulty["rejected"], faulty["acceptance_rate"]) == (3, 1, 0.75)
    # faulty: middle_leg redoes its explainer once (1); upper_bust the same before its
    # rejection (1); the other two none: 2 retries over 4 samples. The explainer is checked as
    # soon as it has written (stage checks), so no Q-A set is written on an argument that is
    # then redone (before stage checks: 4 retries, the Q-A writer redone after each).
    assert (clean["retries_per_sample"], clean["retries_total"]) == (0.0, 0)
    assert (faulty["retries_per_sample"], faulty["retries_total"]) == (0.5, 2)
    # Failed verdict checks: middle_leg's one bad rule, then upper_bust's two rules twice. The
    # conclusion is written by code from the rule table, so each wrong argument also leaves its
    # text stating two labels.
    assert clean["critic_failures"] == {}
    assert faulty["critic_failures"] == {"verdict_matches_rule": 5, "states_one_label": 5}
    for run in (clean, faulty):
        assert run["tokens"] == run["input_tokens"] + run["output_tokens"] > 0
        priced = (run["input_tokens"] * 2 + run["output_tokens"] * 8) / 1e6
        assert run["cost_usd"] == pytest.approx(priced)
        assert run["cost_per_accepted_usd"] == pytest.approx(priced / run["accepted"])
        assert run["mean_latency_ms"] > 0
    # the retries and the rejected sample cost tokens per accepted sample (in all, faulty now
    # spends less: its rejected sample ends at the explainer, before the Q-A writer and critic)
    assert faulty["tokens"] / faulty["accepted"] > clean["tokens"] / clean["accepted"]
    assert faulty["cost_per_accepted_usd"] > clean["cost_per_accepted_usd"]
    # Judge scores (see _judge).
    assert comparison.judge_spec == "openai:gpt-4o"
    assert comparison.judge_specs == ["anthropic:x", "openai:gpt-4o"]
    assert comparison.criteria == ["accuracy", "comprehensiveness", "fluency", "preciseness"]
    accuracy = clean["scores"]["accuracy"]
    assert (accuracy["mean"], accuracy["n"]) == (78.75, 8)
    assert 70 <= accuracy["ci_low"] < 78.75 < accuracy["ci_high"] <= 90
    assert clean["scores"]["fluency"] == {"mean": 80.0, "ci_low": 80.0, "ci_high": 80.0, "n": 8}
    assert faulty["scores"]["accuracy"]["mean"] == 50.0 and faulty["scores"]["accuracy"]["n"] == 6
    assert (clean["judge_unscored"], faulty["judge_unscored"]) == (0, 1)


def test_judge_choice(generated: Path) -> None:
    with Store.open(generated, read_only=True) as store:
        other = compare_runs(store, ["clean", "faulty"], judge="anthropic:x")
        with pytest.raises(RunLookupError, match="no judgments by 'nobody'"):
            compare_runs(store, ["clean"], judge="nobody")
    assert other.runs[0]["scores"] == {"accuracy": {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0,
                                                    "n": 1}}  # fmt: skip
    assert other.runs[1]["scores"] == {}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("compare")(compare_command)
    app.command("other")(lambda: None)  # two commands: Typer keeps the sub-command name
    return app


def test_cli_table_json_and_plots(generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    result = runner.invoke(
        _app(), ["compare", "clean", "faulty", "--db", str(generated), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = result.stdout
    for text in ("acceptance rate", "100.0%", "75.0%", "retries per sample", "0.50",
                 "states_one_label x5", "verdict_matches_rule", "judge accuracy", "78.8 [",
                 "50.0 [50.0, 50.0]", "also judged by anthropic:x"):  # fmt: skip
        assert text in table, text
    for name in ("scores_by_run.png", "cost_vs_quality.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, name
    as_json = runner.invoke(
        _app(), ["compare", "faulty", "clean", "--db", str(generated), "--json", "--no-plots"]
    )
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert [r["name"] for r in data["runs"]] == ["faulty", "clean"]
    assert data["plots"] == {}
    assert data["runs"][0]["critic_failures"] == {"verdict_matches_rule": 5, "states_one_label": 5}


def test_cli_unknown_run(generated: Path) -> None:
    result = runner.invoke(_app(), ["compare", "clean", "nope", "--db", str(generated)])
    assert result.exit_code == 1
    assert "no run 'nope'" in result.stderr and "clean" in result.stderr


# --------------------------------------------------------------------------- hand-built store
@pytest.fixture
def built(tmp_path: Path) -> Path:
    return build_store(tmp_path / "icm.duckdb")


def test_numbers_pinned_on_the_hand_built_store(built: Path, tmp_path: Path) -> None:
    with Store.open(built, read_only=True) as store:
        comparison = compare_runs(store, ["offline-demo", "run-b"])
    a, b = comparison.runs
    # 6 samples: 2 accepted, 1 rejected, 2 failed, 1 pending -> 2 / 5 decided.
    assert (a["samples"], a["pending"], a["acceptance_rate"]) == (6, 1, 0.4)
    # Only smp-a-rej1 redid a generating stage (explainer R2, attempt 2): 1 retry over the two
    # samples with stage outputs; its critic's second round is not a retry.
    assert (a["retries_total"], a["retries_per_sample"]) == (1, 0.5)
    assert a["critic_failures"] == {"verdict_matches_rule": 2}
    assert (a["input_tokens"], a["output_tokens"], a["tokens"]) == (4350, 810, 5160)
    assert a["cost_usd"] == pytest.approx(0.0164)
    assert a["cost_per_accepted_usd"] == pytest.approx(0.0082)
    assert (a["calls"], a["cache_hits"], a["mean_latency_ms"]) == (10, 1, 850.0)
    assert (b["acceptance_rate"], b["retries_per_sample"], b["cost_usd"]) == (1.0, None, 0.0015)
    assert comparison.judge_spec is None and a["scores"] == {}
    # Without judge scores: no score plot, and cost against acceptance rate instead of quality.
    written = write_plots(comparison, tmp_path / "plots")
    assert written["scores"] is None
    assert written["cost_vs_quality"].read_bytes().startswith(PNG_MAGIC)


def test_run_references(built: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copy(built, tmp_path / "copy.duckdb"))
    with Store.open(copy) as store:
        store.insert(
            "runs",
            [{"run_id": "run-c", "name": "offline-demo", "kind": "generate",
              "status": "finished", "created_at": utcnow()}],
        )  # fmt: skip
        with pytest.raises(RunLookupError, match="names several runs"):
            compare_runs(store, ["offline-demo"])
        by_prefix = compare_runs(store, ["run-a", "run-b", "run-a"])
    assert [r["run_id"] for r in by_prefix.runs] == ["run-a", "run-b"]


def _plot_run(name: str, cost: float | None, tokens: float | None, rate: float | None) -> dict:
    return {
        "run_id": name, "name": name, "roles_compact": "all=openai-compatible:m",
        "cost_per_accepted_usd": cost, "tokens_per_accepted": tokens,
        "acceptance_rate": rate, "scores": {},
    }  # fmt: skip


def _drawn_texts(monkeypatch, tmp_path: Path, runs: list[dict]) -> tuple[list[str], str]:
    """The texts and x label of the cost plot of ``runs``, drawn with warnings as errors."""
    import warnings

    from evaluators import plots

    figures = []
    real_save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path: figures.append(fig) or real_save(fig, path)
    )
    comparison = Comparison(runs=runs, judge_spec=None, judge_specs=[], criteria=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the empty plot used to warn "No artists with labels"
        path = plots.plot_cost_vs_quality(comparison, tmp_path / "cost.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    [fig] = figures
    [ax] = fig.axes
    return [t.get_text() for t in ax.texts], ax.get_xlabel()


def test_cost_plot_with_nothing_to_plot_says_no_costs_recorded(monkeypatch, tmp_path: Path):
    # every sample failed (no accepted ones) and nothing was priced
    runs = [_plot_run("a", None, None, 0.0), _plot_run("b", None, None, None)]
    texts, _ = _drawn_texts(monkeypatch, tmp_path, runs)
    assert "no costs recorded" in texts


def test_zero_costs_plot_tokens_and_say_no_costs_recorded(monkeypatch, tmp_path: Path):
    runs = [_plot_run("a", 0.0, 900.0, 0.5), _plot_run("b", 0.0, 1200.0, 0.75)]
    texts, xlabel = _drawn_texts(monkeypatch, tmp_path, runs)
    assert xlabel == "tokens per accepted sample (no costs recorded)"
    assert texts == ["a", "b"]  # both runs are points, labelled
