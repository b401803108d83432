"""Where a run's numbers came from: the code's git revision, package versions, model bindings.

Every command that writes a ``runs`` row records these (generation, judging, fine-tuning), and
every reader that shows a run prints its binding the same way, so they live in the bottom layer
where all of them can import it.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GENERATION_PACKAGES = ("langgraph", "langchain-core", "langchain-openai", "langchain-anthropic",
                       "openai", "anthropic", "aiohttp", "transformers", "torch", "duckdb",
                       "pydantic", "xgrammar")  # fmt: skip
"""The packages whose versions shape a generation or judging run's output."""


def git_revision() -> str | None:
    """The commit the running code was checked out at, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions(names: Sequence[str] = GENERATION_PACKAGES) -> dict[str, str | None]:
    """Python's version and each named distribution's (None where it is not installed)."""
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def compact_roles(bindings: Any) -> str:
    """``describer,explainer=openai:gpt-4o critic=anthropic:...``: roles that share a model
    are grouped so a run's binding fits one table cell."""
    if not isinstance(bindings, dict) or not bindings:
        return "" if not bindings else str(bindings)
    grouped: dict[str, list[str]] = {}
    for role, spec in bindings.items():
        if isinstance(spec, dict):
            spec = spec.get("spec") or spec.get("model") or json.dumps(spec, sort_keys=True)
        grouped.setdefault(str(spec), []).append(str(role))
    return " ".join(f"{','.join(roles)}={spec}" for spec, roles in grouped.items())
