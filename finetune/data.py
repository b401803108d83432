"""Training examples from store runs or exported files; the image-level split; mixed SFT.

Sources:

- runs in the store: :func:`data.export.collect_records` (accepted samples only unless
  ``include_all``), one example per (sample, rule variant): the rule's question and explanation,
  then its Q-A pairs, exactly the conversations ``icm export`` writes;
- files: LLaVA (``{"id", "image", "conversations": [{"from", "value"}]}``) or ShareGPT
  (``{"messages": [{"role", "content"}], "images": [...]}``, LLaMA-Factory's layout), as a JSON
  array or JSONL. An error names the file and the line where the bad record starts.

The split is by image: every example of one image (all its rule variants) lands in the same
split, so validation never sees an image the model trained on. Assignment hashes the image's
identity with the seed, so it is stable when the data grows (an image never moves split because
another was added). A sample whose manifest row set ``split`` keeps it (``val``/``test``; test
images are left out of training and validation alike).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.export import ExportError, collect_records
from data.images import image_sha256
from data.store import Store, queries
from finetune.collate import Example
from finetune.config import DataArguments

IMAGE_TOKEN = "<image>"
LATEST = "latest"
"""``data.runs: [latest]`` means the newest generation run in the store."""
_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "system": "system"}  # fmt: skip
_EXPLICIT_SPLIT = {"val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test",
                   "train": "train"}  # fmt: skip


class DataFileError(ValueError):
    """A training file or run cannot be read as conversations; names file and line."""


@dataclass
class DataBundle:
    train: list[Example]
    val: list[Example]
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- store runs
def examples_from_store(
    db: str | Path, runs: list[str], *, include_all: bool = False
) -> tuple[list[Example], dict[str, Any]]:
    """Examples of ``runs`` (ids or names) and what was skipped, by reason."""
    path = Path(db)
    if not path.exists():
        raise DataFileError(f"no database at {path}: run `icm generate` first or set data.db")
    examples: list[Example] = []
    report: dict[str, Any] = {"runs": {}}
    with Store.open(path, read_only=True) as store:
        for run in runs:
            if run == LATEST:
                newest = queries.latest_run_id(store, "generate")
                if newest is None:
                    raise DataFileError(f"{path} has no generation run (data.runs: [latest])")
                run = newest
            try:
                selection = collect_records(store, run, include_all=include_all)
            except ExportError as exc:
                raise DataFileError(str(exc)) from exc
            missing = 0
            for record in selection.records:
                image = Path(record.image_path)
                if not image.is_file():
                    missing += 1
                    continue
                turns = [(_ROLE[s], t) for s, t in record.turns()]
                examples.append(
                    Example(
                        id=f"{record.run_id}:{record.record_id}",
                        image=str(image),
                        turns=tuple(turns),
                        source=f"run:{selection.run['name']}",
                        group=record.image_sha256 or str(image.resolve()),
                        meta={
                            "policy": record.policy,
                            "rule": record.rule,
                            "category": record.category,
                            "expected_verdict": record.expected_verdict,
                            "split": record.split,
                            "sample_id": record.sample_id,
                            "run_id": record.run_id,
                        },
                    )
                )
            report["runs"][selection.run["name"]] = {
                "run_id": selection.run["run_id"],
                "records": len(selection.records) - missing,
                "status_counts": selection.status_counts,
                "skipped": {
                    **dict(selection.skipped),
                    **({"image file missing": missing} if missing else {}),
                },
            }
    return examples, report


# --------------------------------------------------------------------------- files
def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, record) of a JSON array or a JSONL file, the line where each record starts."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not UTF-8 text") from exc
    stripped = text.lstrip()
    if not stripped:
        raise DataFileError(f"{path}:1: the file is empty")
    decoder = json.JSONDecoder()
    if stripped.startswith("["):
        pos = text.index("[") + 1
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text):
                raise DataFileError(
                    f"{path}:{text.count(chr(10)) + 1}: the JSON array is not closed"
                )
            if text[pos] == "]":
                return
            line = text.count("\n", 0, pos) + 1
            try:
                record, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
            yield line, record
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc


def examples_from_file(
    path: str | Path, *, image_root: str | Path | None = None, source: str | None = None
) -> list[Example]:
    """Every conversation in a LLaVA or ShareGPT file (JSON array or JSONL)."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    out: list[Example] = []
    for line, record in _records(path):
        where = f"{path}:{line}"
        if not isinstance(record, dict):
            raise DataFileError(f"{where}: a record must be a JSON object")
        turns, images = _turns(record, where)
        if len(images) > 1:
            raise DataFileError(f"{where}: {len(images)} images; one image per record is supported")
        image = None
        if images:
            if not isinstance(images[0], str) or not images[0]:
                raise DataFileError(f"{where}: the image must be a path string")
            candidate = Path(images[0])
            resolved = candidate if candidate.is_absolute() else root / candidate
            if not resolved.is_file():
                raise DataFileError(f"{where}: image {images[0]} not found (looked at {resolved})")
            image = str(resolved)
        marks = sum(text.count(IMAGE_TOKEN) for _, text in turns)
        if marks != len(images):
            raise DataFileError(
                f"{where}: {marks} {IMAGE_TOKEN} marks in the conversation for {len(images)} images"
            )
        if image is not None and IMAGE_TOKEN not in turns[_first_user(turns)][1]:
            raise DataFileError(f"{where}: the {IMAGE_TOKEN} mark must be in the first user turn")
        turns = [(role, _strip_image_mark(text)) for role, text in turns]
        record_id = str(record.get("id") or f"{path.name}:{line}")
        out.append(
            Example(
                id=record_id,
                image=image,
                turns=tuple(turns),
                source=source or f"file:{path.name}",
                group=_file_group(image, record_id),
                meta={k: record[k] for k in ("policy", "rule", "category", "split") if k in record},
            )
        )
    return out


