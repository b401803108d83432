"""The packages form layers that only point down (see ARCHITECTURE.md).

Every import between the top-level packages, at module level or inside a function, is read from
the source with ``ast`` and checked against the allowed directions written below; the package
graph must have no cycle. A new import that points up fails here with the file and line.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> the packages it may import (besides itself). Bottom to top.
ALLOWED: dict[str, set[str]] = {
    "prompts": set(),
    "data": {"prompts"},
    "evaluators": {"data", "prompts"},
    "agents": {"evaluators", "data", "prompts"},
    "finetune": {"agents", "evaluators", "data", "prompts"},
    "graphs": {"finetune", "agents", "evaluators", "data", "prompts"},
}
PACKAGES = tuple(ALLOWED)


def _imports() -> list[tuple[str, str, str]]:
    """(importing package, imported package, "file:line") for every cross-package import."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue  # relative imports stay inside their package
                for name in names:
                    target = name.split(".")[0]
                    if target in ALLOWED and target != package:
                        where = f"{path.relative_to(ROOT)}:{node.lineno}"
                        found.append((package, target, where))
    return found


IMPORTS = _imports()


def test_the_scan_sees_the_known_imports() -> None:
    """The scan itself works: the runner's imports of the model layer and the store are seen."""
    edges = {(a, b) for a, b, _ in IMPORTS}
    assert {("graphs", "agents"), ("graphs", "data"), ("agents", "data")} <= edges


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package: str) -> None:
    upward = [
        f"{where}: {source} imports {target}"
        for source, target, where in IMPORTS
        if source == package and target not in ALLOWED[package]
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target, _ in IMPORTS:
        graph[source].add(target)
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for package in PACKAGES:
        if package not in state:
            visit(package, [package])
    assert not cycles, "package cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_allowed_directions_form_layers() -> None:
    """The allowed list itself is acyclic: each package may import only those listed before."""
    for n, package in enumerate(PACKAGES):
        assert ALLOWED[package] <= set(PACKAGES[:n]), package


def test_every_icm_command_module_lives_in_graphs_commands() -> None:
    """A newcomer finds every sub-command under ``graphs/commands`` (plus ``generate``, the
    researcher's script, in ``graphs/generate.py``): no ``*_cli.py`` hides in another layer."""
    strays = [
        str(p.relative_to(ROOT))
        for package in PACKAGES
        for p in (ROOT / package).rglob("*cli*.py")
        if p.relative_to(ROOT).as_posix() != "graphs/cli.py"
    ]
    assert not strays
    cli = (ROOT / "graphs" / "cli.py").read_text()
    tree = ast.parse(cli)
    sources = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphs")
    }
    assert sources <= {"graphs.generate"} | {
        f"graphs.commands.{p.stem}" for p in (ROOT / "graphs" / "commands").glob("*.py")
    }, sources


def _function_level_imports() -> list[tuple[Path, int]]:
    """(file, line) of each import of a project module inside a function body."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(func):
                    if isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names = [node.module]
                    else:
                        continue
                    if any(name.split(".")[0] in ALLOWED for name in names):
                        found.append((path, node.lineno))
    return sorted(set(found))


def _explained(lines: list[str], lineno: int) -> bool:
    """A comment on the import, on another import of its group, or on the line above it."""
    n = lineno - 1
    while n >= 0:
        text = lines[n].strip()
        if "#" in text:
            return True
        if not text.startswith(("import ", "from ")) and text != "":
            return False
        n -= 1
    return False


def test_function_level_imports_say_why() -> None:
    """Imports inside functions exist only to keep `icm --help` fast (or for an optional
    extra), never to dodge a cycle; each one carries a comment that says so."""
    imports = _function_level_imports()
    assert imports, "the scan found no function-level import at all"
    bare = []
    for path, lineno in imports:
        lines = path.read_text().splitlines()
        if not _explained(lines, lineno):
            bare.append(f"{path.relative_to(ROOT)}:{lineno}: {lines[lineno - 1].strip()}")
    assert not bare, "function-level imports without a reason:\n" + "\n".join(bare)
