"""The tests that read the paper's release find it through one setting (tests/release_data.py).

On a checkout that has the data (at ``ICM_RELEASE_DATA``, or the shared copy beside the
repository) the setting must resolve to it, so none of those tests skips; an explicit setting
that names a folder without the files stops pytest with one line instead of skipping quietly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from release_data import (
    DEFAULT_DIR,
    FILES,
    RELEASE_DIR,
    REPO,
    SETTING,
    absent_reason,
    release_dir,
    setting_problem,
)


def _holds_release(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def test_the_setting_resolves_to_the_data_wherever_it_exists() -> None:
    """Where the data is (the setting's folder or the shared copy), the tests read it."""
    if not (_holds_release(RELEASE_DIR) or _holds_release(DEFAULT_DIR)):
        pytest.skip(
            f"no release data on this machine ({SETTING} unset, {DEFAULT_DIR} absent): "
            "nothing to resolve"
        )
    assert _holds_release(RELEASE_DIR), f"{SETTING} resolves to {RELEASE_DIR}, which lacks it"
    for name in FILES:
        assert absent_reason(name) is None


def test_the_setting_and_its_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert release_dir({}) == DEFAULT_DIR == REPO.parent / "shared/datasets/icm_assistant"
    assert release_dir({SETTING: str(tmp_path)}) == tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    assert release_dir({SETTING: "data/rel"}) == tmp_path.resolve() / "data" / "rel"
    assert release_dir({SETTING: "  "}) == DEFAULT_DIR  # blank is unset


def test_an_explicit_setting_without_the_files_is_a_one_line_problem(tmp_path: Path) -> None:
    (tmp_path / "meq_dev.jsonl").write_text("{}\n")
    problem = setting_problem({SETTING: str(tmp_path)})
    assert problem == (
        f"{SETTING}={tmp_path}: {tmp_path} has no instruct_dev.jsonl, rule_definition.csv"
    )
    assert setting_problem({}) is None  # unset: the default's absence only skips
    for name in FILES:
        (tmp_path / name).write_text("x\n")
    assert setting_problem({SETTING: str(tmp_path)}) is None


def test_pytest_refuses_a_setting_that_names_no_data(tmp_path: Path) -> None:
    """The whole run stops before collecting anything, naming the setting and the files."""
    env = {"PATH": "/usr/bin:/bin", SETTING: str(tmp_path / "nowhere")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(REPO / "tests" / "test_release_data.py"), "--co"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"{SETTING}={tmp_path / 'nowhere'}" in done.stderr + done.stdout
    assert "instruct_dev.jsonl" in done.stderr + done.stdout
