"""Bounded answers: one role's answer may hold at most ``max_answer_bytes`` (UTF-8 bytes).

Why a bound at all: a broken or hostile server that answers 10 MB per call made a 481 MB store
and 2.4 GB of memory for 8 samples (the raw answer is kept, re-asked with, and traced). Why
1 MiB by default: it is far above anything a role's ``max_tokens`` lets a model write (the
default 1024 tokens are about 4-8 KB; even 128k output tokens of ordinary text, about 4 bytes a
token, stay under 0.5 MiB), so only an answer no setting asked for reaches it, while a store
still holds thousands of calls in a few GB at worst. A role that really needs more raises it
(``--role-setting ROLE.max_answer_bytes=N``).

An answer over the bound ends the call with its own status, ``too_large``: it is not parsed,
not re-asked (the re-ask would send it back), not cached, and its stored raw text is cut at the
bound with a marker saying how large it was.
"""

from __future__ import annotations

from typing import Literal

DEFAULT_MAX_ANSWER_BYTES = 1024 * 1024

#: the call status and error kind of an answer over the bound
TOO_LARGE: Literal["too_large"] = "too_large"


def size_of(text: str | None) -> int:
    """``text``'s size in UTF-8 bytes (0 for None)."""
    return len(text.encode("utf-8", errors="replace")) if text else 0


def too_large_error(size: int, limit: int) -> str:
    return (
        f"too_large: the answer is {size:,} bytes, over the role's limit of {limit:,} bytes "
        "(max_answer_bytes); it was not parsed, re-asked or cached"
    )


def capped(text: str | None, limit: int) -> str | None:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary) plus a marker
    naming its full size; unchanged when it fits."""
    if text is None:
        return None
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", errors="ignore")
    return f"{kept}\n[... cut: {len(data):,} bytes in all, the role's limit is {limit:,} bytes]"
