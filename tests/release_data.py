"""Where the tests find the paper's released text material: ONE setting, ``ICM_RELEASE_DATA``.

The ICM-Assistant release (``instruct_dev.jsonl``, ``meq_dev.jsonl``, ``rule_definition.csv``;
research use only, so never shipped in this package) is read by the audit, policy, calibration
and text-check tests. They all take its folder from here:

- ``ICM_RELEASE_DATA=/path/to/icm_assistant`` (a relative path is taken from the current
  directory), else
- ``../shared/datasets/icm_assistant`` beside the repository (the shared copy).

A test whose file is absent skips and says where it looked and which setting to change. When
the setting is given explicitly, an absent file is an error before any test runs
(``conftest.py``): someone who pointed the tests at the data wants them run, not skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

SETTING = "ICM_RELEASE_DATA"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "datasets" / "icm_assistant"
FILES = ("instruct_dev.jsonl", "meq_dev.jsonl", "rule_definition.csv")


def release_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder the setting names, or the shared copy beside the repository."""
    raw = (os.environ if environ is None else environ).get(SETTING, "").strip()
    return Path(raw).expanduser().resolve() if raw else DEFAULT_DIR


def setting_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """One line when ``ICM_RELEASE_DATA`` is set but its folder lacks a file; else None."""
    env = os.environ if environ is None else environ
    if not env.get(SETTING, "").strip():
        return None
    folder = release_dir(env)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if not missing:
        return None
    return f"{SETTING}={env[SETTING]}: {folder} has no {', '.join(missing)}"


RELEASE_DIR = release_dir()


def release_file(name: str) -> Path:
    """The path of one released file (it may be absent: see :func:`absent_reason`)."""
    return RELEASE_DIR / name


def absent_reason(name: str) -> str | None:
    """Why a test of ``name`` cannot run (the path looked at, the setting), or None."""
    path = release_file(name)
    if path.is_file():
        return None
    return (
        f"the paper's released {name} is not at {path}: set {SETTING} to the folder that "
        "holds it (docs/testing.md, 'The paper's released data')"
    )


def require(name: str) -> Path:
    """The released file's path, or skip the calling test saying why."""
    reason = absent_reason(name)
    if reason:
        pytest.skip(reason)
    return release_file(name)


def needs(name: str) -> pytest.MarkDecorator:
    """A mark that skips a test when ``name`` is absent, with the reason."""
    reason = absent_reason(name)
    return pytest.mark.skipif(reason is not None, reason=reason or "")
