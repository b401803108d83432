"""All SQL lives in ``data/store``: no other module spells a query.

Every string literal (f-strings included) of every non-test module outside ``data/store`` is
searched for the SQL keywords that read or write rows; a hit names the file and line. Docstrings
and comments are prose and may say "insert".
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "graphs", "data", "evaluators", "finetune", "prompts", "benchmarks")
STORE = ROOT / "data" / "store"
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            ids.add(id(node.value))  # attribute docstrings ("""...""" after an assignment)
    return ids


def sql_strings(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: text`` of each string literal in ``path`` that holds a SQL keyword."""
    tree = ast.parse(path.read_text(), filename=str(path))
    prose = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) not in prose and SQL.search(node.value):
            hits.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.strip()[:60]}")
    return hits


def test_no_sql_outside_the_store() -> None:
    hits = [
        hit
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if STORE not in path.parents
        for hit in sql_strings(path)
    ]
    assert not hits, "SQL outside data/store (add a function there instead):\n" + "\n".join(hits)


def test_the_scan_finds_sql(tmp_path: Path) -> None:
    """The check would catch a query: plain, f-string and concatenated forms."""
    source = tmp_path / "probe.py"
    source.write_text(
        '"""Docstrings may say SELECT."""\n'
        'A = "SELECT * FROM runs"\n'
        'B = f"UPDATE runs SET x = {1}"\n'
        'C = ("DELETE FROM " "samples")\n'
        "D = 'nothing here'\n"
    )
    hits = sql_strings(source, tmp_path)
    assert sorted(h.split(":")[1] for h in hits) == ["2", "3", "4"], hits
