"""``icm runs``, ``icm traces`` and ``icm export`` through Typer, as a researcher types them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from rich.console import Console
from run_store import FAIL_REASON, FEEDBACK, REJECT_REASON, build_store
from typer.testing import CliRunner

from data.provenance import compact_roles
from graphs.commands.runs import (
    export_command,
    runs_command,
    samples_command,
    traces_command,
)
from graphs.generate import _report
from graphs.runner import RunSummary

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("runs")(runs_command)
    app.command("samples")(samples_command)
    app.command("traces")(traces_command)
    app.command("export")(export_command)
    return app


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per module (a build costs a quarter second); tests get copies."""
    return build_store(tmp_path_factory.mktemp("template") / "icm.duckdb")


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(template, tmp_path / "icm.duckdb"))


def _invoke(*args: str):
    return runner.invoke(_app(), list(args))


def test_runs_json_counts_samples_calls_tokens_and_cost(db: Path) -> None:
    result = _invoke("runs", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    runs = {r["name"]: r for r in json.loads(result.stdout)}
    assert list(runs) == ["offline-demo", "gpt4o-trial"]
    a = runs["offline-demo"]
    assert {k: a[k] for k in ("run_id", "kind", "status", "policy", "rules")} == {
        "run_id": "run-a",
        "kind": "generate",
        "status": "finished",
        "policy": "icm-default",
        "rules": "R1,R2",
    }
    assert {k: a[k] for k in ("samples", "accepted", "rejected", "failed", "pending")} == {
        "samples": 6,
        "accepted": 2,
        "rejected": 1,
        "failed": 2,
        "pending": 1,
    }
    assert (a["calls"], a["cache_hits"]) == (10, 1)
    assert (a["input_tokens"], a["output_tokens"], a["tokens"]) == (4350, 810, 5160)
    assert a["cost_usd"] == pytest.approx(0.0164)
    assert a["roles"]["critic"] == {"spec": "anthropic:claude-sonnet-4-5", "settings": {}}
    assert a["created_at"] == "2025-03-01 09:00:00"
    b = runs["gpt4o-trial"]
    assert (b["accepted"], b["rejected"], b["calls"], b["tokens"]) == (1, 0, 1, 500)
    assert b["cost_usd"] == pytest.approx(0.0015)


def test_runs_table_shows_every_run(db: Path) -> None:
    result = _invoke("runs", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "offline-demo" in result.stdout and "gpt4o-trial" in result.stdout
    assert "explainer,qa_writer=openai:gpt-4o" in result.stdout


def test_compact_roles_groups_roles_that_share_a_model() -> None:
    bindings = {"describer": "offline:m", "explainer": "openai:gpt-4o", "critic": "offline:m"}
    assert compact_roles(bindings) == "describer,critic=offline:m explainer=openai:gpt-4o"
    assert compact_roles(None) == ""
    recorded = {"describer": {"spec": "offline:m", "settings": {}}, "critic": {"spec": "x:y"}}
    assert compact_roles(recorded) == "describer=offline:m critic=x:y"


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    for args in (["runs"], ["traces", "smp"], ["export", "run-a", "--format", "llava"]):
        result = _invoke(*args, "--db", str(tmp_path / "none.duckdb"))
        assert result.exit_code == 1
        assert f"no database at {tmp_path / 'none.duckdb'}" in result.output
        assert "Traceback" not in result.output


def _timeline_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"\s+2025-03-01 ", line)]


def test_samples_lists_ids_with_status_and_one_line_reason(db: Path) -> None:
    result = _invoke("samples", "offline-demo", "--db", str(db))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "6 samples of run offline-demo (run-a):"
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert sorted(rows) == sorted(
        ["smp-a-acc1", "smp-a-acc2", "smp-a-rej1", "smp-a-fail1", "smp-a-fail2", "smp-a-pend1"]
    )
    # id, status and image together (the end-of-run summary names images; traces take ids)
    images = {line.split()[0]: line.split()[2] for line in lines[1:-1]}
    assert images == {
        "smp-a-acc1": "beach.jpg", "smp-a-acc2": "museum.jpg", "smp-a-rej1": "party.jpg",
        "smp-a-fail1": "broken.png", "smp-a-fail2": "tiny.gif", "smp-a-pend1": "queue.jpg",
    }  # fmt: skip
    assert rows["smp-a-rej1"] == f"smp-a-rej1  rejected  party.jpg   {REJECT_REASON}"
    assert rows["smp-a-fail1"] == f"smp-a-fail1  failed    broken.png  {FAIL_REASON}"
    assert rows["smp-a-acc1"].split() == ["smp-a-acc1", "accepted", "beach.jpg"]
    assert lines[-1].startswith("one sample's timeline: icm traces SAMPLE_ID")


