"""The dataset card an export writes: README.md in the Hugging Face dataset-card format, loaded
back with ``huggingface_hub``'s ``DatasetCard``; it holds the role binding, the counts, the
coverage table and the command that reproduces the set."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner
from viewer_data import generated_db

from data.store import Store
from graphs.cli import app

hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub comes with datasets")
RUNNER = CliRunner()


def export(*args: str) -> str:
    gen = generated_db()
    result = RUNNER.invoke(app, ["export", gen.run_id, "--db", str(gen.db), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_an_hf_export_writes_a_card_that_loads_and_says_how_the_set_was_made(
    tmp_path: Path,
) -> None:
    gen = generated_db()
    out = tmp_path / "set.hf"
    printed = export("--format", "hf", "--out", str(out))
    assert f"also wrote {out / 'README.md'} (dataset card)" in printed
    card = hub.DatasetCard.load(out / "README.md")
    assert card.data.license == "other" and "content-moderation" in card.data.tags
    assert card.data.size_categories == ["n<1K"]
    text = card.text
    with Store.open(gen.db, read_only=True) as store:
        run = store.rows("SELECT command, git_revision FROM runs WHERE run_id = ?",
                         [gen.run_id])[0]  # fmt: skip
    # role -> model binding, counts by status and rejection reason, reproduce command
    assert "| explainer | openai-compatible:http://127.0.0.1:" in text
    assert "| accepted | 4 |" in text and "| rejected | 1 |" in text
    assert "| icm_sexy | explainer | verdict_matches_rule | 1 |" in text
    assert run["command"] in text and f"revision: `{run['git_revision']}`" in text
    assert "| R1 | under 13 | conservative |" in text  # the rule variants' audiences
    assert "| explainer | verdict_matches_rule | deterministic |" in text  # checks that ran
    assert "explainer.user" in text  # prompt hashes
    assert "policy icm_sexy: 8 accepted records" in text  # the coverage table
    # the card does not disturb the dataset: it still loads, and a re-export replaces both
    datasets = pytest.importorskip("datasets")
    assert datasets.load_from_disk(str(out)).num_rows == 8
    export("--format", "hf", "--out", str(out))
    assert (out / "README.md").is_file() and datasets.load_from_disk(str(out)).num_rows == 8


def test_other_formats_write_a_card_on_request_only(tmp_path: Path) -> None:
    plain = tmp_path / "a.llava.json"
    export("--format", "llava", "--out", str(plain))
    assert not (tmp_path / "a.llava.json.README.md").exists()
    carded = tmp_path / "b.sharegpt.json"
    export("--format", "sharegpt", "--out", str(carded), "--card")
    card = hub.DatasetCard.load(tmp_path / "b.sharegpt.json.README.md")
    assert "`sharegpt` format" in card.text
    bare = tmp_path / "c.hf"
    export("--format", "hf", "--out", str(bare), "--no-card")
    assert not (bare / "README.md").exists()


def test_image_sources_and_licences_come_from_the_manifest(tmp_path: Path) -> None:
    """The generated run's manifest has no licences: the card lists the images and says the
    licences are not given, rather than inventing any."""
    out = tmp_path / "set.hf"
    export("--format", "hf", "--out", str(out))
    text = (out / "README.md").read_text()
    section = text.split("## Image sources and licences", 1)[1].split("##", 1)[0]
    assert "| image | source | licence |" in section
    assert "| 0.png | - | - |" in section
