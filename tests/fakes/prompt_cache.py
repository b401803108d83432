"""The fakes' prompt cache: cached input tokens reported as the real APIs report them.

Prompts are counted in rough tokens (4 characters of their JSON each) over segments in the
order the providers cache them. OpenAI (automatic): the segments are the structured-output
schema (``response_format`` or ``tools``), then each message; the longest prefix of whole
segments seen before, at least ``min_tokens`` long and rounded down to 128 tokens, is reported
as ``usage.prompt_tokens_details.cached_tokens``. Anthropic (explicit): only prefixes that end
at a block marked ``cache_control`` are cached (segments: each tool, each system block, each
message's blocks); the longest one seen before is a cache read
(``cache_read_input_tokens``), the furthest one not yet seen is written
(``cache_creation_input_tokens``), and ``input_tokens`` counts only the rest.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any


def rough_tokens(value: Any) -> int:
    """About one token per four characters of the value's JSON (what the fakes charge)."""
    return len(json.dumps(value)) // 4


class PrefixCache:
    """Hashes of prompt prefixes seen so far, thread-safe (the fake serves from threads)."""

    def __init__(self, min_tokens: int = 1024) -> None:
        self.min_tokens = min_tokens
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _prefixes(segments: list[Any]) -> list[tuple[str, int]]:
        """(hash, tokens) of each prefix of ``segments``: the first one, the first two, ..."""
        digest = hashlib.sha256()
        tokens = 0
        out = []
        for segment in segments:
            digest.update(json.dumps(segment, sort_keys=True).encode())
            tokens += rough_tokens(segment)
            out.append((digest.copy().hexdigest(), tokens))
        return out

    def openai_cached(self, body: dict[str, Any]) -> int:
        """Cached tokens of a Chat Completions request; the request's prefixes are then known."""
        schema = body.get("response_format") or body.get("tools")
        segments = ([schema] if schema else []) + list(body.get("messages") or [])
        prefixes = self._prefixes(segments)
        with self._lock:
            hits = [tokens for h, tokens in prefixes if h in self._seen]
            self._seen.update(h for h, _ in prefixes)
        cached = max(hits, default=0)
        if cached < max(1, self.min_tokens):
            return 0
        return cached - cached % 128 if self.min_tokens >= 128 else cached

    def anthropic_usage(self, body: dict[str, Any]) -> tuple[int, int]:
        """(cache read, cache write) tokens of a Messages request's ``cache_control`` prefixes."""
        segments: list[Any] = list(body.get("tools") or [])
        system = body.get("system")
        if isinstance(system, list):
            segments += system
        elif system:
            segments.append({"type": "text", "text": system})
        for message in body.get("messages") or []:
            content = message.get("content")
            segments += content if isinstance(content, list) else [{"text": content}]
        marked = [
            i for i, s in enumerate(segments) if isinstance(s, dict) and s.get("cache_control")
        ]
        prefixes = self._prefixes(segments)
        read = write = 0
        with self._lock:
            for i in marked:
                digest, tokens = prefixes[i]
                if tokens < max(1, self.min_tokens):
                    continue
                if digest in self._seen:
                    read = tokens
                else:
                    write = tokens - read
                    self._seen.add(digest)
        return read, write
