"""Reading a manifest (CSV or JSONL) into samples, with errors that name file and line.

A manifest row names an image and, optionally, its policy, its category (the short annotation,
an attribute product of the policy), a ``note`` (one or two sentences a person who saw the image
wrote about what it shows: the grounding a describer that cannot see the image writes from), a
source and a split. Rows that carry a ``description``
(or an ``explanation``, as the released ICM-Instruct records do) run in text-only mode.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data.images import ImageLoadError, load_image
from data.policy_models import Policy

#: a note is a short caption, not a description: longer text belongs in ``description``
MAX_NOTE_CHARS = 400


class ManifestError(ValueError):
    """A manifest that cannot be used; the message lists every bad line."""


@dataclass(frozen=True)
class ManifestRow:
    line: int
    image: str
    image_path: Path | None
    """Resolved path, or None when the file does not exist (text-only rows need none)."""
    policy: str
    category: str | None
    source: str | None
    split: str | None
    description: str | None
    path_error: str | None = None
    """Why the image's name cannot be used as a path (too long, ...): the row's problem."""
    note: str | None = None
    """What a person who saw the image noted it shows; a blind describer's source of sight."""


def _records(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return _csv_records(text)
    records, errors = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{path}:{n}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            errors.append(f"{path}:{n}: expected a JSON object")
            continue
        records.append((n, value))
    if errors:
        raise ManifestError("\n".join(errors))
    return records


def _csv_records(text: str) -> list[tuple[int, dict]]:
    """CSV records with the PHYSICAL line each starts on.

    Read from the text as a stream (``newline=""``), not line by line: a quoted field may hold
    newlines, which belong to the value, and a record then spans several lines, so counting
    records would misname every line after it.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return []
    records = []
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        if not values:  # a blank line
            continue
        # a short record leaves its last fields out (None), as csv.DictReader does
        row: dict[str, str | None] = dict(zip(header, values, strict=False))
        row.update(dict.fromkeys(header[len(values) :]))
        records.append((start, row))
    return records


def read_manifest(
    path: Path,
    policies: dict[str, Policy],
    *,
    default_policy: str | None,
    images_dir: Path | None = None,
) -> list[ManifestRow]:
    """Validate every row; raise one :class:`ManifestError` listing all bad lines.

    Only rows of policies in ``policies`` are returned (a ``--policy`` filter). A missing image
    file is not an error here: the row is returned with ``image_path=None``, and
    :func:`image_problems` reports it (with unreadable files) before any model loads.
    """
    base = images_dir or path.parent
    rows, errors = [], []
    for line, record in _records(path):
        image = str(record.get("image") or "").strip()
        policy = str(record.get("policy") or default_policy or "").strip()
        category = (record.get("category") or "").strip() or None
        description = record.get("description") or record.get("explanation")
        note = record.get("note")
        if not image:
            errors.append(f"{path}:{line}: field 'image' is missing")
            continue
        if not policy:
            errors.append(f"{path}:{line}: field 'policy' is missing (or pass --policy)")
            continue
        if default_policy and policy != default_policy:
            continue
        if policy not in policies:
            errors.append(
                f"{path}:{line}: field 'policy': unknown policy '{policy}'"
                f"{_did_you_mean(policy, list(policies))} (policies: {', '.join(policies)})"
            )
            continue
        if category is not None and category not in policies[policy].categories:
            known = list(policies[policy].categories)
            errors.append(
                f"{path}:{line}: field 'category': '{category}' is not a category of "
                f"policy '{policy}'{_did_you_mean(category, known)} (its categories: "
                f"{', '.join(known)})"
            )
            continue
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
            errors.append(
                f"{path}:{line}: field 'note': expected text of at most {MAX_NOTE_CHARS} "
                "characters (what a person who saw the image noted it shows)"
            )
            continue
        image_path, path_error = _image_path(image, base)
        rows.append(
            ManifestRow(
                line=line,
                image=image,
                image_path=image_path,
                path_error=path_error,
                policy=policy,
                category=category,
                source=record.get("source"),
                split=record.get("split"),
                description=str(description) if description else None,
                note=" ".join(note.split()) or None if note else None,
            )
        )
    if errors:
        raise ManifestError("\n".join(errors))
    return rows


def _image_path(image: str, base: Path) -> tuple[Path | None, str | None]:
    """The image's resolved path (None when no such file) and why the name is unusable.

    A name the file system refuses (over 255 bytes, a NUL byte...) is a problem of this row,
    reported with its line like a missing file, never an exception that ends the run.
    """
    try:
        candidate = Path(image) if Path(image).is_absolute() else base / image
        return (candidate.resolve() if candidate.is_file() else None), None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, f"unusable file name ({reason})"


def _did_you_mean(given: str, known: list[str]) -> str:
    """``; did you mean 'x'?`` for a near miss (a typo), else nothing."""
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.75)
    return f"; did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True)
class RowProblem:
    """A manifest row that cannot be used, with the line and the reason in ``message``."""

    line: int
    image: str
    reason: str
    message: str


def image_problems(manifest: Path, rows: Sequence[ManifestRow]) -> list[RowProblem]:
    """Rows whose image is missing or does not decode, each naming the manifest line.

    Run before any model loads, so a typo in a path stops the run in a second, not after the
    models have loaded. Text-only rows (with a description) need no image and are not checked.
    Every image is decoded once with the project's loader (:func:`data.images.load_image`), so
    the reason is the loader's own (missing, empty, not an image, truncated, too large...).
    """
    problems = []
    for row in rows:
        if row.description is not None:
            continue
        if row.path_error is not None:
            reason = row.path_error
        elif row.image_path is None:
            reason = "image not found"
        else:
            try:
                load_image(row.image_path)
                continue
            except ImageLoadError as exc:
                reason = exc.reason
        message = f"{manifest}:{row.line}: image '{row.image}': {reason}"
        problems.append(RowProblem(row.line, row.image, reason, message))
    return problems


def manifest_policies(path: Path, default_policy: str | None) -> set[str]:
    """Policy names a manifest uses (to load them before validating rows)."""
    if default_policy:
        return {default_policy}
    return {str(r.get("policy")) for _, r in _records(path) if r.get("policy")}
