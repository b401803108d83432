"""Issue 23 (counts): calls of interrupted or superseded attempts are shown apart in ``icm runs``,
``icm compare`` and the viewer, so a resumed run's count says why it exceeds a clean run's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakes import FakeOpenAIServer, error
from fakes.icm_responder import ICMResponder, _messages
from fastapi.testclient import TestClient
from test_generate import make_manifest, run_pipeline
from typer.testing import CliRunner

from data.store import Store
from graphs.cli import app
from graphs.viewer.app import create_app

CATEGORIES = ["upper_normal", "middle_leg", "tongue"]


class FlakyExplainer:
    """The ICM fake, whose explainer fails for ``tongue`` until ``healed``."""

    def __init__(self) -> None:
        self.inner = ICMResponder()
        self.healed = False

    def __call__(self, body: dict[str, Any]) -> Any:
        system, user = _messages(body)
        if (
            not self.healed
            and "You are the explainer" in system
            and ICMResponder._category(user) == "tongue"
        ):
            return error(400, "bad request")
        return self.inner(body)


def test_calls_of_a_superseded_attempt_are_counted_apart(tmp_path: Path) -> None:
    db = tmp_path / "icm.duckdb"
    manifest = make_manifest(tmp_path / "in", CATEGORIES)
    responder = FlakyExplainer()
    with FakeOpenAIServer(responder=responder) as server:
        first = run_pipeline(manifest, db, server, run="counted")
        with Store.open(db, read_only=True) as store:
            failed = store.rows("SELECT sample_id FROM samples WHERE status = 'failed'")
            assert len(failed) == 1
            earlier = store.scalar(
                "SELECT count(*) FROM llm_calls WHERE sample_id = ?", [failed[0]["sample_id"]]
            )
        assert earlier > 0
        responder.healed = True
        run_pipeline(manifest, db, server, run="counted", retry_failed=True)
    with Store.open(db, read_only=True) as store:
        total = store.scalar("SELECT count(*) FROM llm_calls WHERE run_id = 'counted'")
        statuses = {r["status"] for r in store.rows("SELECT status FROM samples")}
    assert statuses == {"accepted"}

    runs = json.loads(CliRunner().invoke(app, ["runs", "--db", str(db), "--json"]).output)
    [run] = [r for r in runs if r["run_id"] == first.run_id]
    assert run["calls"] == total and run["earlier_attempt_calls"] == earlier
    text = CliRunner().invoke(app, ["runs", "--db", str(db)], env={"COLUMNS": "100"}).output
    assert f"{earlier} from interrupted or superseded attempts" in text

    compare = CliRunner().invoke(app, ["compare", "counted", "--db", str(db), "--no-plots"])
    assert compare.exit_code == 0, compare.output
    assert "earlier-attempt calls" in compare.output and str(earlier) in compare.output

    page = TestClient(create_app(db), base_url="http://127.0.0.1").get("/runs/counted")
    assert f"{earlier} from interrupted or superseded attempts" in page.text


def test_a_clean_run_has_no_earlier_attempt_calls(tmp_path: Path) -> None:
    db = tmp_path / "icm.duckdb"
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        run_pipeline(make_manifest(tmp_path / "in", CATEGORIES[:1]), db, server, run="clean")
    runs = json.loads(CliRunner().invoke(app, ["runs", "--db", str(db), "--json"]).output)
    assert runs[0]["earlier_attempt_calls"] == 0 and runs[0]["calls"] > 0
