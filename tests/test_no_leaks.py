"""Issue 23 (leaks): no key of the environment, of a spec's ``api_key_env`` or echoed by an
endpoint reaches the store file, a terminal, an export or a viewer page.

The end-to-end test is the worst case: a fake endpoint that echoes keys back in 401 bodies, in
500 bodies, in raw (unparseable) answers and inside an accepted answer's text. It runs
``python graphs/generate.py`` against it, then every command that prints or exports, and greps
every byte that came out for every key.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer, error, reply
from fakes.icm_responder import ICMResponder, _messages
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from data.redaction import REDACTED, RedactingStream, redact, redact_value, register_key_env
from data.store import Store

REPO = Path(__file__).resolve().parents[1]

#: keys set in the environment, by kind of variable name
OPENAI_KEY = "sk-leaktest-openai-0123456789abcdefXYZ"
ANTHROPIC_KEY = "leaktest-anthropic-secret-9876543210"  # no known key shape: only the env says
HF_TOKEN = "leaktest-hftoken-value-abcdef0123456"
GATEWAY_KEY = "leaktest-gateway-credential-55aa77bb"  # named by api_key_env, not by its name
#: a key in no variable, echoed by the endpoint (an old key, a colleague's)
ECHOED_ONLY = "sk-proj-echoedonly0123456789ABCDEFghij"
KEYS = (OPENAI_KEY, ANTHROPIC_KEY, HF_TOKEN, GATEWAY_KEY, ECHOED_ONLY)
ENV = {
    "OPENAI_API_KEY": OPENAI_KEY,
    "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
    "HF_TOKEN": HF_TOKEN,
    "MY_GATEWAY_CREDENTIAL": GATEWAY_KEY,
}
ALL_KEYS_TEXT = " ".join(KEYS)


class EchoingResponder:
    """The ICM fake, except that each category of image meets one way of echoing keys."""

    def __init__(self) -> None:
        self.inner = ICMResponder()

    def __call__(self, body: dict[str, Any]) -> Any:
        system, user = _messages(body)
        category = ICMResponder._category(user)
        describer = "You are the describer" in system
        if category == "upper_normal" and describer:
            return error(401, f"Incorrect API key provided: {ALL_KEYS_TEXT}. Find your key at ...")
        if category == "middle_leg" and describer:
            return error(500, f"proxy failed; request headers: Authorization: Bearer {GATEWAY_KEY}"
                         f" x-api-key: {ALL_KEYS_TEXT}")  # fmt: skip
        if category == "upper_bust" and describer:
            return reply(f"I cannot produce JSON. Debug: {ALL_KEYS_TEXT}")
        action = self.inner(body)
        if category == "whole_normal" and "You are the explainer" in system:
            answer = json.loads(action.content)
            answer["explanation"] = f"{answer.get('explanation', '')} (seen: {ALL_KEYS_TEXT})"
            return reply(answer)
        return action


def _manifest(folder: Path) -> Path:
    folder.mkdir(parents=True)
    categories = ["upper_normal", "middle_leg", "upper_bust", "whole_normal", "tongue"]
    rows = []
    for n, category in enumerate(categories):
        Image.new("RGB", (40 + n, 30), (n * 40 % 256, 90, 160)).save(folder / f"{n}.png")
        rows.append({"image": f"{n}.png", "policy": "icm_sexy", "category": category})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _leaks(data: bytes) -> list[str]:
    return [key for key in KEYS if key.encode() in data]


def test_no_key_reaches_store_output_exports_or_viewer(tmp_path: Path, monkeypatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    db = tmp_path / "icm.duckdb"
    out = tmp_path / "out"
    out.mkdir()
    outputs: dict[str, str] = {}
    with FakeOpenAIServer(responder=EchoingResponder()) as server:
        spec = f"openai-compatible:{server.base_url}#fake-model?api_key_env=MY_GATEWAY_CREDENTIAL"
        done = subprocess.run(
            [sys.executable, str(REPO / "graphs" / "generate.py"), str(_manifest(tmp_path / "in")),
             "--db", str(db), "--rules", "R1", "--role", f"all={spec}", "--role-setting",
             "all.jitter=false", "--role-setting", "all.backoff_base_s=0", "--role-setting",
             "all.max_retries=1", "--no-perception", "--run", "leaks", "--max-stage-retries", "1"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        echoed = [r for r in server.chat_requests() if r.body]
    outputs["generate"] = done.stdout + done.stderr
    assert done.returncode == 0, outputs["generate"][-3000:]
    assert len(echoed) > 10  # the endpoint was asked, and echoed

    with Store.open(db, read_only=True) as store:
        samples = store.rows("SELECT sample_id, status, reasons_json FROM samples")
        calls = store.scalar("SELECT count(*) FROM llm_calls WHERE error LIKE '%REDACTED%'")
    statuses = sorted(s["status"] for s in samples)
    assert "failed" in statuses and "accepted" in statuses, statuses
    assert calls > 0  # the echoed errors were stored, redacted
    assert any(REDACTED in (s["reasons_json"] or "") for s in samples)

    from graphs.cli import app

    runner = CliRunner()

    def icm(*args: str) -> None:
        result = runner.invoke(app, [*args], catch_exceptions=False)
        outputs[" ".join(args)] = result.output
        assert result.exit_code == 0, (args, result.output)

    icm("runs", "--db", str(db))
    icm("runs", "--db", str(db), "--json")
    icm("samples", "leaks", "--db", str(db))
    icm("samples", "leaks", "--db", str(db), "--json")
    for sample in samples:
        icm("traces", sample["sample_id"], "--full", "--db", str(db))
    for fmt, name in (("llava", "x.json"), ("sharegpt", "x.sg.json"), ("parquet", "x.parquet"),
                      ("hf", "x.hf")):  # fmt: skip
        icm("export", "leaks", "--format", fmt, "--all", "--out", str(out / name), "--db", str(db))
    icm("compare", "leaks", "--db", str(db), "--out", str(out / "plots"))
    icm("view", str(db), "--export", str(out / "report.html"))

    from graphs.viewer.app import create_app

    client = TestClient(create_app(db), base_url="http://127.0.0.1")
    pages = ["/", "/runs/" + _run_id(db), "/compare?run=leaks", "/judge", "/finetune"]
    pages += [f"/samples/{s['sample_id']}" for s in samples]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        outputs[f"GET {page}"] = response.text

    found = {what: _leaks(text.encode()) for what, text in outputs.items()}
    for file in [*tmp_path.rglob("*")]:
        if file.is_file() and "in" not in file.relative_to(tmp_path).parts[:1]:
            found[str(file.relative_to(tmp_path))] = _leaks(file.read_bytes())
    assert {what: keys for what, keys in found.items() if keys} == {}
    # the echoes were shown, redacted: the grep above searched real output
    traces = [text for what, text in outputs.items() if what.startswith("traces")]
    assert any(REDACTED in text for text in traces)
    assert any(REDACTED in text for what, text in outputs.items() if what.startswith("GET"))


def _run_id(db: Path) -> str:
    with Store.open(db, read_only=True) as store:
        return str(store.scalar("SELECT run_id FROM runs WHERE name = 'leaks'"))


# ----------------------------------------------------------------------------- the function
def test_redact_removes_environment_keys_and_key_shapes(monkeypatch) -> None:
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-0123456789-value")
    monkeypatch.setenv("OTHER_NAME", "plain-value-not-a-key-1234")
    text = (
        "tok-0123456789-value sk-abcdefghijklmnop1234 Bearer abc123def456ghi789 "
        "https://user:pw-0123456789@host/v1?api_key=zz0123456789&x=1 plain-value-not-a-key-1234"
    )
    cleaned = redact(text)
    assert "tok-0123456789-value" not in cleaned
    assert "sk-abcdefghijklmnop1234" not in cleaned
    assert "abc123def456ghi789" not in cleaned
    assert "pw-0123456789" not in cleaned and "zz0123456789" not in cleaned
    assert "plain-value-not-a-key-1234" in cleaned  # not a key's variable: kept
    assert "https://user:" in cleaned and "&x=1" in cleaned  # the rest of the text survives


def test_redact_keeps_ordinary_text_and_inlined_images() -> None:
    prose = "A basic information panel; the bearer of the flag; max_tokens=400; token budget."
    assert redact(prose) == prose
    sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert redact(sha) == sha
    data_uri = "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD+AKIAAKIAQUJDREVGR0hJSktMTk9Q"
    assert redact(data_uri) == data_uri


def test_a_variable_named_by_api_key_env_is_a_secret(monkeypatch) -> None:
    monkeypatch.setenv("ODD_NAME_CREDENTIAL", "odd-credential-value-42")
    assert redact("x odd-credential-value-42") == "x odd-credential-value-42"
    register_key_env("ODD_NAME_CREDENTIAL")
    assert redact("x odd-credential-value-42") == f"x {REDACTED}"


def test_redact_value_walks_nested_rows() -> None:
    row = {"a": ["sk-abcdefghijklmnop1234", {"b": ("sk-abcdefghijklmnop1234", 3)}], "n": 1}
    assert redact_value(row) == {"a": [REDACTED, {"b": (REDACTED, 3)}], "n": 1}


def test_every_store_write_is_redacted(tmp_path: Path, monkeypatch) -> None:
    """The store boundary: insert, update_by_key and execute all redact, whatever the table."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        row = {
            "run_id": "r",
            "name": f"n {OPENAI_KEY}",
            "kind": "generate",
            "status": "running",
            "command": f"icm generate --x {OPENAI_KEY}",
            "created_at": "2026-01-01 00:00:00",
        }
        store.insert("runs", [row])
        store.update_by_key("runs", "run_id", [{"run_id": "r", "config_json": OPENAI_KEY}])
        store.execute("UPDATE runs SET policy_name = ? WHERE run_id = ?", [f"e {OPENAI_KEY}", "r"])
        row = store.rows("SELECT name, command, config_json, policy_name FROM runs")[0]
    assert all(OPENAI_KEY not in str(v) for v in row.values()), row
    assert row["command"] == f"icm generate --x {REDACTED}"
    assert OPENAI_KEY.encode() not in path.read_bytes()


