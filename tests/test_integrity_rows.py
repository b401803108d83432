"""Issue 23 (A), the input side: repeated manifest rows, CSV quoting, names the file system or
rich refuses, policy YAML alias bombs. Each is driven through ``graphs/generate.py`` against the
fake OpenAI-compatible server, as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from PIL import Image

from data.manifest import read_manifest
from data.policy import PolicyError, load_policy
from data.sample_identity import distinct_rows
from data.store import Store

REPO = Path(__file__).resolve().parents[1]
POLICY = load_policy("icm_sexy")
CATEGORIES = list(POLICY.categories)


def generate(manifest: Path, db: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    """``python graphs/generate.py`` as a user runs it (one rule, the fake server for all)."""
    command = [
        sys.executable, str(REPO / "graphs" / "generate.py"), str(manifest), "--db", str(db),
        "--rules", "R1", "--role", f"all=openai-compatible:{url}#fake-model",
        "--role-setting", "all.jitter=false", "--role-setting", "all.backoff_base_s=0",
        "--no-perception", "--concurrency", "4", *extra,
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "4000"}  # one message, one line: no wrapping to search
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


def one_line(text: str) -> str:
    """The output with its whitespace runs made single spaces."""
    return " ".join(text.split())


def images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n in range(count):
        Image.new("RGB", (40 + n, 30), (n * 30 % 256, 90, 160)).save(folder / f"{n}.png")
        names.append(f"{n}.png")
    return names


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def statuses(db: Path) -> dict[str, str]:
    with Store.open(db, read_only=True) as store:
        rows = store.rows("SELECT image_path, status FROM samples")
    return {Path(r["image_path"]).name: r["status"] for r in rows}


# ----------------------------------------------------------------------- repeated rows
def repeated_manifest(folder: Path) -> tuple[Path, int]:
    """Ten distinct images; line 11 repeats line 1 (adjacent to nothing: far apart), line 12
    repeats line 11's neighbour (identical, adjacent), line 13 gives image 2 another
    category (a contradiction)."""
    names = images(folder, 10)
    rows = [
        {"image": name, "policy": "icm_sexy", "category": CATEGORIES[n]}
        for n, name in enumerate(names)
    ]
    rows.append(dict(rows[0]))  # line 11 = line 1
    rows.append(dict(rows[9]))  # line 12 = line 10
    rows.append({**rows[2], "category": CATEGORIES[12]})  # line 13 contradicts line 3
    return write_jsonl(folder / "manifest.jsonl", rows), 10


def test_repeated_rows_are_one_sample_and_contradicting_rows_an_error(tmp_path: Path) -> None:
    manifest, distinct = repeated_manifest(tmp_path / "in")
    db = tmp_path / "icm.duckdb"
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        # without --skip-bad-rows the contradiction stops the run before any model call
        refused = generate(manifest, db, server.base_url)
        assert refused.returncode == 2, refused.stderr
        said = one_line(refused.stderr)
        assert f"{manifest}:3: lines 3 and 13 give the same image '2.png'" in said
        assert f"category (line 3: '{CATEGORIES[2]}', line 13: '{CATEGORIES[12]}')" in said
        assert "Traceback" not in refused.stderr and server.chat_requests() == []

        first = generate(manifest, db, server.base_url, "--skip-bad-rows")
        assert first.returncode == 0, first.stderr
        said = one_line(first.stderr)
        assert "lines 1 and 11 are the same sample (image '0.png'" in said
        assert "lines 10 and 12 are the same sample (image '9.png'" in said
        assert "lines 3 and 13 give the same image '2.png'" in said
        calls = len(server.chat_requests())

        # every distinct sample finished, each once; the contradicted one failed naming both
        assert statuses(db) == {
            f"{n}.png": ("failed" if n == 2 else "accepted") for n in range(distinct)
        }
        with Store.open(db, read_only=True) as store:
            [reasons] = store.rows("SELECT reasons_json FROM samples WHERE status = 'failed'")
            assert "lines 3 and 13" in reasons["reasons_json"]
            assert store.scalar("SELECT count(*) FROM explanations") == distinct - 1

        # a rerun does nothing new
        again = generate(manifest, db, server.base_url, "--skip-bad-rows")
        assert again.returncode == 0, again.stderr
        assert len(server.chat_requests()) == calls
        assert "0 processed, 10 already done" in one_line(again.stderr)


def test_rows_asking_about_different_descriptions_are_distinct_samples(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    [name] = images(folder, 1)
    rows = [
        {"image": name, "policy": "icm_sexy", "category": "upper_normal", "description": "A"},
        {"image": name, "policy": "icm_sexy", "category": "upper_normal", "description": "B"},
        {"image": name, "policy": "icm_sexy", "category": "upper_normal", "description": "A"},
    ]
    manifest = write_jsonl(folder / "m.jsonl", rows)
    parsed = read_manifest(manifest, {"icm_sexy": POLICY}, default_policy=None)
    folded = distinct_rows(manifest, parsed)
    assert [r.line for r in folded.rows] == [1, 2]
    assert folded.variant(folded.rows[0]) != folded.variant(folded.rows[1])
    assert folded.notes == [
        f"{manifest}: lines 1 and 3 are the same sample (image '0.png', policy 'icm_sexy'): "
        "generated once"
    ]


def test_rows_of_one_image_in_two_splits_contradict(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    [name] = images(folder, 1)
    rows = [
        {"image": name, "policy": "icm_sexy", "category": "upper_normal", "split": "train"},
        {"image": name, "policy": "icm_sexy", "category": "upper_normal", "split": "test"},
    ]
    manifest = write_jsonl(folder / "m.jsonl", rows)
    parsed = read_manifest(manifest, {"icm_sexy": POLICY}, default_policy=None)
    [conflict] = distinct_rows(manifest, parsed).conflicts
    assert "split (line 1: 'train', line 2: 'test')" in conflict.message


# ----------------------------------------------------------------------- CSV manifests
def test_csv_keeps_quoted_newlines_and_errors_name_the_physical_line(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    images(folder, 2)
    manifest = folder / "m.csv"
    manifest.write_text(
        "image,policy,category,description\n"
        '0.png,icm_sexy,upper_normal,"line1\nline2\nline3"\n'
        "1.png,icm_sexy,no_such_category,\n"
    )
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        result = generate(manifest, tmp_path / "icm.duckdb", server.base_url)
        assert server.chat_requests() == []
    assert result.returncode == 2
    # the bad record starts on physical line 5 (the record before it spans lines 2-4)
    assert f"{manifest}:5: field 'category': 'no_such_category'" in one_line(result.stderr)
    good = folder / "good.csv"
    good.write_text(
        'image,policy,category,description\n0.png,icm_sexy,upper_normal,"line1\nline2"\n'
        "1.png,icm_sexy,upper_normal,\n"
    )
    parsed = read_manifest(good, {"icm_sexy": POLICY}, default_policy=None)
    assert [(r.line, r.description) for r in parsed] == [(2, "line1\nline2"), (4, None)]


# ----------------------------------------------------------------------- names
def test_an_overlong_image_name_is_a_manifest_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    images(folder, 1)
    long_name = "x" * 300 + ".png"  # over the 255 bytes a file name may have
    rows = [
        {"image": "0.png", "policy": "icm_sexy", "category": "upper_normal"},
        {"image": long_name, "policy": "icm_sexy", "category": "upper_normal"},
    ]
    manifest = write_jsonl(folder / "m.jsonl", rows)
    db = tmp_path / "icm.duckdb"
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        stopped = generate(manifest, db, server.base_url)
        skipped = generate(manifest, db, server.base_url, "--skip-bad-rows")
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert f"{manifest}:2: image '{long_name}': unusable file name (File name too long)" in (
        one_line(stopped.stderr)
    )
    assert skipped.returncode == 0, skipped.stderr
    with Store.open(db, read_only=True) as store:
        rows = store.rows("SELECT status, reasons_json FROM samples ORDER BY status")
    assert [r["status"] for r in rows] == ["accepted", "failed"]
    assert "unusable file name" in rows[1]["reasons_json"]


def test_user_strings_print_as_written(tmp_path: Path) -> None:
    """A run name and a missing image with rich markup and an emoji code: printed literally,
    no MarkupError, no emoji."""
    folder = tmp_path / "in"
    images(folder, 1)
    rows = [
        {"image": "0.png", "policy": "icm_sexy", "category": "upper_normal"},
        {"image": "x[/bold]:x:.jpg", "policy": "icm_sexy", "category": "upper_normal"},
    ]
    manifest = write_jsonl(folder / "m.jsonl", rows)
    db = tmp_path / "icm.duckdb"
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        stopped = generate(manifest, db, server.base_url, "--run", "r[/x]")
        ran = generate(manifest, db, server.base_url, "--run", "r[/x]", "--skip-bad-rows")
    assert stopped.returncode == 2, stopped.stderr
    assert "image 'x[/bold]:x:.jpg': image not found" in one_line(stopped.stderr)
    assert ran.returncode == 0, ran.stderr
    out = one_line(ran.stderr)
    assert "run r[/x]:" in out and "icm samples r[/x] --db" in out
    assert "image 'x[/bold]:x:.jpg': image not found" in out
    assert "❌" not in ran.stderr and "MarkupError" not in ran.stderr


# ----------------------------------------------------------------------- YAML alias bombs
BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
)


def test_a_billion_laughs_policy_is_refused_at_its_line(tmp_path: Path) -> None:
    policy = tmp_path / "bomb.yaml"
    policy.write_text("name: bomb\n" + BILLION_LAUGHS + "\n")
    started = time.perf_counter()
    with pytest.raises(PolicyError) as info:
        load_policy(str(policy))
    assert time.perf_counter() - started < 5  # refused, not expanded (9**9 strings)
    assert f"{policy}:3" in str(info.value)
    assert "YAML aliases ('*name') are not supported" in str(info.value)


def test_a_manifest_policy_field_cannot_point_a_run_at_a_bomb(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    images(folder, 1)
    bomb = folder / "bomb.yaml"
    shipped = (REPO / "data" / "policies" / "icm_sexy.yaml").read_text()
    # appended to a valid policy: only the aliases are wrong with it
    bomb.write_text(shipped + "\n" + BILLION_LAUGHS.replace("a: &a", "x_synonyms: &a") + "\n")
    manifest = write_jsonl(folder / "m.jsonl", [{"image": "0.png", "policy": str(bomb)}])
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        result = generate(manifest, tmp_path / "icm.duckdb", server.base_url)
        assert server.chat_requests() == []
    assert result.returncode == 2, result.stderr[-2000:]
    assert "YAML aliases ('*name') are not supported" in one_line(result.stderr)
    line = len(shipped.splitlines()) + 3  # the first alias: the line after the anchor
    assert f"{bomb}:{line}" in one_line(result.stderr)


def test_a_run_config_with_aliases_is_refused(tmp_path: Path) -> None:
    from graphs.config import load_config

    config = tmp_path / "run.yaml"
    config.write_text("concurrency: &n 4\nmax_rules: *n\n")
    with pytest.raises(ValueError, match=rf"{config}:2: YAML aliases"):
        load_config(config, {})
