"""Export a generation run from the store as training data: LLaVA, ShareGPT, Parquet, HF datasets.

One record is one (sample, rule variant): the image, the rule's instruction and its explanation,
then the Q-A pairs written from that explanation (plus those shared by all variants). This is the
ICM-Instruct shape: the same image moderated under several rules, each a separate conversation,
so a model learns that the verdict follows the rule and not the picture alone.

Only ``accepted`` samples are exported unless asked otherwise. Whatever cannot become a valid
record (no explanation, no image path, a multiple-choice item without its options) is counted by
reason in the summary, never dropped silently.

The conversation formats follow their readers exactly: LLaVA records carry only ``id``, ``image``
and ``conversations`` (provenance goes to a ``.meta.jsonl`` sidecar); ShareGPT records are what
LLaMA-Factory's ``sharegpt`` formatting reads, with the ``dataset_info.json`` entry it needs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from data.atomic_write import (
    atomic_dir,
    atomic_file,
    write_text_atomically,
    write_texts_atomically,
)
from data.redaction import redact_value
from data.store import Store, queries

Format = Literal["llava", "sharegpt", "parquet", "hf"]
FORMATS: tuple[Format, ...] = ("llava", "sharegpt", "parquet", "hf")
DEFAULT_SUFFIX: dict[str, str] = {
    "llava": ".llava.json",
    "sharegpt": ".sharegpt.json",
    "parquet": ".parquet",
    "hf": ".hf",
}
"""File name ending of each format's default output (``hf`` is a folder)."""

IMAGE_TOKEN = "<image>"
MC_INSTRUCTION = "Answer with the option letter."
SAMPLE_STATUSES = ("accepted", "rejected", "failed", "pending")

_OPTION_LABEL = re.compile(r"^\s*[A-Za-z][.)]\s")


class ExportError(ValueError):
    """The export cannot be made as asked (unknown run, ambiguous name, bad path)."""


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class QAItem:
    """One question-answer pair as stored, ready to become a human/gpt turn pair."""

    qa_id: str
    rule: str | None
    qa_type: str
    question: str
    options: list[str] | None
    answer: str
    position: int

    def prompt(self) -> str:
        """The human turn: multiple choice lists its options, one a line, then asks for a letter."""
        if self.qa_type != "multiple_choice" or not self.options:
            return self.question
        labelled = [
            opt if _OPTION_LABEL.match(opt) else f"{chr(ord('A') + i)}. {opt}"
            for i, opt in enumerate(self.options)
        ]
        return "\n".join([self.question, *labelled, MC_INSTRUCTION])


@dataclass(frozen=True)
class ExportRecord:
    """One (sample, rule variant) with everything the formats need."""

    sample_id: str
    run_id: str
    run_name: str
    rule: str
    policy: str
    category: str | None
    category_source: str | None
    image: str
    image_path: str
    image_sha256: str | None
    source: str | None
    split: str | None
    status: str
    reasons: list[str]
    description: str | None
    context: str | None
    question: str
    verdict: str | None
    expected_verdict: str | None
    explanation: str
    qa: list[QAItem]

    @property
    def record_id(self) -> str:
        return f"{self.sample_id}-{self.rule}"

    def turns(self) -> list[tuple[str, str]]:
        """(speaker, text) pairs, ``human`` then ``gpt``, image token not yet placed."""
        out = [("human", self.question), ("gpt", self.explanation)]
        for item in self.qa:
            out += [("human", item.prompt()), ("gpt", item.answer)]
        return out

    def meta(self) -> dict[str, Any]:
        """Provenance kept beside the training record, keyed by its id."""
        return {
            "id": self.record_id,
            "sample_id": self.sample_id,
            "run_id": self.run_id,
            "policy": self.policy,
            "rule": self.rule,
            "category": self.category,
            "verdict": self.verdict,
            "expected_verdict": self.expected_verdict,
            "status": self.status,
        }


