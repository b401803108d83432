"""Write a file or a folder under a temporary name beside it, then rename it into place.

Why: an export is read by training jobs that may start at any moment, and it replaces an earlier
good export. Written in place, a full disk, an error or a SIGKILL half way leaves a truncated
file (or a folder of some shards) where the good one was. Written beside it and renamed, a
reader sees the old export or the new one, never a mix; a failure removes the temporary copy
and leaves the old export as it was. The temporary name sits in the same folder because a
rename is atomic only within one file system.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _temporary_name(path: Path, kind: str) -> Path:
    """A fresh hidden name beside ``path`` (``.x.llava.json.tmp-k2j3``), never an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dir":
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (synced first).

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path``
    is untouched. The file is made 0644 (``mkstemp`` creates it 0600).
    """
    tmp = _temporary_name(path, "file")
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; on success it takes ``path``'s place.

    An existing ``path`` is renamed aside first, then removed once the new folder is in place:
    two renames, so a reader never sees a half-written folder (a kill between the two renames
    leaves the old folder under its hidden ``.old`` name beside, which the next export removes).
    """
    tmp = _temporary_name(path, "dir")
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = path.with_name(f".{path.name}.old")
        _remove(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """``path.write_text(text)`` through :func:`atomic_file` (UTF-8)."""
    write_texts_atomically({path: text})


def write_texts_atomically(texts: dict[Path, str]) -> None:
    """Several files that belong together (an export and its sidecar): every one is written
    and synced under its temporary name first, then all are renamed, so a failure while
    writing leaves every earlier file as it was, never a new export beside an old sidecar."""
    with contextlib.ExitStack() as stack:
        temporary = {path: stack.enter_context(atomic_file(path)) for path in texts}
        for path, tmp in temporary.items():
            tmp.write_text(texts[path], encoding="utf-8")