def test_samples_status_filter_and_json(db: Path) -> None:
    result = _invoke("samples", "run-a", "--status", "rejected", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert (listing["run_id"], listing["run_name"], listing["status"]) == (
        "run-a",
        "offline-demo",
        "rejected",
    )
    assert [(s["sample_id"], s["status"], s["reason"]) for s in listing["samples"]] == [
        ("smp-a-rej1", "rejected", REJECT_REASON)
    ]
    # The ids it prints are the ones `icm traces` takes.
    trace = _invoke("traces", listing["samples"][0]["sample_id"], "--db", str(db))
    assert trace.exit_code == 0 and "final status: rejected" in trace.stdout
    failed = _invoke("samples", "run-a", "-s", "failed", "--db", str(db), "--json")
    assert [s["sample_id"] for s in json.loads(failed.stdout)["samples"]] == [
        "smp-a-fail1",
        "smp-a-fail2",
    ]


def test_samples_errors_name_the_problem(db: Path) -> None:
    unknown = _invoke("samples", "no-such-run", "--db", str(db))
    assert unknown.exit_code == 1
    assert "no run 'no-such-run'" in unknown.stderr and "offline-demo (run-a)" in unknown.stderr
    bad = _invoke("samples", "run-a", "--status", "done", "--db", str(db))
    assert bad.exit_code == 1 and "--status 'done' is not a sample status" in bad.stderr
    none = _invoke("samples", "gpt4o-trial", "--status", "rejected", "--db", str(db))
    assert none.exit_code == 0
    assert none.stdout.strip() == "run gpt4o-trial (run-b) has no rejected samples."


def test_traces_shows_the_retry_and_its_feedback_in_time_order(db: Path) -> None:
    result = _invoke("traces", "smp-a-rej", "--db", str(db))  # a unique prefix
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("sample smp-a-rej1  run offline-demo (run-a)")
    lines = _timeline_lines(out)
    times = [line.split()[1] for line in lines]
    assert times == sorted(times) and len(lines) == 15  # 8 calls + 7 stage outputs
    explainer_r2 = [line for line in lines if "explainer[R2]" in line and " stage " in line]
    assert ["attempt 1" in explainer_r2[0], "attempt 2" in explainer_r2[1]] == [True, True]
    # The feedback sits right under the second attempt, after the critic's first rejection.
    body = out.splitlines()
    second = body.index(explainer_r2[1])
    assert body[second + 1].strip() == f"critic feedback given to this attempt: {FEEDBACK}"
    first_critic = next(i for i, line in enumerate(body) if " stage  critic" in line)
    assert first_critic < second
    # Each call line names its role, model, prompt, cache use, tokens, latency and cost.
    call = next(line for line in lines if "explainer[R2]" in line and "try 2" in line)
    assert "role explainer  openai:gpt-4o  prompt explainer.user@9f1c2ab0" in call
    assert "cache miss  500+110 tok  850 ms  $0.0024" in call
    assert "error: RateLimitError: 429 Too Many Requests" in out
    assert "FAIL  verdict_matches_rule (deterministic): R2: No, table: Yes" in out
    assert out.index("critiques (3)") < out.index("final status: rejected  (attempts recorded: 2)")
    assert out.rstrip().endswith(f"- {REJECT_REASON}")
    assert "raw_output" not in out


def test_traces_full_and_json(db: Path) -> None:
    full = _invoke("traces", "smp-a-acc1", "--db", str(db), "--full")
    assert full.exit_code == 0, full.output
    assert "raw_output:" in full.stdout and '"call": "c-09"' in full.stdout
    assert "cache hit" in full.stdout

    result = _invoke("traces", "smp-a-rej1", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    trace = json.loads(result.stdout)
    assert trace["status"] == "rejected" and trace["reasons"] == [REJECT_REASON]
    kinds = [(e["kind"], e["stage"], e["attempt"]) for e in trace["timeline"]]
    assert kinds[:4] == [
        ("call", "describer", 1),
        ("stage", "describer", 1),
        ("call", "context_interpreter", 1),
        ("stage", "context_interpreter", 1),
    ]
    retry = [e for e in trace["timeline"] if e["kind"] == "stage" and e["feedback"]]
    assert [(e["stage"], e["rule_variant"], e["attempt"]) for e in retry] == [
        ("explainer", "R2", 2)
    ]
    assert [(c["attempt"], c["check_name"], c["passed"]) for c in trace["critiques"]] == [
        (1, "no_refusal", True),
        (1, "verdict_matches_rule", False),
        (2, "verdict_matches_rule", False),
    ]
    assert "raw_output" not in trace["timeline"][0]


def test_traces_unknown_or_ambiguous_sample(db: Path) -> None:
    unknown = _invoke("traces", "zzz", "--db", str(db))
    assert unknown.exit_code == 1
    assert "no sample 'zzz'" in unknown.output and "7 samples" in unknown.output
    ambiguous = _invoke("traces", "smp-a", "--db", str(db))
    assert ambiguous.exit_code == 1
    assert "matches several samples" in ambiguous.output and "smp-a-acc1" in ambiguous.output


def test_export_command_writes_and_reports(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    result = _invoke(
        "export", "offline-demo", "--format", "llava", "--db", str(db), "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert f"wrote 4 records (2 samples) of run offline-demo (run-a) as llava to {out}" in (
        result.stdout
    )
    assert len(json.loads(out.read_text())) == 4

    result = _invoke(
        "export", "run-a", "-f", "sharegpt", "--db", str(db), "-o", str(tmp_path / "s.json"),
        "--all",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 6 records" in result.stdout
    assert "skipped 2: failed sample without an explanation" in result.stdout
    assert '"formatting": "sharegpt"' in result.stdout


def test_export_command_default_path(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke("export", "gpt4o-trial", "--format", "parquet", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "exports" / "gpt4o-trial.parquet").is_file()


def test_export_all_never_replaces_the_accepted_export(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    accepted = tmp_path / "runs" / "exports" / "run-a.llava.json"
    assert _invoke("export", "run-a", "--format", "llava", "--db", str(db)).exit_code == 0
    before = accepted.read_bytes()
    assert {r["id"] for r in json.loads(before)} == {
        "smp-a-acc1-R1", "smp-a-acc1-R2", "smp-a-acc2-R1", "smp-a-acc2-R2",
    }  # fmt: skip

    result = _invoke("export", "run-a", "--format", "llava", "--db", str(db), "--all")
    assert result.exit_code == 0, result.output
    every = tmp_path / "runs" / "exports" / "run-a.all.llava.json"
    assert f"to {Path('runs/exports/run-a.all.llava.json')}" in result.stdout
    assert accepted.read_bytes() == before  # untouched
    records = json.loads(every.read_text())
    assert {r["status"] for r in records} == {"accepted", "rejected"}
    assert (tmp_path / "runs" / "exports" / "run-a.all.llava.meta.jsonl").is_file()

    # Asking --all to write over the accepted file by name is refused, and nothing changes.
    clash = _invoke(
        "export", "run-a", "-f", "llava", "--db", str(db), "--all", "--out", str(accepted)
    )
    assert clash.exit_code == 1
    assert "would replace the accepted-only export" in clash.output
    assert accepted.read_bytes() == before


def test_export_command_errors(db: Path, tmp_path: Path) -> None:
    unknown = _invoke("export", "nope", "--format", "llava", "--db", str(db))
    assert unknown.exit_code == 1
    assert "no run 'nope'" in unknown.output and "offline-demo" in unknown.output
    no_format = _invoke("export", "run-a", "--db", str(db))
    assert no_format.exit_code == 2 and "--format" in no_format.output
    bad = _invoke("export", "run-a", "--format", "csv", "--db", str(db))
    assert bad.exit_code == 2


def test_a_locked_database_names_its_holder(db: Path) -> None:
    """A generation holding the file (here: this process, writing) gives the lock message."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = _invoke("runs", "--db", str(db))
        assert result.exit_code == 1
        assert "is in use by" in result.output and "Traceback" not in result.output
    finally:
        holder.communicate("", timeout=30)


def test_the_cli_starts_without_importing_the_heavy_libraries() -> None:
    """`icm --help` stays quick: SDKs, torch and scipy load only in the commands that use them."""
    code = (
        "import sys, graphs.cli; "
        "print(sorted(m for m in ('openai', 'anthropic', 'torch', 'transformers', 'scipy', "
        "'langchain_openai', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_end_of_run_hint_points_to_icm_samples(db: Path) -> None:
    """The hint printed after a run names the command that lists sample ids, and that command
    run as printed works (``icm runs --json`` has no sample ids)."""
    console = Console(record=True, width=200)
    counts = {"accepted": 2, "rejected": 1, "failed": 2, "pending": 1}
    _report(console, RunSummary("run-a", db, counts=counts, processed=6))
    text = console.export_text()
    assert "runs --json" not in text
    hinted = [line.split() for line in text.splitlines() if line.strip().startswith("icm samples")]
    assert ["icm", "samples", "run-a", "--status", "rejected", "--db", str(db)] in hinted
    for words in hinted:
        args = words[1 : words.index(str(db)) + 1]
        result = _invoke(*args)
        assert result.exit_code == 0, result.output
        assert "samples of run offline-demo (run-a)" in result.stdout