@dataclass
class Selection:
    """The records of a run, and a count of what could not become one, by reason."""

    run: dict[str, Any]
    records: list[ExportRecord]
    include_all: bool
    status_counts: dict[str, int]
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote, for the CLI to print and for scripts to check."""

    run_id: str
    run_name: str
    fmt: str
    path: Path
    records: int
    samples: int
    include_all: bool
    status_counts: dict[str, int]
    skipped: dict[str, int]
    extra_files: tuple[Path, ...] = ()
    dataset_info: dict[str, Any] | None = None

    @property
    def empty_message(self) -> str | None:
        """Why nothing was exported, or None when something was."""
        if self.records:
            return None
        wanted = "samples" if self.include_all else "accepted samples"
        counts = ", ".join(f"{n} {s}" for s, n in self.status_counts.items() if n) or "none"
        hint = "" if self.include_all else "; pass --all to include every status"
        return f"run {self.run_name} has no exportable {wanted} (samples: {counts}){hint}"


# --------------------------------------------------------------------------- selection
def resolve_run(store: Store, run: str) -> dict[str, Any]:
    """The run row whose id, or else whose name, is ``run``.

    Raises:
        ExportError: no such run (the message lists the runs present), or a name shared by
            several runs (the message lists their ids).
    """
    by_id = queries.run_row(store, run)
    if by_id:
        return by_id
    by_name = queries.runs_named(store, run)
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        ids = ", ".join(r["run_id"] for r in by_name)
        raise ExportError(f"several runs are named {run!r}: pass one of their ids ({ids})")
    present = queries.run_listing(store)
    if not present:
        raise ExportError(f"no run {run!r}: the store {store.path} holds no runs")
    listing = "\n".join(
        f"  {r['name']}  (id {r['run_id']}, {r['kind']}, {r['status']})" for r in present
    )
    raise ExportError(f"no run {run!r} in {store.path}; runs present:\n{listing}")


def _json_list(raw: str | None) -> list[Any]:
    """A stored JSON list; text that is not one is kept as a one-item list, not lost."""
    if raw is None:
        return []
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return [raw]
    return value if isinstance(value, list) else [value]


def _relative_image(path: str, image_root: Path | None) -> str:
    if image_root is None:
        return path
    for candidate, root in (
        (Path(path), Path(image_root)),
        (Path(path).resolve(), Path(image_root).resolve()),
    ):
        try:
            return candidate.relative_to(root).as_posix()
        except ValueError:
            continue
    raise ExportError(f"image {path} is not under --image-root {image_root}")


def _qa_items(rows: Iterable[dict[str, Any]], skipped: Counter[str]) -> list[QAItem]:
    items = []
    for row in rows:
        options = [str(o) for o in _json_list(row["options_json"])] or None
        if not (row["question"] or "").strip() or not (row["answer"] or "").strip():
            skipped["qa item with an empty question or answer"] += 1
            continue
        if row["qa_type"] == "multiple_choice" and not options:
            skipped["multiple-choice qa item without options"] += 1
            continue
        items.append(
            QAItem(
                qa_id=row["qa_id"],
                rule=row["rule_variant"],
                qa_type=row["qa_type"],
                question=row["question"],
                options=options if row["qa_type"] == "multiple_choice" else None,
                answer=row["answer"],
                position=int(row["position"]),
            )
        )
    return items


def collect_records(
    store: Store, run: str, *, include_all: bool = False, image_root: Path | None = None
) -> Selection:
    """Every exportable (sample, rule variant) of ``run`` in a stable order.

    ``run`` is a run id or name. Only ``accepted`` samples unless ``include_all``. A sample
    yields one record per explanation it has; Q-A items tagged with that rule variant, and those
    with no rule variant (shared), become the follow-up turns in stored order.
    """
    run_row = resolve_run(store, run)
    run_id = run_row["run_id"]
    counts = {s: 0 for s in SAMPLE_STATUSES}
    counts.update(queries.status_counts(store, run_id))
    # Exports are an output boundary: a store written before redaction existed may hold a key.
    samples, explanations, qa_rows = redact_value(
        queries.export_rows(store, run_id, include_all=include_all)
    )
    by_sample: dict[str, list[dict[str, Any]]] = {}
    for row in explanations:
        by_sample.setdefault(row["sample_id"], []).append(row)
    qa_by_sample: dict[str, list[dict[str, Any]]] = {}
    for row in qa_rows:
        qa_by_sample.setdefault(row["sample_id"], []).append(row)

    selection = Selection(run=run_row, records=[], include_all=include_all, status_counts=counts)
    skipped = selection.skipped
    for sample in samples:
        sid = sample["sample_id"]
        expl_rows = by_sample.get(sid, [])
        if not expl_rows:
            skipped[f"{sample['status']} sample without an explanation"] += 1
            continue
        if not sample["image_path"]:
            skipped["sample without an image path"] += len(expl_rows)
            continue
        image = _relative_image(sample["image_path"], image_root)
        for expl in expl_rows:
            rule = expl["rule_variant"]
            if not (expl["question"] or "").strip() or not (expl["explanation"] or "").strip():
                skipped["explanation without its question or text"] += 1
                continue
            qa_for_rule = [
                q for q in qa_by_sample.get(sid, []) if q["rule_variant"] in (None, rule)
            ]
            selection.records.append(
                ExportRecord(
                    sample_id=sid,
                    run_id=run_id,
                    run_name=run_row["name"],
                    rule=rule,
                    policy=sample["policy_name"],
                    category=sample["category"],
                    category_source=sample["category_source"],
                    image=image,
                    image_path=sample["image_path"],
                    image_sha256=sample["image_sha256"],
                    source=sample["source"],
                    split=sample["split"],
                    status=sample["status"],
                    reasons=[str(r) for r in _json_list(sample["reasons_json"])],
                    description=sample["description"],
                    context=sample["context"],
                    question=expl["question"],
                    verdict=expl["verdict"],
                    expected_verdict=expl["expected_verdict"],
                    explanation=expl["explanation"],
                    qa=_qa_items(qa_for_rule, skipped),
                )
            )
    return selection


# --------------------------------------------------------------------------- formats
def llava_record(record: ExportRecord) -> dict[str, Any]:
    """``{"id", "image", "conversations"}`` with ``<image>`` once, atop the first human turn."""
    conversations = []
    for i, (speaker, text) in enumerate(record.turns()):
        value = f"{IMAGE_TOKEN}\n{text}" if i == 0 else text
        conversations.append({"from": speaker, "value": value})
    return {"id": record.record_id, "image": record.image, "conversations": conversations}


def sharegpt_record(record: ExportRecord) -> dict[str, Any]:
    """LLaMA-Factory ShareGPT multimodal: one ``<image>`` in the messages per listed image."""
    role = {"human": "user", "gpt": "assistant"}
    messages = []
    for i, (speaker, text) in enumerate(record.turns()):
        content = f"{IMAGE_TOKEN}{text}" if i == 0 else text
        messages.append({"role": role[speaker], "content": content})
    return {"messages": messages, "images": [record.image]}


def with_status(made: dict[str, Any], record: ExportRecord, include_all: bool) -> dict[str, Any]:
    """An ``--all`` export's record carries its sample's status in the file itself.

    A file that mixes statuses must say which record is which where a trainer reads it, not
    only in the ``.meta.jsonl`` sidecar. The readers (LLaVA's loader, LLaMA-Factory's ShareGPT
    columns) read the keys they know and ignore the rest. An accepted-only export keeps exactly
    its reader's keys.
    """
    return {**made, "status": record.status} if include_all else made


def sharegpt_dataset_info(file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry LLaMA-Factory needs to read a ShareGPT export."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        },
    }


QA_STRUCT = pa.struct(
    [
        ("qa_id", pa.string()),
        ("rule", pa.string()),
        ("qa_type", pa.string()),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("position", pa.int32()),
    ]
)
TURN_STRUCT = pa.struct([("from", pa.string()), ("value", pa.string())])
TABLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("sample_id", pa.string()),
        ("run_id", pa.string()),
        ("run_name", pa.string()),
        ("policy", pa.string()),
        ("rule", pa.string()),
        ("category", pa.string()),
        ("category_source", pa.string()),
        ("image", pa.string()),
        ("image_path", pa.string()),
        ("image_sha256", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("status", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("description", pa.string()),
        ("context", pa.string()),
        ("question", pa.string()),
        ("verdict", pa.string()),
        ("expected_verdict", pa.string()),
        ("explanation", pa.string()),
        ("qa", pa.list_(QA_STRUCT)),
        ("conversations", pa.list_(TURN_STRUCT)),
    ]
)
"""The flat table (Parquet and HF): typed up front so an empty export has the same columns."""


def table_row(record: ExportRecord) -> dict[str, Any]:
    """One flat row: every field, the Q-A as a list of structs, and the LLaVA conversation."""
    return {
        "id": record.record_id,
        "sample_id": record.sample_id,
        "run_id": record.run_id,
        "run_name": record.run_name,
        "policy": record.policy,
        "rule": record.rule,
        "category": record.category,
        "category_source": record.category_source,
        "image": record.image,
        "image_path": record.image_path,
        "image_sha256": record.image_sha256,
        "source": record.source,
        "split": record.split,
        "status": record.status,
        "reasons": record.reasons,
        "description": record.description,
        "context": record.context,
        "question": record.question,
        "verdict": record.verdict,
        "expected_verdict": record.expected_verdict,
        "explanation": record.explanation,
        "qa": [
            {
                "qa_id": q.qa_id,
                "rule": q.rule,
                "qa_type": q.qa_type,
                "question": q.question,
                "options": q.options,
                "answer": q.answer,
                "position": q.position,
            }
            for q in record.qa
        ],
        "conversations": llava_record(record)["conversations"],
    }


def records_table(records: list[ExportRecord]) -> pa.Table:
    return pa.Table.from_pylist([table_row(r) for r in records], schema=TABLE_SCHEMA)


# --------------------------------------------------------------------------- writers
def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON atomically (a temporary file, then a rename)."""
    write_text_atomically(path, json_text(value))