def _turns(record: dict[str, Any], where: str) -> tuple[list[tuple[str, str]], list[Any]]:
    if "conversations" in record:
        raw, role_key, text_key = record["conversations"], "from", "value"
    elif "messages" in record:
        raw, role_key, text_key = record["messages"], "role", "content"
    else:
        raise DataFileError(
            f"{where}: neither LLaVA (conversations) nor ShareGPT (messages) record"
        )
    if "image" in record:
        images = [record["image"]] if record["image"] else []
    else:
        images = record.get("images") or []
        if not isinstance(images, list):
            raise DataFileError(f"{where}: images must be a list")
    if not isinstance(raw, list) or not raw:
        raise DataFileError(f"{where}: the conversation is empty or not a list")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise DataFileError(f"{where}: turn {i} needs {role_key!r} and {text_key!r}")
        role = _ROLE.get(str(turn[role_key]))
        if role is None:
            raise DataFileError(f"{where}: turn {i}: unknown role {turn[role_key]!r}")
        text = turn[text_key]
        if not isinstance(text, str) or not text.strip():
            raise DataFileError(f"{where}: turn {i}: empty or non-text {text_key}")
        if role == "system" and i != 0:
            raise DataFileError(f"{where}: turn {i}: a system turn may only come first")
        turns.append((role, text))
    body = [r for r, _ in turns if r != "system"]
    expected = ["user", "assistant"] * (len(body) // 2)
    if body != expected or not body:
        raise DataFileError(
            f"{where}: turns must alternate user/assistant, starting with user and ending with "
            f"assistant (got {' '.join(body)})"
        )
    return turns, images


def _first_user(turns: list[tuple[str, str]]) -> int:
    return next(i for i, (role, _) in enumerate(turns) if role == "user")


def _strip_image_mark(text: str) -> str:
    return text.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "").strip()


def _file_group(image: str | None, record_id: str) -> str:
    if image is None:
        return f"text:{record_id}"
    try:
        return image_sha256(image)
    except (ImportError, ValueError):
        return str(Path(image).resolve())


# --------------------------------------------------------------------------- split and mix
def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_image(
    examples: list[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, val, test): every group (image) in exactly one; explicit splits are kept."""
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.group or example.id, []).append(example)
    assigned: dict[str, str] = {}
    free: list[str] = []
    for key, members in groups.items():
        explicit = {_EXPLICIT_SPLIT.get(str(m.meta.get("split") or "").lower()) for m in members}
        explicit.discard(None)
        if explicit:
            assigned[key] = (
                "test" if "test" in explicit else "val" if "val" in explicit else "train"
            )
        else:
            free.append(key)
    for key in free:
        assigned[key] = "val" if _unit(seed, key) < val_fraction else "train"
    has_val = any(s == "val" for s in assigned.values())
    if val_fraction > 0 and not has_val and len(free) >= 2:
        assigned[min(free, key=lambda k: _unit(seed, k))] = "val"  # small sets: at least one image
    out: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for example in examples:
        out[assigned[example.group or example.id]].append(example)
    return out["train"], out["val"], out["test"]


def mix_general(
    train: list[Example], general: list[Example], ratio: float, seed: int
) -> list[Example]:
    """``round(ratio * len(train))`` general examples drawn with ``seed`` (repeating the file
    only when it is shorter than asked), shuffled in with ``train``."""
    wanted = round(ratio * len(train))
    if wanted <= 0 or not general:
        return list(train)
    rng = random.Random(seed)
    drawn: list[Example] = []
    while len(drawn) < wanted:
        pool = list(general)
        rng.shuffle(pool)
        drawn += pool[: wanted - len(drawn)]
    mixed = list(train) + drawn
    rng.shuffle(mixed)
    return mixed


def build_datasets(args: DataArguments, *, mode: str, seed: int = 0) -> DataBundle:
    """The train and validation examples a fine-tune uses, and a summary for its record."""
    examples: list[Example] = []
    summary: dict[str, Any] = {"mode": mode}
    if args.runs:
        found, report = examples_from_store(args.db, args.runs, include_all=args.include_all)
        examples += found
        summary["store"] = report
    for file in args.files:
        examples += examples_from_file(file, image_root=args.image_root)
    if not examples:
        raise DataFileError(
            "no training examples: the runs have no accepted samples with explanations and the "
            "files no records (see the summary: "
            + json.dumps(summary.get("store", {}), default=str)
            + ")"
        )
    train, val, test = split_by_image(examples, args.val_fraction, args.split_seed)
    if args.max_examples is not None:
        train, val = train[: args.max_examples], val[: args.max_examples]
    general_added = 0
    if mode == "mixed" and args.general_file:
        general = examples_from_file(args.general_file, source="general")
        mixed = mix_general(train, general, args.general_ratio, seed)
        general_added = len(mixed) - len(train)
        train = mixed
    summary.update(
        examples=len(examples),
        train=len(train),
        val=len(val),
        test_held_out=len(test),
        train_images=len({e.group for e in train if e.source != "general"}),
        val_images=len({e.group for e in val}),
        general_added=general_added,
        general_ratio=args.general_ratio if mode == "mixed" else 0.0,
        by_source=dict(Counter(e.source for e in train)),
    )
    return DataBundle(train=train, val=val, summary=summary)
