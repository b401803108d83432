"""What one sample is, and what a manifest's repeated rows become.

A sample is one image (its bytes, not its name) under one policy: the generation run's sample id
is derived from exactly that (``graphs.runner.sample_id_for``), so two rows naming the same
image under the same policy would write the same rows twice. Real manifests repeat rows, so
every row is sorted here, before any sample is registered:

* rows identical in what they ask and record (category, note, description, source, split) are ONE
  sample: the first row is kept, the others are named in a note, nothing is generated twice;
* rows that give the same image different annotations (category, or source/split, which an
  export copies: one image in both ``train`` and ``test`` would leak) contradict each other:
  an input error naming every line involved (with ``--skip-bad-rows`` the sample is recorded as
  failed with that reason, and its other rows are dropped);
* rows that differ in what they ASK, a text-only row's ``description``, are distinct samples:
  each gets a ``variant`` that enters its sample id (only then, so a manifest without such rows
  keeps the ids it always had).

An image that has no file (missing, or text-only rows) is identified by its name instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data.manifest import ManifestRow, RowProblem

#: the fields a row records about its sample, which repeated rows must agree on
RECORDED = ("category", "note", "source", "split")


@dataclass
class DistinctRows:
    """A manifest's rows with repeats folded: one row per sample, in manifest order."""

    rows: list[ManifestRow] = field(default_factory=list)
    sha256: dict[int, str | None] = field(default_factory=dict)
    """The image file's SHA-256 by the kept row's line (None: no file)."""
    variants: dict[int, str] = field(default_factory=dict)
    """By line, what sets apart samples of one image that ask differently (else absent)."""
    notes: list[str] = field(default_factory=list)
    """Repeated rows that were folded into one sample, each naming its lines."""
    conflicts: list[RowProblem] = field(default_factory=list)
    """Rows that contradict each other: each problem is on the kept row, naming all lines."""

    def variant(self, row: ManifestRow) -> str:
        return self.variants.get(row.line, "")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lines(rows: Sequence[ManifestRow]) -> str:
    numbers = [str(r.line) for r in rows]
    return ", ".join(numbers[:-1]) + f" and {numbers[-1]}" if len(numbers) > 1 else numbers[0]


def _differences(rows: Sequence[ManifestRow]) -> str:
    said = []
    for name in RECORDED:
        values = [getattr(r, name) for r in rows]
        if len(set(values)) > 1:
            listed = ", ".join(f"line {r.line}: {v!r}" for r, v in zip(rows, values, strict=True))
            said.append(f"{name} ({listed})")
    return "; ".join(said)


def distinct_rows(
    manifest: Path,
    rows: Sequence[ManifestRow],
    sha_of: Callable[[Path], str] = file_sha256,
    unusable: set[int] | frozenset[int] = frozenset(),
) -> DistinctRows:
    """Fold ``rows`` into one row per sample (see the module's docstring).

    ``unusable``: lines whose image cannot be read (:func:`data.manifest.image_problems`); they
    are identified by name and never hashed.
    """
    out = DistinctRows()
    shas = {
        r.line: (sha_of(r.image_path) if r.image_path and r.line not in unusable else None)
        for r in rows
    }
    groups: dict[tuple[str, str], list[ManifestRow]] = {}
    for row in rows:
        sha = shas[row.line]
        groups.setdefault((row.policy, sha or f"name:{row.image}"), []).append(row)
    kept: set[int] = set()
    for (policy, _), group in groups.items():
        asks: dict[str | None, list[ManifestRow]] = {}
        for row in group:
            asks.setdefault(row.description, []).append(row)
        for description, same in asks.items():
            first = same[0]
            kept.add(first.line)
            if len(asks) > 1:
                text = description or ""
                out.variants[first.line] = hashlib.sha256(text.encode()).hexdigest()[:16]
            if len(same) == 1:
                continue
            differences = _differences(same)
            if differences:
                message = (
                    f"{manifest}:{first.line}: lines {_lines(same)} give the same image "
                    f"'{first.image}' (policy '{policy}') different annotations: {differences}"
                )
                out.conflicts.append(RowProblem(first.line, first.image, message, message))
            else:
                out.notes.append(
                    f"{manifest}: lines {_lines(same)} are the same sample (image "
                    f"'{first.image}', policy '{policy}'): generated once"
                )
    out.rows = [r for r in rows if r.line in kept]
    out.sha256 = {r.line: shas[r.line] for r in out.rows}
    return out