def sidecar_path(out: Path) -> Path:
    """``runs/x.llava.json`` -> ``runs/x.llava.meta.jsonl``."""
    return out.with_suffix(".meta.jsonl")


def json_text(value: Any) -> str:
    """The indented JSON every JSON export writes."""
    return json.dumps(value, ensure_ascii=False, indent=2) + "\n"


def meta_text(metas: Iterable[dict[str, Any]]) -> str:
    """A sidecar's JSON lines."""
    return "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in metas)


def _write_with_meta(out: Path, value: Any, records: list[ExportRecord]) -> Path:
    """The export and its sidecar, replaced together (both or neither); the sidecar's path."""
    path = sidecar_path(out)
    write_texts_atomically({out: json_text(value), path: meta_text(r.meta() for r in records)})
    return path


def dataset_name(out: Path) -> str:
    """The name LLaMA-Factory knows a ShareGPT export by: its file name without ``.json``."""
    return out.name.removesuffix(".json")


def _merge_dataset_info(out: Path, entries: dict[str, Any]) -> Path:
    """Add (or replace) this export's entry in the ``dataset_info.json`` beside it.

    Merged rather than overwritten: several exports usually share one LLaMA-Factory data folder.
    """
    path = out.parent / "dataset_info.json"
    info: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path} is not valid JSON: {exc}") from exc
        if isinstance(loaded, dict):
            info = loaded
    info.update(entries)
    write_json(path, info)
    return path


