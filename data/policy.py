"""Moderation policies as data: find, load and check policy YAML files.

A bare name such as `icm_sexy` means a policy shipped in `data/policies/`; anything that looks
like a path (has a slash or a .yaml/.yml suffix) is read from disk. Loading either returns a
fully checked `Policy` or raises one `PolicyError` listing every issue as `file:line: field:
message`, so a researcher fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from data.policy_build import build_policy
from data.policy_models import (
    Attribute,
    Audience,
    Category,
    Policy,
    PolicyError,
    PolicyIssue,
    ProductRow,
    RuleVariant,
    Ruling,
    Verdict,
)
from data.yaml_lines import YamlSyntaxError, load_located

__all__ = [
    "POLICY_DIR",
    "Attribute",
    "Audience",
    "Category",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "ProductRow",
    "RuleVariant",
    "Ruling",
    "Verdict",
    "check_policy",
    "list_policies",
    "load_policy",
    "parse_policy",
    "resolve_policy_path",
]

POLICY_DIR = Path(__file__).resolve().parent / "policies"
"""Where the shipped policies live; their file stems are the names `load_policy` accepts."""


def list_policies() -> list[str]:
    """Names of the shipped policies, sorted."""
    return sorted(path.stem for path in POLICY_DIR.glob("*.yaml"))


def resolve_policy_path(name_or_path: str | Path) -> Path:
    """`icm_sexy` -> `data/policies/icm_sexy.yaml`; a path is returned as given."""
    if isinstance(name_or_path, Path) or _looks_like_path(name_or_path):
        return Path(name_or_path)
    return POLICY_DIR / f"{name_or_path}.yaml"


def load_policy(name_or_path: str | Path) -> Policy:
    """Load and check a policy; raise `PolicyError` with every issue found."""
    policy, issues = _load(name_or_path)
    if policy is None:
        raise PolicyError(issues)
    return policy


def check_policy(name_or_path: str | Path) -> list[PolicyIssue]:
    """Every issue in a policy file; an empty list means it loads."""
    return _load(name_or_path)[1]


def parse_policy(text: str, *, name: str, file: str = "<text>") -> Policy:
    """Check a policy held in memory (e.g. a copy recorded with a run) and return it."""
    policy, issues = _build(text.encode("utf-8"), name, file, None)
    if policy is None:
        raise PolicyError(issues)
    return policy


def _load(name_or_path: str | Path) -> tuple[Policy | None, list[PolicyIssue]]:
    path = resolve_policy_path(name_or_path)
    file = _display(path, name_or_path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if isinstance(name_or_path, str) and not _looks_like_path(name_or_path):
            known = ", ".join(list_policies()) or "none"
            message = f"no shipped policy named '{name_or_path}' (shipped: {known})"
        else:
            message = "no such file"
        return None, [PolicyIssue(file=file, line=None, field="(file)", message=message)]
    except OSError as exc:
        return None, [PolicyIssue(file=file, line=None, field="(file)", message=str(exc))]
    policy, issues = _build(raw, path.stem, file, path.resolve())
    return policy, list(issues)


@lru_cache(maxsize=64)
def _build(
    raw: bytes, name: str, file: str, path: Path | None
) -> tuple[Policy | None, tuple[PolicyIssue, ...]]:
    """Parse and check file bytes; cached on the bytes, so an edited file is re-checked."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, (PolicyIssue(file=file, line=line, field="(file)", message="not UTF-8"),)
    try:
        doc = load_located(text)
    except YamlSyntaxError as exc:
        issue = PolicyIssue(file=file, line=exc.line, field="(yaml)", message=exc.message)
        return None, (issue,)
    sha256 = hashlib.sha256(raw).hexdigest()
    policy, issues = build_policy(doc, file=file, name=name, path=path, sha256=sha256)
    return policy, tuple(issues)


def _looks_like_path(value: str) -> bool:
    return "/" in value or os.sep in value or value.endswith((".yaml", ".yml"))


def _display(path: Path, given: str | Path) -> str:
    """The path as the user typed it; shipped policies relative to the working directory."""
    if isinstance(given, Path) or _looks_like_path(str(given)):
        return str(given)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
