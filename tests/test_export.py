"""Exports read back by the readers they are for: json (LLaVA, ShareGPT), pandas, datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from run_store import FAIL_REASON, IMAGE_DIR, REJECT_REASON, build_store

from data.export import ExportError, collect_records, export_run
from data.store import Store


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per module (a build costs a quarter second); tests get copies."""
    return build_store(tmp_path_factory.mktemp("template") / "icm.duckdb")


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(template, tmp_path / "icm.duckdb"))


@pytest.fixture
def store(db: Path):
    with Store.open(db, read_only=True) as opened:
        yield opened


def _check_llava_shape(records: list[dict], *, with_status: bool = False) -> None:
    for rec in records:
        expected = {"id", "image", "conversations"} | ({"status"} if with_status else set())
        assert set(rec) == expected
        assert rec["image"]
        turns = rec["conversations"]
        assert len(turns) >= 2 and len(turns) % 2 == 0
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in turns) == 1
        assert all(t["value"].strip() for t in turns)


def test_llava_holds_accepted_samples_one_record_per_rule(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out" / "a.llava.json"
    summary = export_run(store, "offline-demo", "llava", out)
    records = json.loads(out.read_text())
    _check_llava_shape(records)
    assert [r["id"] for r in records] == [
        "smp-a-acc1-R1",
        "smp-a-acc1-R2",
        "smp-a-acc2-R1",
        "smp-a-acc2-R2",
    ]
    assert (summary.records, summary.samples, summary.run_id) == (4, 2, "run-a")
    assert records[0]["image"] == f"{IMAGE_DIR}/beach.jpg"

    r1, r2 = records[0]["conversations"], records[1]["conversations"]
    assert r1[0]["value"] == (
        "<image>\nUnder rule R1 (audience: adults; open culture), is the image sexy? Explain why."
    )
    assert r1[1]["value"].startswith("No. Under R1")
    # R1's own items in stored position order, then the shared one; none of R2's.
    assert [t["value"] for t in r1[2::2]] == [
        "Is the image acceptable for adults under R1?",
        "Which element makes the image sensitive?\nA. Violence\nB. Revealing clothing\n"
        "C. Drug use\nD. Nothing sensitive\nAnswer with the option letter.",
        "How could the image be made suitable for every audience?",
    ]
    assert [t["value"] for t in r1[3::2]] == [
        "Yes.",
        "B",
        "By covering the revealing swimwear.",
    ]
    assert [t["value"] for t in r2[2::2]] == [
        "Should the image be flagged for viewers aged 13 under R2?",
        "What leads to the R2 verdict?",
        "How could the image be made suitable for every audience?",
    ]

    meta = [json.loads(line) for line in (tmp_path / "out" / "a.llava.meta.jsonl").open()]
    assert summary.extra_files == (tmp_path / "out" / "a.llava.meta.jsonl",)
    assert [m["id"] for m in meta] == [r["id"] for r in records]
    assert meta[1] == {
        "id": "smp-a-acc1-R2",
        "sample_id": "smp-a-acc1",
        "run_id": "run-a",
        "policy": "icm-default",
        "rule": "R2",
        "category": "sexy",
        "verdict": "Yes",
        "expected_verdict": "Yes",
        "status": "accepted",
    }


def test_all_includes_rejected_and_counts_what_has_no_explanation(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "all.json"
    summary = export_run(store, "run-a", "llava", out, include_all=True)
    records = json.loads(out.read_text())
    _check_llava_shape(records, with_status=True)
    ids = [r["id"] for r in records]
    assert "smp-a-rej1-R2" in ids and len(ids) == 6
    # The file itself says which record is which, not only the sidecar.
    status = {r["id"]: r["status"] for r in records}
    assert status["smp-a-rej1-R2"] == "rejected" and status["smp-a-acc1-R1"] == "accepted"
    # The failed and the pending sample have no explanation: counted, not silently lost.
    assert summary.skipped == {
        "failed sample without an explanation": 2,
        "pending sample without an explanation": 1,
    }
    accepted_only = export_run(store, "run-a", "llava", tmp_path / "acc.json")
    accepted_records = json.loads((tmp_path / "acc.json").read_text())
    assert not any("rej" in r["id"] for r in accepted_records)
    _check_llava_shape(accepted_records)  # the reader's keys only: no status key
    assert accepted_only.skipped == {}


def test_image_root_makes_paths_relative_and_rejects_outside(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "rel.json"
    export_run(store, "offline-demo", "llava", out, image_root=Path(IMAGE_DIR))
    assert [r["image"] for r in json.loads(out.read_text())][:2] == ["beach.jpg", "beach.jpg"]
    with pytest.raises(ExportError, match="not under --image-root"):
        export_run(store, "offline-demo", "llava", out, image_root=Path("/elsewhere"))


def test_sharegpt_is_what_llama_factory_reads(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "lf" / "demo.sharegpt.json"
    summary = export_run(store, "offline-demo", "sharegpt", out)
    records = json.loads(out.read_text())
    assert [r["images"] for r in records] == [
        [f"{IMAGE_DIR}/{name}"] for name in ("beach.jpg", "beach.jpg", "museum.jpg", "museum.jpg")
    ]
    for rec in records:
        assert set(rec) == {"messages", "images"}
        roles = [m["role"] for m in rec["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        contents = [m["content"] for m in rec["messages"]]
        assert contents[0].startswith("<image>Under rule")
        assert sum(c.count("<image>") for c in contents) == len(rec["images"]) == 1

    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info["demo.sharegpt"] == {
        "file_name": "demo.sharegpt.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        },
    }
    assert summary.dataset_info == {"demo.sharegpt": info["demo.sharegpt"]}
    # A second export into the same folder adds its entry beside the first.
    export_run(store, "gpt4o-trial", "sharegpt", tmp_path / "lf" / "b.json")
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert set(info) == {"demo.sharegpt", "b"}


def test_parquet_round_trips_with_pandas(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    export_run(store, "offline-demo", "parquet", out, include_all=True)
    frame = pd.read_parquet(out)
    assert len(frame) == 6
    expected = collect_records(store, "offline-demo", include_all=True).records
    rej = frame.set_index("id").loc["smp-a-rej1-R2"]
    assert rej["status"] == "rejected"
    assert list(rej["reasons"]) == [REJECT_REASON]
    assert (rej["verdict"], rej["expected_verdict"]) == ("No", "Yes")
    first = frame.iloc[0]
    assert first["id"] == expected[0].record_id == "smp-a-acc1-R1"
    assert first["question"] == expected[0].question
    assert first["explanation"] == expected[0].explanation
    qa = list(first["qa"])
    assert [q["qa_id"] for q in qa] == ["qa-2", "qa-3", "qa-1"]
    assert list(qa[1]["options"]) == [
        "A. Violence",
        "B. Revealing clothing",
        "C. Drug use",
        "D. Nothing sensitive",
    ]
    assert qa[0]["options"] is None and qa[2]["rule"] is None
    assert [t["from"] for t in first["conversations"]] == ["human", "gpt"] * 4


def test_hf_folder_round_trips_with_load_from_disk(store: Store, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "demo.hf"
    export_run(store, "offline-demo", "hf", out)
    loaded = datasets.load_from_disk(str(out))
    assert loaded.num_rows == 4
    assert loaded["id"] == ["smp-a-acc1-R1", "smp-a-acc1-R2", "smp-a-acc2-R1", "smp-a-acc2-R2"]
    row = loaded[1]
    assert row["verdict"] == "Yes" and row["rule"] == "R2"
    assert [q["qa_id"] for q in row["qa"]] == ["qa-4", "qa-5", "qa-1"]
    assert row["conversations"][0]["value"].startswith("<image>\nUnder rule R2")
    # Exporting again replaces the saved dataset rather than failing or mixing shards.
    export_run(store, "gpt4o-trial", "hf", out)
    assert datasets.load_from_disk(str(out))["id"] == ["smp-b-acc1-R1"]


def test_unknown_run_lists_the_runs_present(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        export_run(store, "nope", "llava", tmp_path / "x.json")
    message = str(info.value)
    assert "no run 'nope'" in message
    assert "offline-demo" in message and "gpt4o-trial" in message and "run-b" in message
    assert not (tmp_path / "x.json").exists()


def test_unknown_format_is_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown format 'csv'"):
        export_run(store, "run-a", "csv", tmp_path / "x.csv")


def test_run_with_nothing_accepted_writes_valid_empty_files(db: Path, tmp_path: Path) -> None:
    path = db
    with Store.open(path) as writable:
        writable.execute("UPDATE samples SET status = 'failed' WHERE run_id = 'run-b'")
    with Store.open(path, read_only=True) as store:
        summary = export_run(store, "gpt4o-trial", "llava", tmp_path / "e.json")
        assert json.loads((tmp_path / "e.json").read_text()) == []
        assert summary.records == 0
        assert summary.empty_message is not None
        assert "1 failed" in summary.empty_message and "--all" in summary.empty_message
        export_run(store, "gpt4o-trial", "parquet", tmp_path / "e.parquet")
        frame = pd.read_parquet(tmp_path / "e.parquet")
        assert frame.empty and {"id", "qa", "conversations"} <= set(frame.columns)
        datasets = pytest.importorskip("datasets")
        hf = export_run(store, "gpt4o-trial", "hf", tmp_path / "e.hf")
        loaded = datasets.load_from_disk(str(tmp_path / "e.hf"))
        assert hf.records == 0 and loaded.num_rows == 0
        assert list(loaded.features) == list(frame.columns)


def test_selection_counts_every_status_and_carries_reasons(store: Store) -> None:
    selection = collect_records(store, "run-a", include_all=True)
    assert selection.status_counts == {"accepted": 2, "rejected": 1, "failed": 2, "pending": 1}
    # The failed sample has no record (no explanation), so its reason is not in any record.
    reasons = {r for rec in selection.records for r in rec.reasons}
    assert reasons == {REJECT_REASON} and FAIL_REASON not in reasons


def test_a_name_shared_by_two_runs_asks_for_an_id(db: Path) -> None:
    path = db
    with Store.open(path) as writable:
        writable.execute("UPDATE runs SET name = 'same'")
    with Store.open(path, read_only=True) as store:
        with pytest.raises(ExportError, match=r"several runs are named 'same'.*run-a, run-b"):
            collect_records(store, "same")
        assert collect_records(store, "run-b").run["run_id"] == "run-b"