def _write_hf(out: Path, table: pa.Table) -> None:
    try:
        from datasets import Dataset, DatasetInfo, Features
    except ImportError as exc:  # an optional dependency: only this format needs it
        raise ExportError(
            "the hf format needs the Hugging Face `datasets` package: pip install datasets"
        ) from exc
    saved = out.is_dir() and (out / "state.json").exists()
    if out.exists() and not saved and (out.is_file() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not a saved dataset: choose another --out")
    # From the typed Arrow table, not ``from_list``: a list of no rows carries no columns and
    # ``datasets`` refuses the features. With no rows, one (empty) shard is asked for, since the
    # default of zero shards saves a folder ``load_from_disk`` cannot read back.
    dataset = Dataset(table, info=DatasetInfo(features=Features.from_arrow_schema(TABLE_SCHEMA)))
    # a previous export is replaced whole (no stale shards), and only once this one is saved
    with atomic_dir(out) as tmp:
        dataset.save_to_disk(str(tmp), num_shards=None if table.num_rows else 1)


def export_run(
    store: Store,
    run: str,
    fmt: str,
    out: Path,
    *,
    include_all: bool = False,
    image_root: Path | None = None,
) -> ExportSummary:
    """Write ``run``'s records to ``out`` in format ``fmt``; an empty selection still writes.

    Raises:
        ExportError: unknown format or run, an image outside ``image_root``, an ``out`` that
            cannot be written.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    selection = collect_records(store, run, include_all=include_all, image_root=image_root)
    records = selection.records
    extra: list[Path] = []
    dataset_info = None
    if fmt == "llava":
        made = [with_status(llava_record(r), r, include_all) for r in records]
        extra.append(_write_with_meta(out, made, records))
    elif fmt == "sharegpt":
        made = [with_status(sharegpt_record(r), r, include_all) for r in records]
        extra.append(_write_with_meta(out, made, records))
        dataset_info = {dataset_name(out): sharegpt_dataset_info(out.name)}
        extra.append(_merge_dataset_info(out, dataset_info))
    elif fmt == "parquet":
        with atomic_file(out) as tmp:
            pq.write_table(records_table(records), tmp)
    else:
        _write_hf(out, records_table(records))
    return ExportSummary(
        run_id=selection.run["run_id"],
        run_name=selection.run["name"],
        fmt=fmt,
        path=out,
        records=len(records),
        samples=len({r.sample_id for r in records}),
        include_all=include_all,
        status_counts=selection.status_counts,
        skipped=dict(selection.skipped),
        extra_files=tuple(extra),
        dataset_info=dataset_info,
    )