def test_printed_text_is_redacted(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    sink = io.StringIO()
    stream = RedactingStream(sink)
    stream.write(f"error: {OPENAI_KEY}\n")
    assert sink.getvalue() == f"error: {REDACTED}\n"


@pytest.mark.parametrize("args", [["runs"], ["samples", "x"]])
def test_commands_print_through_the_redaction(tmp_path: Path, monkeypatch, args) -> None:
    """Even an error that quotes user input (a key typed as a run name) is redacted."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    from graphs.cli import app

    result = CliRunner().invoke(app, [*args, OPENAI_KEY, "--db", str(tmp_path / "none.duckdb")])
    assert OPENAI_KEY not in result.output


def test_a_store_written_before_redaction_leaks_nothing_on_output(tmp_path: Path, monkeypatch):
    """The output boundaries redact on their own: a store written by an older version (a key in
    reasons, an explanation, a call's error) prints, exports and serves without it."""
    import duckdb
    from run_store import build_store

    from graphs.cli import app
    from graphs.viewer.app import create_app

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    db = build_store(tmp_path / "old.duckdb")
    with duckdb.connect(str(db)) as raw:  # as an older icm wrote it: no redaction
        raw.execute(
            "UPDATE samples SET reasons_json = ? WHERE sample_id = 'smp-a-fail1'",
            [json.dumps([f"describer: failed: Incorrect API key {OPENAI_KEY}"])],
        )
        raw.execute("UPDATE explanations SET explanation = ? WHERE sample_id = 'smp-a-acc1'",
                    [f"It is fine ({ECHOED_ONLY})."])  # fmt: skip
    assert OPENAI_KEY.encode() in db.read_bytes()
    runner = CliRunner()
    outputs = [
        runner.invoke(app, ["samples", "run-a", "--db", str(db), "--json"]).output,
        runner.invoke(app, ["traces", "smp-a-fail1", "--full", "--db", str(db)]).output,
    ]
    for fmt in ("llava", "parquet"):
        out = tmp_path / f"x.{fmt}"
        result = runner.invoke(app, ["export", "run-a", "-f", fmt, "--all", "-o", str(out),
                                     "--db", str(db)])  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes().decode("latin-1"))
    client = TestClient(create_app(db), base_url="http://127.0.0.1")
    outputs += [client.get(p).text for p in ("/runs/run-a", "/samples/smp-a-fail1",
                                               "/samples/smp-a-acc1")]  # fmt: skip
    report = tmp_path / "report.html"
    assert runner.invoke(app, ["view", str(db), "--export", str(report)]).exit_code == 0
    outputs.append(report.read_text())
    leaks = [n for n, text in enumerate(outputs) if OPENAI_KEY in text or ECHOED_ONLY in text]
    assert leaks == []
    assert REDACTED in outputs[0] and REDACTED in outputs[2]
